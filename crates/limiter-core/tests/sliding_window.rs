#![allow(clippy::unwrap_used)]
mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use limiter_core::{SlidingWindow, WindowAlgorithm, WindowPolicy};

fn window(prefix: &str, limit: u32, window_ms: u64) -> SlidingWindow {
    SlidingWindow::new(
        common::replica(prefix),
        WindowPolicy::new("api", limit, Duration::from_millis(window_ms)),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_concurrent_checks_admit_exactly_the_limit() {
    let prefix = testkit::unique_prefix("sw1000");
    // Four replicas hammer one key.
    let windows: Vec<_> = (0..4).map(|_| window(&prefix, 5, 60_000)).collect();
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let w = windows[i % 4].clone();
        tasks.push(tokio::spawn(async move { w.check(b"10.0.0.1").await }));
    }
    let mut allowed = 0;
    for t in tasks {
        let d = t.await.unwrap().unwrap();
        if d.allowed {
            allowed += 1;
        } else {
            assert_eq!(d.remaining, 0);
            assert!(d.retry_after > Duration::ZERO && d.retry_after <= Duration::from_secs(60));
        }
    }
    assert_eq!(allowed, 5);
}

/// Every decision is checked against an exact model of the log: a call at Redis time `now` is
/// admitted iff the limit-th newest admission is at least `window` old. The test drives the window
/// through closing and reopening six times: it fills it, then closes in on the reopening on the
/// window's own clock (each denial announces how far it is: sleep half of that, and call back to
/// back over the last few ms), so calls land on both sides of every edge whatever the machine's
/// load; each is judged by the model, not by timing.
#[tokio::test]
async fn edge_is_exact_against_a_model() {
    let prefix = testkit::unique_prefix("swedge");
    let (limit, window_ms) = (3usize, 500i64);
    let w = window(&prefix, limit as u32, window_ms as u64);
    let mut admitted: Vec<i64> = Vec::new();
    // Checks one decision against the model and records it.
    let mut judge = |d: limiter_core::WindowDecision| {
        let now = d.at_ms;
        let expect = admitted.len() < limit || now - admitted[admitted.len() - limit] >= window_ms;
        assert_eq!(d.allowed, expect, "at {now}, admitted {admitted:?}");
        if d.allowed {
            admitted.push(now);
            None
        } else {
            let edge = admitted[admitted.len() - limit] + window_ms;
            assert_eq!(d.retry_after.as_millis() as i64, edge - now);
            Some(edge)
        }
    };
    let mut closest_admission = i64::MAX;
    let mut denials_before_edge = 0;
    for _cycle in 0..6 {
        let (edge, retry_after) = loop {
            let d = w.check(b"client").await.unwrap();
            if let Some(edge) = judge(d) {
                break (edge, d.retry_after);
            }
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut left = retry_after;
        loop {
            if left > Duration::from_millis(40) {
                tokio::time::sleep(left / 2).await;
            }
            let d = w.check(b"client").await.unwrap();
            if judge(d).is_none() {
                closest_admission = closest_admission.min(d.at_ms - edge);
                break;
            }
            assert!(Instant::now() < deadline, "the window never reopened");
            denials_before_edge += 1;
            left = d.retry_after;
        }
    }
    assert!(
        denials_before_edge > 0,
        "no call landed just before an edge"
    );
    assert!(
        closest_admission <= 50,
        "no admission within 50 ms after an edge (closest {closest_admission} ms)"
    );
}

#[tokio::test]
async fn denied_calls_are_not_recorded() {
    let prefix = testkit::unique_prefix("swdeny");
    let w = window(&prefix, 2, 1000);
    assert!(w.check(b"a").await.unwrap().allowed);
    let second = w.check(b"a").await.unwrap();
    assert!(second.allowed && second.remaining == 0);
    // Hammering while closed must not push the reopening further away: every denial announces
    // the same edge (on Redis's clock), and the window reopens there. 50 calls back to back (as
    // many as land before the edge on a loaded machine), then closing in on the edge.
    let first_denial = w.check(b"a").await.unwrap();
    assert!(!first_denial.allowed);
    let edge = edge_of(&first_denial);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut denials = 0;
    loop {
        let d = w.check(b"a").await.unwrap();
        if d.allowed {
            assert!(
                d.at_ms >= edge,
                "admitted {} ms before the edge",
                edge - d.at_ms
            );
            break;
        }
        assert!(
            d.at_ms < edge,
            "denied {} ms after the edge",
            d.at_ms - edge
        );
        assert_eq!(edge_of(&d), edge, "a denial moved the reopening");
        assert!(Instant::now() < deadline, "the window never reopened");
        denials += 1;
        if denials >= 50 && d.retry_after > Duration::from_millis(10) {
            tokio::time::sleep(d.retry_after / 2).await;
        }
    }
    assert!(denials >= 10, "only {denials} denials before the edge");
}

/// When a denied window reopens, on Redis's clock (ms).
fn edge_of(d: &limiter_core::WindowDecision) -> i64 {
    d.at_ms + i64::try_from(d.retry_after.as_millis()).unwrap()
}

#[tokio::test]
async fn remaining_and_reset_count_down() {
    let prefix = testkit::unique_prefix("swrem");
    let w = window(&prefix, 5, 60_000);
    for expected in (0..5).rev() {
        let d = w.check(b"ip").await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, expected);
        assert!(d.reset <= Duration::from_secs(60) && d.reset > Duration::from_secs(59));
    }
    let d = w.check(b"ip").await.unwrap();
    assert!(!d.allowed);
    // Another client is unaffected.
    assert!(w.check(b"other").await.unwrap().allowed);
}

#[tokio::test]
async fn hostile_ids_neither_collide_nor_escape() {
    let prefix = testkit::unique_prefix("swhostile");
    let w = window(&prefix, 1, 60_000);
    let long_a = vec![b'x'; 10_240];
    let mut long_b = long_a.clone();
    long_b[5_000] = b'y';
    let ids: Vec<Vec<u8>> = vec![
        b"{".to_vec(),
        b"}".to_vec(),
        b"{}".to_vec(),
        b":".to_vec(),
        b"*".to_vec(),
        b"a:b".to_vec(),
        b"a%3Ab".to_vec(),
        b"\n".to_vec(),
        b"\r\nFLUSHALL\r\n".to_vec(),
        b"%7B".to_vec(),
        b"~".to_vec(),
        long_a,
        long_b,
        vec![0xff, 0xfe, 0x00, 0x80],
        vec![0xff, 0xfe, 0x00, 0x81],
        "ümlaut".as_bytes().to_vec(),
        b"".to_vec(),
    ];
    // Each id gets its own window: with limit 1, a collision would deny a first call.
    for id in &ids {
        let d = w.check(id).await.unwrap();
        assert!(
            d.allowed,
            "first call for {:?} denied: its key collides",
            id
        );
    }
    for id in &ids {
        assert!(!w.check(id).await.unwrap().allowed);
    }
    // Every key stays inside the prefix, with a hash tag that holds no separator or brace.
    let redis = common::replica(&prefix);
    let keys: Vec<String> = redis
        .cmd(redis::cmd("KEYS").arg(format!("{prefix}:*")))
        .await
        .unwrap();
    assert_eq!(keys.len(), ids.len());
    let distinct: HashSet<_> = keys.iter().collect();
    assert_eq!(distinct.len(), ids.len());
    for k in &keys {
        let tag = &k[k.find('{').unwrap() + 1..k.len() - 1];
        assert!(k.ends_with('}'));
        assert!(!tag.contains(['{', '}', ':', '\n', '\r', '*', ' ']), "{k}");
        assert!(k.len() < 400, "key too long: {}", k.len());
    }
}

#[tokio::test]
async fn counter_variant_bounds_admissions_with_constant_memory() {
    let prefix = testkit::unique_prefix("swctr");
    let policy = WindowPolicy::new("bulk", 5000, Duration::from_secs(60));
    assert_eq!(policy.algorithm, WindowAlgorithm::Counter);
    let redis = common::replica(&prefix);
    let w = Arc::new(SlidingWindow::new(redis.clone(), policy).unwrap());
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let w = Arc::clone(&w);
        tasks.push(tokio::spawn(async move {
            let mut calls = Vec::new();
            for _ in 0..800 {
                let d = w.check(b"k").await.unwrap();
                calls.push((d.at_ms, d.allowed));
            }
            calls
        }));
    }
    let mut calls = Vec::new();
    for t in tasks {
        calls.extend(t.await.unwrap());
    }
    // Buckets align to Redis's clock, which the decisions report: judge each admission by the
    // bucket it fell in, so a run that crosses a boundary is judged too, not avoided by waiting.
    let window = 60_000;
    let first_call = calls.iter().map(|c| c.0).min().unwrap();
    let second_bucket = first_call - first_call % window + window;
    let admitted_at = |later: bool| {
        calls
            .iter()
            .filter(move |(at, ok)| *ok && (*at >= second_bucket) == later)
            .map(|c| c.0)
    };
    let first = admitted_at(false).count();
    // In the first bucket the estimate is exact (no previous bucket): at most the limit.
    assert!(first <= 5000, "{first}");
    // Past the boundary the estimate weighs the first bucket by what is left of the window: the
    // j-th admission at e ms into it needs first * (window - e) / window + j <= limit.
    let later: Vec<i64> = admitted_at(true).collect();
    if let Some(last) = later.iter().max() {
        let weighed = first as u64 * u64::try_from(last - second_bucket).unwrap();
        let bound = 5000 - first + usize::try_from(weighed.div_ceil(window as u64)).unwrap();
        assert!(
            later.len() <= bound,
            "{} after the boundary, bound {bound}",
            later.len()
        );
    }
    let allowed = first + later.len();
    assert!(allowed >= 4990, "{allowed}");
    let len: i64 = redis
        .cmd(redis::cmd("HLEN").arg(redis.keys().window("bulk", b"k")))
        .await
        .unwrap();
    assert_eq!(len, 3, "O(1) state: three fields");
}

