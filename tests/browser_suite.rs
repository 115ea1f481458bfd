//! The browser tests (`tests/browser/`, Python Playwright driving the system's headless
//! Chromium) against real replicas, Redis, PostgreSQL and `upstream-sim`: the chat page and the
//! fleet console as a user and an admin see them. This test builds the binaries if needed and
//! runs the suite with pytest; `scripts/test` installs Chromium (apt-get) and Playwright (pip)
//! first and says where they are (`FLEETGATE_TEST_PYTHON`, `FLEETGATE_TEST_CHROMIUM`).
//!
//! A failed browser test leaves a screenshot of each of its pages in
//! `target/browser-tests/failures/` and the processes' logs in `target/browser-tests/logs/`.

#[path = "fleet/harness/bins.rs"]
mod bins;

use std::path::Path;
use std::process::Command;

#[test]
fn browser_suite() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var("FLEETGATE_TEST_PYTHON")
        .unwrap_or_else(|_| root.join(".fleet/pyenv/bin/python").display().to_string());
    let chromium =
        std::env::var("FLEETGATE_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let ready = Command::new(&python)
        .args(["-c", "import playwright, pytest"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ready && Path::new(&chromium).is_file(),
        "the browser tests need Playwright and pytest in {python} and Chromium at {chromium}: \
         run scripts/test, which installs them"
    );
    let bin_dir = bins::fleetgate()
        .parent()
        .expect("binary directory")
        .to_path_buf();
    assert!(bins::upstream_sim().is_file());
    let status = Command::new(&python)
        .args(["-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfE"])
        .arg(root.join("tests/browser"))
        .env("FLEETGATE_BIN_DIR", &bin_dir)
        .env("FLEETGATE_TEST_CHROMIUM", &chromium)
        // No __pycache__ left in the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(root.join("tests/browser"))
        .status()
        .expect("run pytest");
    assert!(
        status.success(),
        "browser tests failed ({status}): screenshots in target/browser-tests/failures/, \
         logs in target/browser-tests/logs/"
    );
}
