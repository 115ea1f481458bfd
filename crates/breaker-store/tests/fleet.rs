//! Breakers shared by 3 replicas against the machine's Redis: trips seen everywhere, fleet-wide
//! probe bounds, admin from any replica, push latency. The "upstream" is an independent counter
//! of the calls that actually reached it.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use breaker_store::{
    Attempt, BreakerError, BreakerPolicy, BreakerState, CallError, Outbound, OutboundConfig,
    Outcome,
};
use common::*;
use limiter_core::RedisHandle;
use testkit::{redis_url, unique_prefix};
use tokio::sync::{Barrier, watch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_failures_over_three_replicas_open_all_and_calls_fail_fast() {
    let prefix = unique_prefix("brk-trip");
    let rs = replicas(&redis_url(), &prefix, 3, &config(BreakerPolicy::default()));
    let upstream = Arc::new(AtomicUsize::new(0));
    for i in 0..5 {
        let b = &rs[i % 3];
        let p = b.acquire(SERVICE).await.unwrap();
        upstream.fetch_add(1, Ordering::SeqCst);
        let st = b.record(p, Outcome::Failure).await;
        assert_eq!(st == BreakerState::Open, i == 4, "after failure {}", i + 1);
    }
    assert!(all_see(&rs, BreakerState::Open, Duration::from_millis(500)).await);
    assert_eq!(upstream.load(Ordering::SeqCst), 5);

    // The next call on each replica fails fast, through the wrapper too, and never reaches it.
    for b in &rs {
        match b.acquire(SERVICE).await {
            Err(BreakerError::Open { retry_after }) => {
                assert!(
                    retry_after > Duration::from_secs(20) && retry_after <= Duration::from_secs(33)
                );
            }
            other => panic!("expected Open, got {other:?}"),
        }
        let out = Outbound::new(b.clone(), OutboundConfig::default());
        let seen = upstream.clone();
        let res: Result<(), CallError<()>> = out
            .call(SERVICE, true, |_| {
                let seen = seen.clone();
                async move {
                    seen.fetch_add(1, Ordering::SeqCst);
                    Attempt::Success(())
                }
            })
            .await;
        assert!(
            matches!(res, Err(CallError::Unavailable { attempts: 0, .. })),
            "{res:?}"
        );
    }
    assert_eq!(
        upstream.load(Ordering::SeqCst),
        5,
        "no call reached the upstream while open"
    );
    let snap = rs[2].snapshot(SERVICE).await.unwrap();
    assert_eq!(snap.state, BreakerState::Open);
    assert_eq!(snap.failures_in_window, 5);
    assert_eq!(snap.last_transition_reason, "failures");
    assert!(!snap.degraded);
}

/// After the open period, 50 concurrent callers spread over the replicas: exactly
/// `probe_permits` reach the upstream. Each probe is held until every caller has either reached
/// the upstream or been refused, so all of them ask while the probes run. Returns the replicas.
async fn probe_round(
    prefix: &str,
    probe_permits: u32,
    probe_succeeds: bool,
) -> (Vec<breaker_store::Breakers>, usize) {
    let policy = BreakerPolicy {
        probe_permits,
        ..fast_policy(300)
    };
    let rs = replicas(&redis_url(), prefix, 3, &config(policy));
    for i in 0..5 {
        fail_once(&rs[i % 3]).await;
    }
    assert!(all_see(&rs, BreakerState::Open, Duration::from_millis(500)).await);
    open_period_over(&rs).await;

    let upstream = Arc::new(AtomicUsize::new(0));
    // Callers that reached the upstream or were refused.
    let settled = Arc::new(watch::channel(0usize).0);
    let barrier = Arc::new(Barrier::new(50));
    let mut tasks = Vec::new();
    for i in 0..50 {
        let b = rs[i % 3].clone();
        let upstream = upstream.clone();
        let barrier = barrier.clone();
        let settled = settled.clone();
        tasks.push(tokio::spawn(async move {
            // Each caller goes through the wrapper, retries allowed: a failed probe must not
            // let a retry through either.
            let out = Outbound::new(b, OutboundConfig::default());
            barrier.wait().await;
            let res: Result<(), CallError<&str>> = out
                .call(SERVICE, true, |_| {
                    let upstream = upstream.clone();
                    let settled = settled.clone();
                    async move {
                        upstream.fetch_add(1, Ordering::SeqCst);
                        settled.send_modify(|n| *n += 1);
                        // Hold the probe until every other caller has asked (bounded, so a
                        // broken breaker fails the counts below instead of hanging).
                        let mut rx = settled.subscribe();
                        let everyone = rx.wait_for(|n| *n >= 50);
                        let _ = tokio::time::timeout(Duration::from_secs(5), everyone).await;
                        if probe_succeeds {
                            Attempt::Success(())
                        } else {
                            Attempt::Failure {
                                error: "503",
                                retry_after: None,
                            }
                        }
                    }
                })
                .await;
            if matches!(res, Err(CallError::Unavailable { attempts: 0, .. })) {
                settled.send_modify(|n| *n += 1);
            }
            match res {
                Ok(()) => true,
                Err(CallError::Unavailable { attempts: 0, .. }) => false,
                Err(CallError::Unavailable { attempts: 1, .. })
                | Err(CallError::Upstream { .. })
                    if !probe_succeeds =>
                {
                    true
                }
                Err(e) => panic!("unexpected {e:?}"),
            }
        }));
    }
    let mut granted = 0;
    for t in tasks {
        granted += usize::from(t.await.unwrap());
    }
    let reached = upstream.load(Ordering::SeqCst);
    assert_eq!(granted, reached);
    (rs, reached)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_admits_exactly_one_probe_and_success_closes_everywhere() {
    let (rs, reached) = probe_round(&unique_prefix("brk-probe-ok"), 1, true).await;
    assert_eq!(reached, 1);
    assert!(all_see(&rs, BreakerState::Closed, Duration::from_millis(500)).await);
    let snap = rs[1].snapshot(SERVICE).await.unwrap();
    assert_eq!(snap.last_transition_reason, "recovered");
    assert_eq!(
        snap.failures_in_window, 0,
        "a recovered breaker starts a fresh window"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_admits_exactly_probe_permits() {
    let (rs, reached) = probe_round(&unique_prefix("brk-probe-3"), 3, true).await;
    assert_eq!(reached, 3);
    assert!(all_see(&rs, BreakerState::Closed, Duration::from_millis(500)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_probe_reopens_everywhere_for_longer() {
    let (rs, reached) = probe_round(&unique_prefix("brk-probe-fail"), 1, false).await;
    assert_eq!(reached, 1);
    assert!(all_see(&rs, BreakerState::Open, Duration::from_millis(500)).await);
    let snap = rs[0].snapshot(SERVICE).await.unwrap();
    assert_eq!(snap.last_transition_reason, "probe_failed");
    assert_eq!(snap.consecutive_trips, 2);
    // Second trip: 300 ms doubled.
    let left = snap.open_until_ms.unwrap() - snap.last_transition_ms.unwrap();
    assert_eq!(left, 600);
    for b in &rs {
        assert!(matches!(
            b.acquire(SERVICE).await,
            Err(BreakerError::Open { .. })
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_probers_permit_expires() {
    let prefix = unique_prefix("brk-probe-ttl");
    let cfg = breaker_store::BreakersConfig {
        probe_ttl: Duration::from_millis(200),
        ..config(fast_policy(100))
    };
    let rs = replicas(&redis_url(), &prefix, 2, &cfg);
    for _ in 0..5 {
        fail_once(&rs[0]).await;
    }
    open_period_over(&rs).await;
    let probe = rs[0].acquire(SERVICE).await.unwrap();
    assert!(probe.is_probe());
    std::mem::forget(probe); // the prober dies without recording
    let busy_at = Instant::now();
    let busy_for = match rs[1].acquire(SERVICE).await {
        Err(BreakerError::HalfOpenBusy { retry_after }) => {
            assert!(retry_after <= Duration::from_millis(200));
            retry_after
        }
        other => panic!("expected busy, got {other:?}"),
    };
    // Ask until the permit has expired in Redis and a new probe is let through.
    let p = loop {
        match rs[1].acquire(SERVICE).await {
            Ok(p) => break p,
            Err(BreakerError::HalfOpenBusy { .. }) => {}
            Err(e) => panic!("expected busy, got {e:?}"),
        }
        assert!(
            busy_at.elapsed() < Duration::from_secs(5),
            "the dead prober's permit never expired"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        busy_at.elapsed() + Duration::from_millis(20) >= busy_for,
        "a new probe {:?} into a permit announced for {busy_for:?}",
        busy_at.elapsed()
    );
    assert!(p.is_probe());
    assert_eq!(
        rs[1].record(p, Outcome::Success).await,
        BreakerState::Closed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_open_is_pushed_to_every_replica_within_100ms() {
    let prefix = unique_prefix("brk-push");
    let rs = replicas(&redis_url(), &prefix, 3, &config(BreakerPolicy::default()));
    // Every replica subscribed and learned the (closed) state.
    all_subscribed(&rs, &prefix).await;
    for b in &rs {
        assert_eq!(b.state(SERVICE), BreakerState::Closed);
        assert!(b.check(SERVICE).is_ok());
    }
    rs[0]
        .force_open(SERVICE, Duration::from_secs(60))
        .await
        .unwrap();
    for b in &rs[1..] {
        let took = wait_for(b, Duration::from_millis(100), |b| {
            b.state(SERVICE) == BreakerState::Open
        })
        .await;
        assert!(took.is_some(), "force-open not seen within 100 ms");
        assert!(matches!(b.check(SERVICE), Err(BreakerError::Open { .. })));
    }
    let snap = rs[2].snapshot(SERVICE).await.unwrap();
    assert_eq!(snap.last_transition_reason, "forced_open");

    rs[2].force_close(SERVICE).await.unwrap();
    for b in &rs[..2] {
        assert!(
            wait_for(b, Duration::from_millis(100), |b| b.state(SERVICE)
                == BreakerState::Closed)
            .await
            .is_some(),
            "force-close not seen within 100 ms"
        );
        let p = b.acquire(SERVICE).await.unwrap();
        assert!(!p.is_probe());
        b.record(p, Outcome::Success).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_close_and_reset_from_any_replica_are_seen_by_all() {
    let prefix = unique_prefix("brk-admin");
    let rs = replicas(&redis_url(), &prefix, 3, &config(BreakerPolicy::default()));
    for i in 0..5 {
        fail_once(&rs[i % 3]).await;
    }
    assert!(all_see(&rs, BreakerState::Open, Duration::from_millis(500)).await);
    rs[1].force_close(SERVICE).await.unwrap();
    assert!(all_see(&rs, BreakerState::Closed, Duration::from_millis(500)).await);
    for b in &rs {
        let s = b.snapshot(SERVICE).await.unwrap();
        assert_eq!(
            (s.state, s.failures_in_window, s.consecutive_trips),
            (BreakerState::Closed, 0, 0)
        );
        assert_eq!(s.last_transition_reason, "forced_close");
    }

    // Reset: 4 failures, reset from another replica, 4 more do not trip (window emptied).
    for i in 0..4 {
        fail_once(&rs[i % 3]).await;
    }
    assert_eq!(rs[2].snapshot(SERVICE).await.unwrap().failures_in_window, 4);
    rs[2].reset_errors(SERVICE).await.unwrap();
    for b in &rs {
        assert_eq!(b.snapshot(SERVICE).await.unwrap().failures_in_window, 0);
    }
    for i in 0..4 {
        assert_eq!(fail_once(&rs[i % 3]).await, BreakerState::Closed);
    }
    assert_eq!(fail_once(&rs[0]).await, BreakerState::Open);

    // The all-services variants the api uses.
    rs[0].force_close_all().await.unwrap();
    rs[0].reset_errors_all().await.unwrap();
    assert!(all_see(&rs, BreakerState::Closed, Duration::from_millis(500)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratio_rule_ignores_a_blip_at_high_rates() {
    let prefix = unique_prefix("brk-ratio");
    let policy = BreakerPolicy {
        failure_ratio: Some(0.5),
        min_calls: 10,
        ..BreakerPolicy::default()
    };
    let rs = replicas(&redis_url(), &prefix, 2, &config(policy));
    for i in 0..20 {
        let p = rs[i % 2].acquire(SERVICE).await.unwrap();
        rs[i % 2].record(p, Outcome::Success).await;
    }
    for i in 0..8 {
        assert_eq!(
            fail_once(&rs[i % 2]).await,
            BreakerState::Closed,
            "8/28 is a blip"
        );
    }
    // 20 failures of 40 calls reach the ratio.
    let mut last = BreakerState::Closed;
    for i in 0..12 {
        last = fail_once(&rs[i % 2]).await;
    }
    assert_eq!(last, BreakerState::Open);
    let s = rs[0].snapshot(SERVICE).await.unwrap();
    assert_eq!((s.failures_in_window, s.calls_in_window), (20, 40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_calls_count_as_failures_and_client_errors_do_not() {
    let prefix = unique_prefix("brk-slow");
    let policy = BreakerPolicy {
        failure_threshold: 2,
        slow_call: Some(Duration::from_millis(30)),
        ..BreakerPolicy::default()
    };
    let rs = replicas(&redis_url(), &prefix, 1, &config(policy));
    let out = Outbound::new(rs[0].clone(), OutboundConfig::default());
    for _ in 0..3 {
        let r: Result<(), CallError<u16>> = out
            .call(SERVICE, true, |_| async { Attempt::Rejected(404) })
            .await;
        assert!(matches!(r, Err(CallError::Rejected { error: 404, .. })));
    }
    let s = snapshot_when(&rs[0], |s| s.calls_in_window == 3).await;
    assert_eq!((s.calls_in_window, s.failures_in_window), (3, 0));
    for _ in 0..2 {
        let r: Result<(), CallError<u16>> = out
            .call(SERVICE, true, |_| async {
                tokio::time::sleep(Duration::from_millis(40)).await;
                Attempt::Success(())
            })
            .await;
        assert!(r.is_ok());
    }
    // A success's outcome is recorded in the background: wait for the trip it causes.
    assert!(
        wait_for(&rs[0], Duration::from_secs(2), |b| b.state(SERVICE)
            == BreakerState::Open)
        .await
        .is_some(),
        "two slow calls did not trip the breaker"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_has_a_ttl_and_one_hash_tag() {
    let prefix = unique_prefix("brk-ttl");
    let cfg = config(fast_policy(100));
    let rs = replicas(&redis_url(), &prefix, 1, &cfg);
    for _ in 0..5 {
        fail_once(&rs[0]).await;
    }
    open_period_over(&rs).await;
    let _probe = rs[0].acquire(SERVICE).await.unwrap();
    let h: RedisHandle = handle(&redis_url(), &prefix);
    let keys: Vec<String> = h
        .cmd(redis::cmd("KEYS").arg(format!("{prefix}:*")))
        .await
        .unwrap();
    assert_eq!(keys.len(), 3, "{keys:?}");
    for k in keys {
        assert!(
            k.starts_with(&format!("{prefix}:{{breaker.{SERVICE}}}:")),
            "{k}"
        );
        let ttl: i64 = h.cmd(redis::cmd("PTTL").arg(&k)).await.unwrap();
        assert!(ttl > 0, "{k} has no TTL");
    }
}
