//! When a breaker trips, how long it stays open and how it recovers: one [`BreakerPolicy`] per
//! upstream service, the same for the shared (Redis) breaker and the local fallback.

use std::time::Duration;

use crate::BreakerError;

/// The window is summed from at most this many buckets, which bounds the work of every record.
pub(crate) const MAX_BUCKETS: u64 = 64;

/// Trip, open and recovery rules of one breaker. Every field is configuration; `Default` gives the
/// documented defaults (5 failures in 30 s, open 30 s doubling up to 5 min with 10 % jitter, one
/// probe, one success to close).
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerPolicy {
    /// Failures within `window` that trip the breaker.
    pub failure_threshold: u32,
    /// Length of the rolling window of outcomes.
    pub window: Duration,
    /// Optional ratio rule: when set, a trip also needs `failures / calls >= ratio` with at least
    /// `min_calls` calls in the window, so at high rates a handful of failures is not an outage.
    /// In `(0, 1]`.
    pub failure_ratio: Option<f64>,
    /// Calls the window must hold before the ratio rule may trip (ignored without a ratio).
    pub min_calls: u32,
    /// A call slower than this counts as a failure even if it succeeded. `None`: never.
    pub slow_call: Option<Duration>,
    /// First OPEN period.
    pub open: Duration,
    /// Cap of the OPEN period, which doubles on each consecutive trip. The trip count restarts
    /// once the breaker has stayed closed this long.
    pub open_max: Duration,
    /// Spread of the OPEN period, as a fraction in `[0, 1]` (0.1 = ±10 %).
    pub open_jitter: f64,
    /// Probe calls allowed at once fleet-wide while HALF_OPEN.
    pub probe_permits: u32,
    /// Probe successes that close a HALF_OPEN breaker.
    pub success_threshold: u32,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            failure_threshold: 5,
            window: Duration::from_secs(30),
            failure_ratio: None,
            min_calls: 20,
            slow_call: None,
            open: Duration::from_secs(30),
            open_max: Duration::from_secs(300),
            open_jitter: 0.1,
            probe_permits: 1,
            success_threshold: 1,
        }
    }
}

impl BreakerPolicy {
    /// Checks the policy; every breaker constructor calls this.
    pub fn validate(&self) -> Result<(), BreakerError> {
        let bad = |why: &str| Err(BreakerError::InvalidConfig(why.to_string()));
        if self.failure_threshold == 0 {
            return bad("failure_threshold must be >= 1");
        }
        if self.window < Duration::from_millis(10) || self.window > Duration::from_secs(86_400) {
            return bad("window must be between 10 ms and 1 day");
        }
        if let Some(r) = self.failure_ratio
            && !(r.is_finite() && r > 0.0 && r <= 1.0)
        {
            return bad("failure_ratio must be in (0, 1]");
        }
        if self.open < Duration::from_millis(1) || self.open_max < self.open {
            return bad("open must be >= 1 ms and open_max >= open");
        }
        if self.open_max > Duration::from_secs(7 * 86_400) {
            return bad("open_max must be at most 7 days");
        }
        if !(self.open_jitter.is_finite() && (0.0..=1.0).contains(&self.open_jitter)) {
            return bad("open_jitter must be in [0, 1]");
        }
        if self.probe_permits == 0 || self.success_threshold == 0 {
            return bad("probe_permits and success_threshold must be >= 1");
        }
        Ok(())
    }

    pub(crate) fn window_ms(&self) -> u64 {
        millis(self.window).max(1)
    }

    /// Bucket width: the window in at most [`MAX_BUCKETS`] buckets, at least 1 ms each.
    pub(crate) fn bucket_ms(&self) -> u64 {
        self.window_ms().div_ceil(MAX_BUCKETS).max(1)
    }

    /// The ratio as permille, 0 when the ratio rule is off.
    pub(crate) fn ratio_permille(&self) -> u64 {
        self.failure_ratio
            .map(|r| ((r * 1000.0).round() as u64).clamp(1, 1000))
            .unwrap_or(0)
    }

    pub(crate) fn jitter_permille(&self) -> u64 {
        ((self.open_jitter * 1000.0).round() as u64).min(1000)
    }

    /// Whether `failures` out of `calls` in the window trip the breaker (the Lua rule, mirrored).
    pub(crate) fn trips(&self, failures: u64, calls: u64) -> bool {
        let ratio = self.ratio_permille();
        failures >= u64::from(self.failure_threshold)
            && (ratio == 0
                || (calls >= u64::from(self.min_calls) && failures * 1000 >= ratio * calls))
    }

    /// The OPEN period after `trips` consecutive earlier trips, with `rnd` in `[0, 1)` as jitter
    /// (the Lua rule, mirrored).
    pub(crate) fn open_for(&self, trips: u32, rnd: f64) -> Duration {
        let max = millis(self.open_max) as f64;
        let base = (millis(self.open) as f64 * 2f64.powi(trips.min(40) as i32)).min(max);
        let jittered = (base * (1.0 + self.open_jitter * (2.0 * rnd - 1.0))).min(max);
        Duration::from_millis(jittered.max(1.0).floor() as u64)
    }
}

/// Milliseconds of a duration, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented() {
        let p = BreakerPolicy::default();
        assert!(p.validate().is_ok());
        assert_eq!(p.failure_threshold, 5);
        assert_eq!(p.bucket_ms(), 469);
        assert!(p.trips(5, 5) && !p.trips(4, 4));
    }

    #[test]
    fn ratio_rule_needs_calls_and_ratio() {
        let p = BreakerPolicy {
            failure_ratio: Some(0.5),
            min_calls: 10,
            ..BreakerPolicy::default()
        };
        assert!(!p.trips(5, 5), "too few calls");
        assert!(!p.trips(5, 100), "ratio too low");
        assert!(p.trips(6, 12));
    }

    #[test]
    fn open_period_grows_and_is_capped() {
        let p = BreakerPolicy {
            open_jitter: 0.0,
            ..BreakerPolicy::default()
        };
        assert_eq!(p.open_for(0, 0.5), Duration::from_secs(30));
        assert_eq!(p.open_for(1, 0.5), Duration::from_secs(60));
        assert_eq!(p.open_for(10, 0.5), Duration::from_secs(300));
        let j = BreakerPolicy::default();
        assert_eq!(j.open_for(0, 0.0), Duration::from_secs(27));
    }

    #[test]
    fn invalid_policies_are_refused() {
        for p in [
            BreakerPolicy {
                failure_threshold: 0,
                ..BreakerPolicy::default()
            },
            BreakerPolicy {
                failure_ratio: Some(f64::NAN),
                ..BreakerPolicy::default()
            },
            BreakerPolicy {
                open_max: Duration::from_secs(1),
                ..BreakerPolicy::default()
            },
            BreakerPolicy {
                probe_permits: 0,
                ..BreakerPolicy::default()
            },
        ] {
            assert!(p.validate().is_err());
        }
    }
}
