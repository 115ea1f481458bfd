//! One health report at a time, reused for `FLEETGATE_HEALTH_CACHE_MS` (default 1 s) by every
//! public caller and `/metrics`: a flood of probes costs the databases one round of checks per
//! period, not one per probe. An admin always gets a fresh report, which the others then share.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::report::HealthReport;

/// The last report and when it was made: single flight (callers wait for the one being made) and
/// reused while younger than the period.
#[derive(Debug)]
pub struct HealthCache {
    period: Duration,
    last: tokio::sync::Mutex<Option<(Instant, Arc<HealthReport>)>>,
}

impl HealthCache {
    /// Reports reused for `period`.
    pub fn new(period: Duration) -> Self {
        HealthCache {
            period,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// A report at most `period` old (counted from when it was finished, so a new one starts at
    /// least a period after the previous one ended).
    pub async fn get<F>(&self, make: impl FnOnce() -> F) -> Arc<HealthReport>
    where
        F: Future<Output = HealthReport>,
    {
        let mut last = self.last.lock().await;
        if let Some((at, r)) = last.as_ref()
            && at.elapsed() < self.period
        {
            return Arc::clone(r);
        }
        let r = Arc::new(make().await);
        *last = Some((Instant::now(), Arc::clone(&r)));
        r
    }

    /// A report made now (still one at a time), which the next callers of [`HealthCache::get`]
    /// share.
    pub async fn refresh<F>(&self, make: impl FnOnce() -> F) -> Arc<HealthReport>
    where
        F: Future<Output = HealthReport>,
    {
        let mut last = self.last.lock().await;
        let r = Arc::new(make().await);
        *last = Some((Instant::now(), Arc::clone(&r)));
        r
    }
}
