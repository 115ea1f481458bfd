//! [`RecentRefusals`]: keys a quota refused lately, remembered until their quota renews, so that a
//! key known to have nothing left is checked before it takes anything else (a queue place), not
//! alongside. It only chooses the order of the checks, never whether a request may pass, so a
//! stale entry costs latency, not correctness.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

/// Keys remembered at most; beyond, expired entries go, and if none had, all of them.
const CAPACITY: usize = 10_000;

/// How long a refusal without a renewal time is remembered.
const DEFAULT_FOR: Duration = Duration::from_secs(60);

/// Keys refused lately (see the module docs).
///
/// ```
/// use std::time::Duration;
/// use limiter_tower::RecentRefusals;
///
/// let refused = RecentRefusals::default();
/// refused.remember("alice", Some(Duration::from_secs(3600)));
/// assert!(refused.contains("alice"));
/// assert!(!refused.contains("bob"));
/// ```
#[derive(Debug, Default)]
pub struct RecentRefusals {
    until: Mutex<HashMap<String, Instant>>,
}

impl RecentRefusals {
    /// Whether `key` was refused and its quota has not renewed since.
    pub fn contains(&self, key: &str) -> bool {
        let mut map = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get(key) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                map.remove(key);
                false
            }
            None => false,
        }
    }

    /// Remembers `key` as refused until `renews_in` from now (a minute when unknown).
    pub fn remember(&self, key: &str, renews_in: Option<Duration>) {
        let now = Instant::now();
        let until = now + renews_in.unwrap_or(DEFAULT_FOR);
        let mut map = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= CAPACITY && !map.contains_key(key) {
            map.retain(|_, u| *u > now);
            if map.len() >= CAPACITY {
                map.clear();
            }
        }
        map.insert(key.to_string(), until);
    }

    /// Forgets `key` (its quota was raised or given back).
    pub fn forget(&self, key: &str) {
        self.until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn entries_expire_and_the_map_stays_bounded() {
        let r = RecentRefusals::default();
        r.remember("gone", Some(Duration::ZERO));
        assert!(!r.contains("gone"));
        for i in 0..CAPACITY + 10 {
            r.remember(&i.to_string(), None);
        }
        let len = r.until.lock().unwrap().len();
        assert!(len <= CAPACITY, "{len}");
        assert!(r.contains(&(CAPACITY + 9).to_string()));
    }
}
