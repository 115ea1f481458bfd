//! The `fleetgate` and `upstream-sim` binaries, next to the test executable (`target/debug/`).
//! `cargo test --workspace` builds them (their crates have integration tests). Run alone
//! (`cargo test -p fleet-tests`) it may find them missing, or older than the sources they are built
//! from: then each test process builds them once with `cargo build`. (Not always: a plain build
//! resolves features apart from the workspace's test build, so it would rebuild them, and the next
//! `cargo test --workspace` again.)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

/// `target/debug` (the test executable lives in `target/debug/deps`).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable in target/<profile>/deps")
        .to_path_buf()
}

/// Newest modification time of the files under `dir` (recursively).
fn newest(dir: &Path) -> Option<SystemTime> {
    let mut best = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let t = if p.is_dir() {
            newest(&p)
        } else {
            e.metadata().and_then(|m| m.modified()).ok()
        };
        best = best.max(t);
    }
    best
}

/// Whether a binary is missing or older than a source of the service.
fn stale(dir: &Path) -> bool {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sources = ["api", "limiter-core", "breaker-store", "upstream-sim"]
        .iter()
        .map(|c| root.join("crates").join(c).join("src"))
        .chain([root.join("lua"), root.join("migrations")])
        .filter_map(|d| newest(&d))
        .max();
    ["fleetgate", "upstream-sim"].iter().any(|b| {
        let built = std::fs::metadata(dir.join(b))
            .and_then(|m| m.modified())
            .ok();
        match (built, sources) {
            (Some(built), Some(src)) => built < src,
            (Some(_), None) => false,
            (None, _) => true,
        }
    })
}

fn ensure_built() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = bin_dir();
        if stale(&dir) {
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
        }
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