#[tokio::test]
async fn exact_log_rejects_limits_above_1000() {
    let prefix = testkit::unique_prefix("swbig");
    let policy =
        WindowPolicy::new("x", 2000, Duration::from_secs(1)).with_algorithm(WindowAlgorithm::Exact);
    assert!(SlidingWindow::new(common::replica(&prefix), policy).is_err());
}

#[tokio::test]
async fn cached_window_answers_denied_clients_without_redis() {
    let prefix = testkit::unique_prefix("swcache");
    let mut server = testkit::RedisServer::start();
    let redis = common::replica_at(&server.url(), &prefix);
    let cached = limiter_core::CachedWindow::new(
        SlidingWindow::new(
            redis,
            WindowPolicy::new("chat", 2, Duration::from_millis(400)),
        )
        .unwrap(),
    );
    assert!(!cached.check(b"ip").await.unwrap().1);
    assert!(cached.check(b"ip").await.unwrap().0.allowed);
    let first_asked = Instant::now();
    let (first_denial, from_cache) = cached.check(b"ip").await.unwrap();
    let denied_by_redis = Instant::now();
    assert!(!first_denial.allowed && !from_cache);
    // With Redis gone, the cached denial still answers, proving no round trip is made.
    server.stop();
    for _ in 0..100 {
        let (d, from_cache) = cached.check(b"ip").await.unwrap();
        assert!(!d.allowed && from_cache);
        assert!(d.retry_after <= first_denial.retry_after);
    }
    // Other clients still go to Redis (and see it is down).
    assert!(cached.check(b"other").await.unwrap_err().is_unavailable());
    server.restart();
    // The cache answers until the retry time (on this process's clock), then lets the call
    // through to Redis again, which admits it.
    let reopens = denied_by_redis + first_denial.retry_after;
    loop {
        let asked = Instant::now();
        match cached.check(b"ip").await {
            Ok((d, true)) => {
                assert!(!d.allowed);
                assert!(
                    asked < reopens,
                    "cached {:?} past the retry time",
                    asked - reopens
                );
            }
            Ok((d, false)) => {
                assert!(d.allowed);
                assert!(Instant::now() >= first_asked + first_denial.retry_after);
                break;
            }
            Err(e) => assert!(e.is_unavailable()),
        }
        assert!(
            asked < reopens + Duration::from_secs(5),
            "never asked Redis again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
