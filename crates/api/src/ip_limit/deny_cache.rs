//! Local memory of IPs that Redis just denied, so that a client hammering a closed window is
//! answered without a Redis round trip until its window reopens. A denial is always safe to repeat
//! locally until the reset Redis reported: admissions only ever move that moment later for nobody
//! else. The map is bounded; when full, expired entries are purged and, if it is still full, new
//! denials are simply not cached (Redis keeps answering them correctly).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Denied IPs and until when.
#[derive(Debug)]
pub struct DenyCache {
    until: Mutex<HashMap<IpAddr, Instant>>,
    capacity: usize,
}

impl DenyCache {
    /// A cache of at most `capacity` IPs.
    pub fn new(capacity: usize) -> Self {
        DenyCache {
            until: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// How long `ip` is still denied, if it is.
    pub fn denied_for(&self, ip: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let mut map = self.until.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&ip) {
            Some(&t) if t > now => Some(t - now),
            Some(_) => {
                map.remove(&ip);
                None
            }
            None => None,
        }
    }

    /// Remembers that `ip` is denied for `d`.
    pub fn deny(&self, ip: IpAddr, d: Duration) {
        if d.is_zero() || self.capacity == 0 {
            return;
        }
        let now = Instant::now();
        let mut map = self.until.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.capacity && !map.contains_key(&ip) {
            map.retain(|_, t| *t > now);
            if map.len() >= self.capacity {
                return;
            }
        }
        map.insert(ip, now + d);
    }

    /// Entries held (tests, health).
    pub fn len(&self) -> usize {
        self.until.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn remembers_until_reset_and_stays_bounded() {
        let c = DenyCache::new(2);
        let a: IpAddr = "1.1.1.1".parse().unwrap();
        c.deny(a, Duration::from_secs(10));
        assert!(c.denied_for(a).is_some());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(c.denied_for(a).is_none());
        for i in 0..10u8 {
            c.deny(IpAddr::from([10, 0, 0, i]), Duration::from_secs(10));
        }
        assert_eq!(c.len(), 2);
    }
}
