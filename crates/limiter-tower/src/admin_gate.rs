//! [`AdminGate`]: an admin bearer token, with wrong guesses throttled per client address.
//!
//! Every wrong token is recorded in a sliding window in Redis (limiter-core's [`SlidingWindow`],
//! policy `admin_auth`, the configured number per 60 s, keyed like [`crate::ClientIpKey`]: the
//! address, or an IPv6 /64). Once an address is over it, every admin attempt from it is refused
//! without the token being compared, so a blocked guesser learns nothing, even when the guess is
//! right.
//!
//! The window can only record (it has no read-only check), so "blocked" is learned from the first
//! refusal and remembered by each replica until the window's `Retry-After`: an address gets at
//! most one more compared guess per replica per block than the limit. While Redis is unreachable a
//! per-replica fixed window with the same limit counts instead.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use limiter_core::{LimiterError, RedisHandle, SlidingWindow, WindowPolicy};
use tokio::time::Instant;

use crate::AdminToken;
use crate::key::ip_key;

/// Addresses remembered (blocked ones, and local counts while Redis is down) before expired
/// entries are pruned; if all are live the map is cleared, which forgets at most one block each.
const MAX_TRACKED: usize = 10_000;
const WINDOW: Duration = Duration::from_secs(60);

/// Why [`AdminGate::authorize`] refused a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdminRefusal {
    /// No admin token is configured: admin actions are disabled.
    #[error("the admin API is disabled")]
    Disabled,
    /// Not the admin token (the guess was counted).
    #[error("this token does not grant admin access")]
    Wrong,
    /// Too many wrong tokens from this address; the token was not compared.
    #[error("too many wrong admin tokens from this address")]
    Throttled {
        /// How long the address stays blocked (at least 1 s).
        retry_after: Duration,
    },
}

/// The admin token and its guard.
#[derive(Debug)]
pub struct AdminGate {
    token: Option<AdminToken>,
    failures: SlidingWindow,
    limit: u32,
    /// Addresses refused by the window, until when.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    /// Redis down: failures per address in the current local window (start, count).
    local: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

fn prune<V>(map: &mut HashMap<IpAddr, V>, live: impl Fn(&V) -> bool) {
    if map.len() >= MAX_TRACKED {
        map.retain(|_, v| live(v));
        if map.len() >= MAX_TRACKED {
            map.clear();
        }
    }
}

/// The per-address key (an IPv6 client is its /64), as an address for the local maps.
fn canonical_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

impl AdminGate {
    /// A gate for `token` (none: admin actions are disabled), allowing `failures_per_min` wrong
    /// tokens per address and minute.
    pub fn new(
        redis: RedisHandle,
        token: Option<AdminToken>,
        failures_per_min: u32,
    ) -> Result<Self, LimiterError> {
        let failures = SlidingWindow::new(
            redis,
            WindowPolicy::new("admin_auth", failures_per_min, WINDOW),
        )?;
        Ok(AdminGate {
            token,
            failures,
            limit: failures_per_min,
            blocked: Mutex::new(HashMap::new()),
            local: Mutex::new(HashMap::new()),
        })
    }

    /// The token, when configured.
    pub fn token(&self) -> Option<&AdminToken> {
        self.token.as_ref()
    }

    fn blocked_for(&self, key: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let map = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&key)
            .and_then(|until| until.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    fn block(&self, key: IpAddr, for_: Duration) {
        let now = Instant::now();
        let mut map = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        prune(&mut map, |until| *until > now);
        map.insert(key, now + for_);
    }

    /// Records a wrong token from `ip`; `Some(retry_after)` once the address is over its limit.
    async fn record_failure(&self, ip: IpAddr) -> Option<Duration> {
        let key = canonical_key(ip);
        match self.failures.check(ip_key(ip).as_bytes()).await {
            Ok(d) if d.allowed => None,
            Ok(d) => {
                let wait = d.retry_after.max(Duration::from_secs(1));
                self.block(key, wait);
                Some(wait)
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin failure window unavailable; counting locally");
                let now = Instant::now();
                let mut map = self.local.lock().unwrap_or_else(|p| p.into_inner());
                prune(&mut map, |(start, _)| now.duration_since(*start) < WINDOW);
                let entry = map.entry(key).or_insert((now, 0));
                if now.duration_since(entry.0) >= WINDOW {
                    *entry = (now, 0);
                }
                entry.1 += 1;
                if entry.1 > self.limit {
                    let wait = WINDOW.saturating_sub(now.duration_since(entry.0));
                    let wait = wait.max(Duration::from_secs(1));
                    drop(map);
                    self.block(key, wait);
                    Some(wait)
                } else {
                    None
                }
            }
        }
    }

    /// Admits `candidate` from the client address `ip`: refused while the address is blocked
    /// (without comparing), when admin is disabled, or when it is not the token (counted).
    pub async fn authorize(&self, ip: IpAddr, candidate: &str) -> Result<(), AdminRefusal> {
        let Some(expected) = &self.token else {
            return Err(AdminRefusal::Disabled);
        };
        if let Some(retry_after) = self.blocked_for(canonical_key(ip)) {
            return Err(AdminRefusal::Throttled { retry_after });
        }
        if expected.matches(candidate) {
            return Ok(());
        }
        tracing::info!(client = %ip, "wrong admin token");
        match self.record_failure(ip).await {
            Some(retry_after) => Err(AdminRefusal::Throttled { retry_after }),
            None => Err(AdminRefusal::Wrong),
        }
    }
}
