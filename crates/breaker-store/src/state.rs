//! The three states of a breaker and what a replica knows of a shared one.

use std::time::{Duration, Instant};

/// The longest any breaker stays open (forced or tripped): keeps every deadline representable.
pub(crate) const MAX_HOLD: Duration = Duration::from_secs(30 * 86_400);

/// State of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls go through; outcomes are counted in the rolling window.
    Closed,
    /// Calls are refused until the open period ends.
    Open,
    /// A bounded number of probe calls test whether the upstream recovered.
    HalfOpen,
}

impl BreakerState {
    /// The code the scripts store (`st`): 0 closed, 1 open, 2 half-open.
    pub(crate) fn from_code(code: i64) -> Option<Self> {
        match code {
            0 => Some(BreakerState::Closed),
            1 => Some(BreakerState::Open),
            2 => Some(BreakerState::HalfOpen),
            _ => None,
        }
    }

    /// Lower-case name for health output and metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

impl std::fmt::Display for BreakerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One observation of a shared breaker, as a script reply or a pub/sub message carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Observed {
    pub(crate) state: BreakerState,
    /// Generation: grows on every transition and is at least the transition time in Redis ms, so
    /// it keeps growing even after Redis lost the key. 0 = the breaker does not exist (CLOSED).
    pub(crate) generation: i64,
    /// End of the OPEN period, Redis ms (0 unless OPEN).
    pub(crate) open_until_ms: i64,
    /// Redis time of the observation, ms: converts `open_until_ms` to this process's clock.
    pub(crate) now_ms: i64,
}

impl Observed {
    /// The end of the OPEN period on this process's clock, taking `received` as `now_ms`.
    pub(crate) fn open_until_local(&self, received: Instant) -> Option<Instant> {
        (self.state == BreakerState::Open).then(|| {
            let left = Duration::from_millis((self.open_until_ms - self.now_ms).max(0) as u64);
            received + left.min(MAX_HOLD)
        })
    }

    /// Parses a pub/sub message `generation:st:until_ms:now_ms:service`.
    pub(crate) fn parse_message(payload: &str) -> Option<(Observed, &str)> {
        let mut it = payload.splitn(5, ':');
        let generation = it.next()?.parse().ok()?;
        let state = BreakerState::from_code(it.next()?.parse().ok()?)?;
        let open_until_ms = it.next()?.parse().ok()?;
        let now_ms = it.next()?.parse().ok()?;
        let service = it.next()?;
        Some((
            Observed {
                state,
                generation,
                open_until_ms,
                now_ms,
            },
            service,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_and_keep_colons_in_service_names() {
        let (o, s) = Observed::parse_message("1700000000123:1:1700000030123:1700000000123:a:b")
            .expect("valid");
        assert_eq!(s, "a:b");
        assert_eq!(o.state, BreakerState::Open);
        let now = Instant::now();
        assert_eq!(o.open_until_local(now), Some(now + Duration::from_secs(30)));
        assert!(Observed::parse_message("x:1:0:0:s").is_none());
        assert!(Observed::parse_message("1:7:0:0:s").is_none());
        assert!(Observed::parse_message("1:1:0").is_none());
    }
}
