//! Shared by the integration tests: handles on the machine's Redis under a unique prefix.
#![allow(dead_code, clippy::unwrap_used)]

use limiter_core::{RedisConfig, RedisHandle};

/// A fresh connection (a "replica") to the machine's Redis under `prefix`.
pub fn replica(prefix: &str) -> RedisHandle {
    replica_at(&testkit::redis_url(), prefix)
}

/// A fresh connection to the Redis at `url` under `prefix`.
pub fn replica_at(url: &str, prefix: &str) -> RedisHandle {
    RedisHandle::new(&RedisConfig {
        url: url.to_string(),
        prefix: prefix.to_string(),
        ..RedisConfig::default()
    })
    .unwrap()
}

/// Three priority classes, served in this order, for the admission tests.
pub const HIGH: limiter_core::Class = limiter_core::Class::new(0);
/// The middle class.
pub const MID: limiter_core::Class = limiter_core::Class::new(1);
/// The last class.
pub const LOW: limiter_core::Class = limiter_core::Class::new(2);

/// The admission defaults with the three classes above.
/// Admission with three classes. Outages under the availability policy: its local limit is the
/// one the outage tests check (shares, the fleet's peak); the safety policy's own tests
/// (`partition.rs`) choose it explicitly.
pub fn adm_cfg() -> limiter_core::AdmissionConfig {
    limiter_core::AdmissionConfig {
        classes: vec!["high".into(), "mid".into(), "low".into()],
        outage_policy: limiter_core::OutagePolicy::Availability,
        ..limiter_core::AdmissionConfig::default()
    }
}

/// Cuts `proxy` (the lease's only way to Redis) and checks the lease is not given up within
/// half its TTL: its last renewal keeps it in Redis for 2/3 TTL at least. Returns when the cut
/// began.
pub async fn cut_and_hold_half_a_ttl(
    proxy: &testkit::proxy::TcpProxy,
    lease: &limiter_core::Lease,
    ttl: std::time::Duration,
) -> tokio::time::Instant {
    proxy.cut();
    let cut_at = tokio::time::Instant::now();
    assert!(
        tokio::time::timeout(ttl / 2, lease.lost()).await.is_err(),
        "given up after {:?} of a {ttl:?} lease's gap",
        cut_at.elapsed()
    );
    cut_at
}

/// Waits for the loss of a lease cut off from Redis at `cut_at`: reported before the lease can
/// have expired in Redis (its last renewal was sent before the cut, so it lives until
/// `cut_at + ttl` at most there: a holder that stops when told has stopped before its slot can be
/// handed on), and not before its last confirmed lifetime, less the drift margin, can have run
/// out (that renewal was sent at most a third of the TTL before the cut: 2/3 TTL less a tenth).
pub async fn expect_reported_lost(
    lease: &limiter_core::Lease,
    ttl: std::time::Duration,
    cut_at: tokio::time::Instant,
) {
    tokio::time::timeout(ttl * 2, lease.lost())
        .await
        .expect("never reported lost");
    let after = cut_at.elapsed();
    assert!(
        after < ttl,
        "reported lost {after:?} after the cut: its slot may already be someone else's"
    );
    assert!(
        after >= ttl * 2 / 3 - ttl / 10,
        "reported lost {after:?} after the cut"
    );
    assert!(lease.is_lost());
}

/// Slots held right now and the most ever held, as a test sees them: a grant counts from the
/// moment `admit` returns, a release until just before the permit goes back.
#[derive(Default)]
pub struct Held {
    now: std::sync::atomic::AtomicUsize,
    max: std::sync::atomic::AtomicUsize,
}

impl Held {
    /// One more held; returns how many are held now.
    pub fn granted(&self) -> usize {
        use std::sync::atomic::Ordering::SeqCst;
        let n = self.now.fetch_add(1, SeqCst) + 1;
        self.max.fetch_max(n, SeqCst);
        n
    }

    /// One fewer held.
    pub fn released(&self) {
        self.now.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// The most ever held at once.
    pub fn max(&self) -> usize {
        self.max.load(std::sync::atomic::Ordering::SeqCst)
    }
}
