//! Redis going away and coming back: scripts flushed, the server restarted, a cluster.
#![allow(clippy::unwrap_used)]
mod common;

use common::{HIGH, MID};

use std::time::Duration;

use limiter_core::{
    Acquire, Admission, AdmissionConfig, LeaseManager, LeaseScope, LimiterError, Pace, Pacer,
    RedisConfig, RedisHandle, SlidingWindow, WindowAlgorithm, WindowPolicy,
};
use tokio::time::Instant;

fn window(redis: &RedisHandle, limit: u32) -> SlidingWindow {
    SlidingWindow::new(
        redis.clone(),
        WindowPolicy::new("chat", limit, Duration::from_secs(60)),
    )
    .unwrap()
}

#[tokio::test]
async fn script_flush_mid_run_is_invisible_to_callers() {
    let server = testkit::RedisServer::start();
    let redis = common::replica_at(&server.url(), "flush");
    let w = window(&redis, 1000);
    for i in 0..50 {
        if i % 10 == 5 {
            assert!(server.command("SCRIPT FLUSH").starts_with("+OK"));
        }
        assert!(w.check(b"ip").await.unwrap().allowed);
    }
}

#[tokio::test]
async fn restart_is_unavailable_while_down_and_recovers_without_a_new_handle() {
    let mut server = testkit::RedisServer::start();
    let redis = common::replica_at(&server.url(), "restart");
    let w = window(&redis, 1000);
    let leases = LeaseManager::new(redis.clone(), "adm", Duration::from_secs(5)).unwrap();
    let pacer = Pacer::new(redis.clone(), "pubmed", 1000.0, 10).unwrap();
    assert!(w.check(b"ip").await.unwrap().allowed);

    server.stop();
    // While down: every primitive answers promptly with Unavailable, never with a denial.
    for _ in 0..3 {
        let started = Instant::now();
        let err = w.check(b"ip").await.unwrap_err();
        assert!(matches!(err, LimiterError::Unavailable(_)), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a dead Redis must fail fast"
        );
        let err = leases
            .try_acquire(&[LeaseScope::new("global", 1)])
            .await
            .unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        assert!(pacer.try_acquire().await.unwrap_err().is_unavailable());
    }

    server.restart();
    // Back: the same handle reconnects by itself and reloads scripts (the new server has none).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match w.check(b"ip").await {
            Ok(d) => {
                assert!(d.allowed);
                break;
            }
            Err(e) => assert!(e.is_unavailable(), "{e:?}"),
        }
        assert!(Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(matches!(
        leases
            .try_acquire(&[LeaseScope::new("global", 1)])
            .await
            .unwrap(),
        Acquire::Granted(_)
    ));
    assert!(matches!(
        pacer.try_acquire().await.unwrap(),
        Pace::Booked(_)
    ));
}

#[tokio::test]
async fn a_replica_can_start_while_redis_is_down() {
    let mut server = testkit::RedisServer::start();
    let url = server.url();
    server.stop();
    let redis = common::replica_at(&url, "late");
    let w = window(&redis, 10);
    assert!(w.check(b"ip").await.unwrap_err().is_unavailable());
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.check(b"ip").await.is_err() {
        assert!(Instant::now() < deadline, "never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every script, unchanged, on a 3-master cluster: keys of one call share a slot, per-IP keys
/// spread over the masters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_script_runs_on_a_cluster() {
    let cluster = tokio::task::spawn_blocking(testkit::RedisCluster::start)
        .await
        .unwrap();
    let redis = RedisHandle::new(&RedisConfig {
        cluster_nodes: cluster.urls(),
        prefix: "clu".into(),
        ..RedisConfig::default()
    })
    .unwrap();
    assert!(redis.is_cluster());

    let exact = window(&redis, 2);
    let counter = SlidingWindow::new(
        redis.clone(),
        WindowPolicy::new("bulk", 2, Duration::from_secs(60))
            .with_algorithm(WindowAlgorithm::Counter),
    )
    .unwrap();
    for ip in 0..30u8 {
        let ip = [10, 0, 0, ip];
        for w in [&exact, &counter] {
            assert!(w.check(&ip).await.unwrap().allowed);
            assert!(w.check(&ip).await.unwrap().allowed);
            assert!(!w.check(&ip).await.unwrap().allowed);
        }
    }

    let leases = LeaseManager::new(redis.clone(), "adm", Duration::from_secs(5)).unwrap();
    let scopes = [LeaseScope::new("user:1", 1), LeaseScope::new("global", 5)];
    let Acquire::Granted(lease) = leases.try_acquire(&scopes).await.unwrap() else {
        panic!("refused")
    };
    assert!(matches!(
        leases.try_acquire(&scopes).await.unwrap(),
        Acquire::Refused { scope: 0, .. }
    ));
    assert!(lease.renew().await.unwrap());
    assert!(lease.release().await.unwrap());
    assert_eq!(leases.in_use(b"global").await.unwrap(), 0);

    // The admission queue's scripts (multi-key commands over one hash tag): a grant, a waiter
    // queued behind it, the hand-off on release.
    let adm = Admission::start(
        redis.clone(),
        AdmissionConfig {
            group: "clu-adm".into(),
            global_cap: 1,
            ..common::adm_cfg()
        },
    )
    .await
    .unwrap();
    let far = Instant::now() + Duration::from_secs(10);
    let first = adm.admit(b"u1", HIGH, far).await.unwrap();
    let (tx, mut positions) = tokio::sync::watch::channel(0u32);
    let adm2 = adm.clone();
    let second = tokio::spawn(async move { adm2.admit_watched(b"u2", MID, far, tx).await });
    positions.wait_for(|p| *p == 1).await.unwrap();
    assert!(first.release().await.unwrap());
    let second = second.await.unwrap().unwrap();
    assert!(second.position_at_entry() == 1 && !second.is_local());
    assert!(second.release().await.unwrap());
    let stats = adm.stats().await.unwrap();
    assert_eq!((stats.in_use, stats.queued), (0, vec![0, 0, 0]));
    adm.shutdown().await;

    let pacer = Pacer::new(redis.clone(), "pubmed", 3.0, 1).unwrap();
    assert!(matches!(
        pacer.try_acquire().await.unwrap(),
        Pace::Booked(_)
    ));
    assert!(matches!(
        pacer.try_acquire().await.unwrap(),
        Pace::Refused { .. }
    ));

    // The per-IP windows landed on more than one master.
    let mut masters_with_keys = 0;
    for url in cluster.urls() {
        let node = common::replica_at(&url, "probe");
        let n: i64 = node.cmd(&redis::cmd("DBSIZE")).await.unwrap();
        if n > 0 {
            masters_with_keys += 1;
        }
    }
    assert!(
        masters_with_keys >= 2,
        "keys did not spread: {masters_with_keys}"
    );
}
