//! Shared setup of the breaker tests: replicas are separate `RedisHandle`s (separate
//! connections) with one unique prefix, each with its own `Breakers`.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use breaker_store::{BreakerPolicy, BreakerState, Breakers, BreakersConfig, Outcome};
use limiter_core::{RedisConfig, RedisHandle};

pub const SERVICE: &str = "pubmed";

pub fn handle(url: &str, prefix: &str) -> RedisHandle {
    RedisHandle::new(&RedisConfig {
        url: url.to_string(),
        prefix: prefix.to_string(),
        ..RedisConfig::default()
    })
    .unwrap()
}

pub fn config(policy: BreakerPolicy) -> BreakersConfig {
    BreakersConfig {
        policies: HashMap::from([(SERVICE.to_string(), policy)]),
        ..BreakersConfig::default()
    }
}

/// `n` replicas of one fleet on `url`.
pub fn replicas(url: &str, prefix: &str, n: usize, cfg: &BreakersConfig) -> Vec<Breakers> {
    (0..n)
        .map(|_| Breakers::new(handle(url, prefix), cfg.clone()).unwrap())
        .collect()
}

/// Waits (on the change counter, with a deadline) until `f` holds; returns the time it took.
pub async fn wait_for(
    b: &Breakers,
    within: Duration,
    f: impl Fn(&Breakers) -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    let mut rx = b.changes();
    loop {
        if f(b) {
            return Some(start.elapsed());
        }
        let left = within.checked_sub(start.elapsed())?;
        // Time-based conditions (an open period ending) change without a message: re-check often.
        let _ = tokio::time::timeout(left.min(Duration::from_millis(5)), rx.changed()).await;
    }
}

/// Waits until every replica sees `state`.
pub async fn all_see(rs: &[Breakers], state: BreakerState, within: Duration) -> bool {
    for r in rs {
        if wait_for(r, within, |b| b.state(SERVICE) == state)
            .await
            .is_none()
        {
            return false;
        }
    }
    true
}

/// One call through `b` that fails (the fake upstream is just this comment: the call is counted
/// by the caller).
pub async fn fail_once(b: &Breakers) -> BreakerState {
    let p = b.acquire(SERVICE).await.unwrap();
    b.record(p, Outcome::Failure).await
}

pub fn fast_policy(open_ms: u64) -> BreakerPolicy {
    BreakerPolicy {
        open: Duration::from_millis(open_ms),
        open_max: Duration::from_millis(open_ms * 8),
        open_jitter: 0.0,
        ..BreakerPolicy::default()
    }
}

/// Redis's clock, the one the breakers' scripts use, in Unix ms.
pub async fn redis_now_ms(h: &RedisHandle) -> i64 {
    let (secs, micros): (i64, i64) = h.cmd(&redis::cmd("TIME")).await.unwrap();
    secs * 1000 + micros / 1000
}

/// Waits until the open period of the (open) breaker has ended on Redis's clock, then until every
/// replica's cache lets a call ask Redis again: the moment half-open begins, whatever the load.
pub async fn open_period_over(rs: &[Breakers]) {
    let snap = rs[0].snapshot(SERVICE).await.unwrap();
    assert_eq!(snap.state, BreakerState::Open, "{snap:?}");
    let until = snap.open_until_ms.expect("an open breaker has an end");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = until - redis_now_ms(rs[0].redis()).await;
        if left <= 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "open period never ended on Redis's clock"
        );
        tokio::time::sleep(Duration::from_millis(left.unsigned_abs().min(50))).await;
    }
    for b in rs {
        assert!(
            wait_for(b, Duration::from_secs(5), |b| b.check(SERVICE).is_ok())
                .await
                .is_some(),
            "a replica still refuses locally after the open period"
        );
    }
}

/// Waits until each replica is subscribed to the breakers' channel (Redis's own count of
/// subscribers) and has read the shared state once: from then on a published change reaches it.
pub async fn all_subscribed(rs: &[Breakers], prefix: &str) {
    let h = rs[0].redis();
    let channel = format!("{prefix}:breaker");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, n): (String, usize) = h
            .cmd(redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel))
            .await
            .unwrap();
        if n >= rs.len() {
            break;
        }
        assert!(Instant::now() < deadline, "only {n} replicas subscribed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for b in rs {
        // The first read after subscribing bumps the change counter.
        assert!(
            wait_for(b, Duration::from_secs(5), |b| *b.changes().borrow() > 0)
                .await
                .is_some(),
            "a replica never read the shared state"
        );
    }
}

/// Polls a snapshot until `f` holds (outcomes of successful wrapper calls are recorded in the
/// background), with a deadline; returns the last snapshot.
pub async fn snapshot_when(
    b: &Breakers,
    f: impl Fn(&breaker_store::BreakerSnapshot) -> bool,
) -> breaker_store::BreakerSnapshot {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let s = b.snapshot(SERVICE).await.unwrap();
        if f(&s) || Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
