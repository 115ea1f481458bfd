//! Fleet tests run one at a time: each starts ~6 processes and loads them, and several at once on
//! a shared 2-core machine would only add noise to each other's timings.

use tokio::sync::{Mutex, MutexGuard};

static SERIAL: Mutex<()> = Mutex::const_new(());

/// Held for the whole test. A tokio mutex does not poison, so one failed test does not fail the
/// others.
pub async fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().await
}
