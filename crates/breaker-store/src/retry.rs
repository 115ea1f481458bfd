//! When to retry a failed idempotent call: exponential backoff with full jitter ("Exponential
//! Backoff And Jitter", AWS Architecture Blog), never sooner than the upstream's `Retry-After`.

use std::time::Duration;

/// Retry rules of the outbound wrapper.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (3 = two retries). Non-idempotent calls get one.
    pub max_attempts: u32,
    /// Backoff before the first retry (before jitter); it doubles for each further retry.
    pub base: Duration,
    /// Cap of the backoff (before jitter).
    pub max_backoff: Duration,
    /// Full jitter: wait a uniform random time in `[0, backoff]`, which spreads the retries of
    /// many callers instead of synchronising them. Off: wait exactly `backoff`.
    pub full_jitter: bool,
    /// A `Retry-After` longer than this ends the retries (the caller gets the error and the hint
    /// instead of a request held open for minutes).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            full_jitter: true,
            max_retry_after: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The backoff before retry number `retry` (1 = the first retry), `rnd` uniform in `[0, 1)`.
    pub fn backoff(&self, retry: u32, rnd: f64) -> Duration {
        let exp = 2f64.powi(retry.saturating_sub(1).min(30) as i32);
        // try_from: a huge configured base must not panic (mul_f64 would on overflow).
        let ceiling = Duration::try_from_secs_f64(self.base.as_secs_f64() * exp)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff);
        if self.full_jitter {
            ceiling.mul_f64(rnd.clamp(0.0, 1.0))
        } else {
            ceiling
        }
    }

    /// The wait before retry number `retry`, honouring `retry_after` as a minimum; `None` when
    /// `retry_after` is beyond `max_retry_after` (give up).
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>, rnd: f64) -> Option<Duration> {
        let backoff = self.backoff(retry, rnd);
        match retry_after {
            Some(ra) if ra > self.max_retry_after => None,
            Some(ra) => Some(backoff.max(ra)),
            None => Some(backoff),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        let p = RetryPolicy {
            full_jitter: false,
            ..RetryPolicy::default()
        };
        assert_eq!(p.backoff(1, 0.3), Duration::from_millis(200));
        assert_eq!(p.backoff(2, 0.3), Duration::from_millis(400));
        assert_eq!(p.backoff(20, 0.3), Duration::from_secs(5));
        let j = RetryPolicy::default();
        assert_eq!(j.backoff(2, 0.5), Duration::from_millis(200));
        assert_eq!(j.backoff(2, 0.0), Duration::ZERO);
    }

    #[test]
    fn retry_after_is_a_minimum_and_a_limit() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(2)), 0.9),
            Some(Duration::from_secs(2))
        );
        assert_eq!(p.delay(1, Some(Duration::from_secs(60)), 0.9), None);
    }
}
