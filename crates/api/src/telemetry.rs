//! Logging setup: `tracing` to stderr, filtered by `RUST_LOG` (default `info`). OpenTelemetry
//! export is a later issue.

use tracing_subscriber::EnvFilter;

/// Keeps telemetry alive; drop at exit.
#[derive(Debug)]
pub struct Guard(());

/// Installs the global subscriber (once; later calls are no-ops).
pub fn init() -> Guard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    Guard(())
}

/// For tests: logs only when `TEST_LOG` is set.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = init();
    }
}
