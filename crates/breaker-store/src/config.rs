//! Configuration of a replica's breakers ([`BreakersConfig`]).

use std::collections::HashMap;
use std::time::Duration;

use crate::BreakerPolicy;

/// Background outcome records in flight per replica before callers wait for their own.
pub const MAX_BACKGROUND_RECORDS: usize = 256;

/// Longest a tallied success waits before it reaches the shared window's call count (see
/// `Breakers::record_in_background`).
pub const TALLY_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Configuration of a replica's breakers.
#[derive(Debug, Clone)]
pub struct BreakersConfig {
    /// Policy of services without their own.
    pub default_policy: BreakerPolicy,
    /// Per-service policies. These services are also read from Redis at start.
    pub policies: HashMap<String, BreakerPolicy>,
    /// Safety-net re-read of every breaker, in case a pushed message was lost.
    pub refresh_interval: Duration,
    /// Lifetime of a probe permit: longer than a call may take (timeout + pacing wait), so that
    /// only a dead prober's permit expires.
    pub probe_ttl: Duration,
    /// TTL of a breaker's state in Redis after its last change (plus any open period).
    pub state_ttl: Duration,
    /// After a "probes busy" refusal, refuse locally this long before asking Redis again.
    pub half_open_recheck: Duration,
}

impl Default for BreakersConfig {
    fn default() -> Self {
        BreakersConfig {
            default_policy: BreakerPolicy::default(),
            policies: HashMap::new(),
            refresh_interval: Duration::from_millis(1500),
            probe_ttl: Duration::from_secs(45),
            state_ttl: Duration::from_secs(86_400),
            half_open_recheck: Duration::from_millis(100),
        }
    }
}
