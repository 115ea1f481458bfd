//! The shared permits this replica ended within the last lease TTL, to release them again on a
//! new master after a failover: a release sent to the old master after the replica it promoted
//! had copied the lease (or refused there once it was demoted) never reaches the new one, whose
//! copy would hold the slot, unused, until it expires.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Recent ends of shared permits: (when, lease id, user key), oldest first.
#[derive(Debug)]
pub(crate) struct Released {
    keep: Duration,
    recent: Mutex<VecDeque<(Instant, String, String)>>,
}

impl Released {
    /// Keeps each end for `keep` (the lease TTL: an older lease has expired anyway).
    pub(crate) fn new(keep: Duration) -> Self {
        Released {
            keep,
            recent: Mutex::new(VecDeque::new()),
        }
    }

    fn recent(&self) -> MutexGuard<'_, VecDeque<(Instant, String, String)>> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A shared permit ended.
    pub(crate) fn note(&self, id: &str, user_key: &str) {
        self.note_at(Instant::now(), id, user_key);
    }

    fn note_at(&self, now: Instant, id: &str, user_key: &str) {
        let mut r = self.recent();
        while r
            .front()
            .is_some_and(|(t, _, _)| now.duration_since(*t) > self.keep)
        {
            r.pop_front();
        }
        r.push_back((now, id.to_string(), user_key.to_string()));
    }

    /// The ends within the last `keep`: (lease id, user key).
    pub(crate) fn within_ttl(&self) -> Vec<(String, String)> {
        self.within_ttl_at(Instant::now())
    }

    fn within_ttl_at(&self, now: Instant) -> Vec<(String, String)> {
        self.recent()
            .iter()
            .filter(|(t, _, _)| now.duration_since(*t) <= self.keep)
            .map(|(_, id, key)| (id.clone(), key.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_ends_of_one_ttl() {
        let r = Released::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let s = Duration::from_secs;
        r.note_at(t0, "a", "ka");
        r.note_at(t0 + s(6), "b", "kb");
        assert_eq!(r.within_ttl_at(t0 + s(6)).len(), 2);
        assert_eq!(
            r.within_ttl_at(t0 + s(12)),
            vec![("b".to_string(), "kb".to_string())]
        );
        r.note_at(t0 + s(12), "c", "kc");
        assert_eq!(
            r.recent().len(),
            2,
            "older ends are dropped as new ones come"
        );
    }
}
