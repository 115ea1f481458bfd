//! Redis stopped under the fleet (a redis-server this test owns): every replica keeps a working
//! breaker locally and says it is degraded; when Redis returns (empty), state is shared again.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use breaker_store::{BreakerError, BreakerPolicy, BreakerState, Breakers, BreakersConfig, Outcome};
use common::*;
use testkit::proxy::TcpProxy;
use testkit::{RedisServer, unique_prefix};

/// Waits until no connection reached the proxy for `quiet` (a replica cut off from Redis retries
/// its pub/sub connection in the background, with a backoff that grows to 2 s): the window after
/// that is the replica's own.
async fn wait_quiet(proxy: &TcpProxy, quiet: Duration) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let before = proxy.connections();
        tokio::time::sleep(quiet).await;
        if proxy.connections() == before {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the proxy never went quiet"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breakers_work_locally_while_redis_is_down_and_share_again_after() {
    let mut server = RedisServer::start();
    let prefix = unique_prefix("brk-down");
    let cfg = config(fast_policy(60_000));
    // Replica 0 reaches Redis through a proxy that counts what it sends.
    let proxy = TcpProxy::start(server.port()).await;
    let mut rs = vec![Breakers::new(handle(&proxy.url(), &prefix), cfg.clone()).unwrap()];
    rs.extend(replicas(&server.url(), &prefix, 2, &cfg));
    // Shared and healthy first.
    for b in &rs {
        let p = b.acquire(SERVICE).await.unwrap();
        b.record(p, Outcome::Success).await;
        assert!(!b.degraded());
    }

    server.stop();
    // Every replica notices on its next Redis call and keeps answering from its local breaker.
    for b in &rs {
        let p = b.acquire(SERVICE).await.unwrap();
        b.record(p, Outcome::Success).await;
        assert!(b.degraded(), "degraded after a failed Redis call");
        assert!(b.snapshot(SERVICE).await.unwrap().degraded);
    }
    // Replica 0's local breaker trips on its own failures; the others are unaffected (no shared
    // state while Redis is down).
    for _ in 0..5 {
        fail_once(&rs[0]).await;
    }
    assert_eq!(rs[0].state(SERVICE), BreakerState::Open);
    assert!(matches!(
        rs[0].acquire(SERVICE).await,
        Err(BreakerError::Open { .. })
    ));
    // Refused locally: not one connection is attempted, not one byte sent to Redis's address.
    wait_quiet(&proxy, Duration::from_millis(1000)).await;
    let (connections, bytes) = (proxy.connections(), proxy.bytes_sent());
    for _ in 0..50 {
        assert!(rs[0].check(SERVICE).is_err());
        assert!(matches!(
            rs[0].acquire(SERVICE).await,
            Err(BreakerError::Open { .. })
        ));
    }
    assert_eq!(
        proxy.connections(),
        connections,
        "a local refusal tried to reach Redis"
    );
    assert_eq!(
        proxy.bytes_sent(),
        bytes,
        "a local refusal sent bytes to Redis"
    );
    let p = rs[1].acquire(SERVICE).await.unwrap();
    assert!(p.is_local());
    rs[1].record(p, Outcome::Success).await;

    server.restart();
    for b in &rs {
        assert!(
            wait_for(b, Duration::from_secs(10), |b| !b.degraded())
                .await
                .is_some(),
            "replica left degraded mode"
        );
    }
    // Redis came back empty: the shared breaker is CLOSED for everyone again...
    assert!(all_see(&rs, BreakerState::Closed, Duration::from_secs(2)).await);
    // ...and shared: failures over the replicas trip it on all of them.
    for i in 0..5 {
        fail_once(&rs[i % 3]).await;
    }
    assert!(all_see(&rs, BreakerState::Open, Duration::from_millis(500)).await);
    for b in &rs {
        let s = b.snapshot(SERVICE).await.unwrap();
        assert!(!s.degraded);
        assert_eq!(s.failures_in_window, 5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_starts_without_redis_runs_degraded_then_joins() {
    let mut server = RedisServer::start();
    let url = server.url();
    server.stop();
    let prefix = unique_prefix("brk-late");
    let rs = replicas(&url, &prefix, 2, &config(BreakerPolicy::default()));
    let p = rs[0].acquire(SERVICE).await.unwrap();
    assert!(p.is_local());
    rs[0].record(p, Outcome::Failure).await;
    assert!(rs[0].degraded());
    server.restart();
    assert!(
        wait_for(&rs[0], Duration::from_secs(10), |b| !b.degraded())
            .await
            .is_some()
    );
    rs[1]
        .force_open(SERVICE, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(all_see(&rs, BreakerState::Open, Duration::from_secs(1)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_are_reloaded_after_script_flush() {
    let server = RedisServer::start();
    let prefix = unique_prefix("brk-flush");
    let rs = replicas(&server.url(), &prefix, 1, &config(BreakerPolicy::default()));
    fail_once(&rs[0]).await;
    assert!(server.command("SCRIPT FLUSH").starts_with("+OK"));
    fail_once(&rs[0]).await;
    assert!(!rs[0].degraded());
    assert_eq!(rs[0].snapshot(SERVICE).await.unwrap().failures_in_window, 2);
}

/// Redis hangs (CLIENT PAUSE) instead of dying: one call pays the response timeout, then the
/// replica runs locally without waiting on Redis, and resumes shared state when Redis answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_costs_one_timeout_then_nothing() {
    let server = RedisServer::start();
    let prefix = unique_prefix("brk-hang");
    let rs = replicas(&server.url(), &prefix, 1, &config(BreakerPolicy::default()));
    fail_once(&rs[0]).await;
    assert!(server.command("CLIENT PAUSE 2500 ALL").starts_with("+OK"));
    let t = std::time::Instant::now();
    fail_once(&rs[0]).await; // waits for the response timeout (1 s), then degrades
    assert!(rs[0].degraded());
    let first = t.elapsed();
    let t = std::time::Instant::now();
    for _ in 0..3 {
        fail_once(&rs[0]).await;
    }
    assert!(
        t.elapsed() < Duration::from_millis(50),
        "degraded calls do not touch Redis"
    );
    assert_eq!(
        rs[0].state(SERVICE),
        BreakerState::Closed,
        "4 local failures"
    );
    fail_once(&rs[0]).await;
    assert_eq!(
        rs[0].state(SERVICE),
        BreakerState::Open,
        "5th local failure trips it"
    );
    assert!(first < Duration::from_secs(3), "{first:?}");
    assert!(
        wait_for(&rs[0], Duration::from_secs(10), |b| !b.degraded())
            .await
            .is_some()
    );
    // Shared again: Redis saw 1 failure (maybe 2, if the paused call landed after the pause).
    let s = rs[0].snapshot(SERVICE).await.unwrap();
    assert!(!s.degraded);
    assert!((1..=2).contains(&s.failures_in_window), "{s:?}");
    assert_eq!(rs[0].state(SERVICE), BreakerState::Closed);
}

/// With Redis up, a breaker this replica knows is OPEN (pushed by pub/sub) refuses calls from its
/// cache: no connection is opened and no byte is sent to Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_refuses_from_the_cache_without_touching_redis() {
    let server = RedisServer::start();
    let proxy = TcpProxy::start(server.port()).await;
    let prefix = unique_prefix("brk-cache");
    // No periodic re-read during the test: the only traffic would be the refused calls'.
    let cfg = BreakersConfig {
        refresh_interval: Duration::from_secs(60),
        ..config(BreakerPolicy::default())
    };
    let watched = Breakers::new(handle(&proxy.url(), &prefix), cfg.clone()).unwrap();
    let admin = Breakers::new(handle(&server.url(), &prefix), cfg).unwrap();
    let p = watched.acquire(SERVICE).await.unwrap();
    watched.record(p, Outcome::Success).await;
    admin
        .force_open(SERVICE, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(
        wait_for(&watched, Duration::from_secs(5), |b| b.state(SERVICE)
            == BreakerState::Open)
        .await
        .is_some(),
        "the OPEN state was pushed"
    );
    let (connections, bytes) = (proxy.connections(), proxy.bytes_sent());
    assert!(
        connections > 0 && bytes > 0,
        "the proxy carries this replica's traffic"
    );
    for _ in 0..100 {
        assert!(matches!(
            watched.acquire(SERVICE).await,
            Err(BreakerError::Open { .. })
        ));
        assert!(watched.check(SERVICE).is_err());
    }
    assert_eq!(proxy.connections(), connections, "no new connection");
    assert_eq!(proxy.bytes_sent(), bytes, "no byte sent to Redis");
}
