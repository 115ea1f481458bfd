//! The clock of the simulator's enforced rate limit (`rate_limit_per_sec`, a sliding one-second
//! window): the machine's monotonic clock, or a manual one that only moves when a test moves it,
//! so a test of the window's edges gives the same answer however slowly the machine runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The real clock (default) or a manual one; cheap to clone (clones share the time).
#[derive(Clone, Debug, Default)]
pub struct SimClock {
    manual: Option<Arc<Manual>>,
}

#[derive(Debug)]
struct Manual {
    start: Instant,
    /// Time moved forward since `start`, ns.
    elapsed_ns: AtomicU64,
}

impl SimClock {
    /// The machine's monotonic clock.
    pub fn real() -> SimClock {
        SimClock::default()
    }

    /// A clock standing still until [`SimClock::advance`] moves it.
    pub fn manual() -> SimClock {
        SimClock {
            manual: Some(Arc::new(Manual {
                start: Instant::now(),
                elapsed_ns: AtomicU64::new(0),
            })),
        }
    }

    /// Now.
    pub fn now(&self) -> Instant {
        match &self.manual {
            Some(m) => m.start + Duration::from_nanos(m.elapsed_ns.load(Ordering::Acquire)),
            None => Instant::now(),
        }
    }

    /// Moves a manual clock forward by `d`. Returns false (and does nothing) on the real clock.
    pub fn advance(&self, d: Duration) -> bool {
        match &self.manual {
            Some(m) => {
                let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
                m.elapsed_ns.fetch_add(ns, Ordering::AcqRel);
                true
            }
            None => false,
        }
    }
}

/// Two clocks are equal when both are real or both are the same manual clock.
impl PartialEq for SimClock {
    fn eq(&self, other: &Self) -> bool {
        match (&self.manual, &other.manual) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let c = SimClock::manual();
        let t0 = c.now();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.now(), t0);
        assert!(c.clone().advance(Duration::from_millis(1500)));
        assert_eq!(c.now() - t0, Duration::from_millis(1500));
        assert!(!SimClock::real().advance(Duration::from_secs(1)));
        assert_ne!(SimClock::manual(), c);
        assert_eq!(SimClock::real(), SimClock::default());
    }
}
