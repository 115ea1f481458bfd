//! The debug `fleetgate` and `upstream-sim` binaries, next to the test executable
//! (`target/debug/`). `cargo test --workspace` builds them (their crates have integration tests);
//! when missing (e.g. `cargo test -p fleet-tests` on a clean checkout) they are built once here.

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
        let missing = ["fleetgate", "upstream-sim"]
            .iter()
            .any(|b| !dir.join(b).is_file());
        if missing {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-p", "api", "-p", "upstream-sim", "--bins"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("cargo build");
            assert!(status.success(), "building fleetgate and upstream-sim failed");
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
