//! A permission to make one call, and the outcome to record when it ends.

use std::sync::Arc;
use std::time::Instant;

use crate::entry::Entry;

/// How one call ended, as far as the breaker is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered properly. A 4xx other than 429 is a success for the breaker: the
    /// upstream is up and answered, the request was at fault.
    Success,
    /// Timeout, connection failure, 5xx or 429. A success slower than the policy's `slow_call`
    /// is turned into a failure when recorded.
    Failure,
}

/// Where the permit came from, so the outcome is recorded in the same place.
#[derive(Debug)]
pub(crate) enum PermitSource {
    /// The shared breaker; `probe` is the probe permit id while HALF_OPEN.
    Shared { probe: Option<String> },
    /// The local fallback breaker (degraded mode); `probe` is its local permit id.
    Local { probe: Option<u64> },
}

/// Permission for one call, from [`crate::Breakers::acquire`]. Give it back with
/// [`crate::Breakers::record`]. A probe permit that is dropped without a record expires by itself
/// (after the configured probe TTL), so a prober that dies cannot block recovery.
#[derive(Debug)]
#[must_use = "record the call's outcome with Breakers::record"]
pub struct Permit {
    pub(crate) entry: Arc<Entry>,
    pub(crate) source: PermitSource,
    /// When the permit was granted: the call's duration is measured from here for `slow_call`.
    pub(crate) started: Instant,
}

impl Permit {
    /// The service the permit is for.
    pub fn service(&self) -> &str {
        &self.entry.service
    }

    /// Whether this call is a HALF_OPEN probe.
    pub fn is_probe(&self) -> bool {
        match &self.source {
            PermitSource::Shared { probe } => probe.is_some(),
            PermitSource::Local { probe } => probe.is_some(),
        }
    }

    /// Whether the call, ending now, is slower than the policy's `slow_call` (a failure).
    pub(crate) fn is_slow(&self) -> bool {
        self.entry
            .policy
            .slow_call
            .is_some_and(|limit| self.started.elapsed() > limit)
    }

    /// Whether it came from the local fallback breaker (Redis unreachable).
    pub fn is_local(&self) -> bool {
        matches!(self.source, PermitSource::Local { .. })
    }
}
