//! The `fleetgate` and `upstream-sim` binaries, next to the test executable (`target/debug/`).
//! `cargo test --workspace` builds them (their crates have integration tests), but
//! `cargo test -p fleet-tests` alone would find them missing or stale: so each test process runs
//! `cargo build` for them once (a no-op of a second or two when they are fresh).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// `target/debug` (the test executable lives in `target/debug/deps`).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable in target/<profile>/deps")
        .to_path_buf()
}

fn ensure_built() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = bin_dir();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "api", "-p", "upstream-sim", "--bins"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cargo build");
        assert!(
            status.success(),
            "building fleetgate and upstream-sim failed"
        );
        for b in ["fleetgate", "upstream-sim"] {
            assert!(dir.join(b).is_file(), "{b} not in {}", dir.display());
        }
        dir
    })
    .clone()
}

/// Path of the `fleetgate` binary.
pub fn fleetgate() -> PathBuf {
    ensure_built().join("fleetgate")
}

/// Path of the `upstream-sim` binary.
pub fn upstream_sim() -> PathBuf {
    ensure_built().join("upstream-sim")
}
