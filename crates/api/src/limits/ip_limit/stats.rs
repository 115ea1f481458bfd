//! Counters of one replica's per-IP layer, read by the health endpoint.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use utoipa::ToSchema;

/// Counters (monotonic until reset).
#[derive(Debug, Default)]
pub struct IpLimitStats {
    pub(crate) allowed: AtomicU64,
    pub(crate) denied: AtomicU64,
    pub(crate) denied_locally: AtomicU64,
    pub(crate) redis_errors: AtomicU64,
    pub(crate) failed_open: AtomicU64,
    /// Unix ms of the last Redis error (0 = never): the layer is in degraded mode while recent.
    pub(crate) last_redis_error_ms: AtomicU64,
}

/// A copy of the counters.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IpLimitSnapshot {
    /// Requests admitted by the window.
    pub allowed: u64,
    /// Requests denied (429), by Redis or by the local cache.
    pub denied: u64,
    /// Of those, answered from the local cache without Redis.
    pub denied_locally: u64,
    /// Windows that could not be checked because Redis did not answer.
    pub redis_errors: u64,
    /// Of those, admitted anyway (fail-open).
    pub failed_open: u64,
    /// Unix ms of the last Redis error, 0 if none.
    pub last_redis_error_ms: u64,
}

impl IpLimitStats {
    /// Reads the counters.
    pub fn snapshot(&self) -> IpLimitSnapshot {
        IpLimitSnapshot {
            allowed: self.allowed.load(Ordering::Relaxed),
            denied: self.denied.load(Ordering::Relaxed),
            denied_locally: self.denied_locally.load(Ordering::Relaxed),
            redis_errors: self.redis_errors.load(Ordering::Relaxed),
            failed_open: self.failed_open.load(Ordering::Relaxed),
            last_redis_error_ms: self.last_redis_error_ms.load(Ordering::Relaxed),
        }
    }

    /// Zeroes the counters (admin `reset-errors`).
    pub fn reset(&self) {
        for c in [
            &self.allowed,
            &self.denied,
            &self.denied_locally,
            &self.redis_errors,
            &self.failed_open,
            &self.last_redis_error_ms,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}
