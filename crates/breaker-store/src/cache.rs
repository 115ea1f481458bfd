//! What a replica knows of a shared breaker: the state pushed or read last, with the end of the
//! open period on this process's clock. The hot path decides from it without asking Redis.

use std::time::Instant;

use crate::BreakerError;
use crate::state::{BreakerState, Observed};

/// What this replica last learned of the shared breaker.
#[derive(Debug)]
pub(crate) struct Cached {
    /// False until a first reply or message: an unknown breaker asks Redis before the first call.
    pub(crate) known: bool,
    pub(crate) state: BreakerState,
    pub(crate) generation: i64,
    /// End of the open period on this process's clock.
    pub(crate) open_until: Option<Instant>,
    /// Refuse HALF_OPEN calls locally until then (after a "probes busy" reply).
    pub(crate) busy_until: Option<Instant>,
}

impl Cached {
    /// Takes a newer observation. An authoritative read may also go back in generation when it
    /// ran after the cached transition (Redis lost the key, e.g. a restart).
    pub(crate) fn apply(&mut self, obs: &Observed, received: Instant, authoritative: bool) -> bool {
        let newer =
            obs.generation >= self.generation || (authoritative && obs.now_ms > self.generation);
        if self.known && !newer {
            return false;
        }
        let changed = !self.known || obs.generation != self.generation || obs.state != self.state;
        self.known = true;
        self.state = obs.state;
        self.generation = obs.generation;
        self.open_until = obs.open_until_local(received);
        if changed {
            self.busy_until = None;
        }
        changed
    }
}

/// The refusal the cache already implies, if any.
pub(crate) fn cached_refusal(cache: &Cached, now: Instant) -> Result<(), BreakerError> {
    match cache.state {
        BreakerState::Open => match cache.open_until {
            Some(until) if now < until => Err(BreakerError::Open {
                retry_after: until - now,
            }),
            _ => Ok(()),
        },
        BreakerState::HalfOpen => match cache.busy_until {
            Some(until) if now < until => Err(BreakerError::HalfOpenBusy {
                retry_after: until - now,
            }),
            _ => Ok(()),
        },
        BreakerState::Closed => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(state: BreakerState, generation: i64, now_ms: i64) -> Observed {
        Observed {
            state,
            generation,
            open_until_ms: if state == BreakerState::Open {
                now_ms + 1000
            } else {
                0
            },
            now_ms,
        }
    }

    #[test]
    fn stale_observations_are_ignored_and_a_lost_key_is_not() {
        let now = Instant::now();
        let mut c = Cached {
            known: false,
            state: BreakerState::Closed,
            generation: 0,
            open_until: None,
            busy_until: None,
        };
        assert!(c.apply(&obs(BreakerState::Open, 1000, 1000), now, false));
        assert!(cached_refusal(&c, now).is_err());
        // A late reply from before the trip does not undo it...
        assert!(!c.apply(&obs(BreakerState::Closed, 900, 900), now, false));
        // ...nor does a read that ran before it.
        assert!(!c.apply(&obs(BreakerState::Closed, 0, 999), now, true));
        // A read after it that finds no breaker means Redis lost it: CLOSED.
        assert!(c.apply(&obs(BreakerState::Closed, 0, 5000), now, true));
        assert!(cached_refusal(&c, now).is_ok());
    }
}
