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
    // queued behind it, the hand-off on release; with and without per-user limits.
    let bus_before = publishes_relayed(&cluster).await;
    for (group, user_cap, max_queued_per_user) in [("clu-adm", 2, 100), ("clu-flat", 0, 0)] {
        let adm = Admission::start(
            redis.clone(),
            AdmissionConfig {
                group: group.into(),
                global_cap: 1,
                user_cap,
                max_queued_per_user,
                // Past the test's bound: the grant can only come by its push, not a heartbeat's
                // catch-up (one right after subscribing, the next 20 s later).
                heartbeat_ttl: Duration::from_secs(60),
                ..common::adm_cfg()
            },
        )
        .await
        .unwrap();
        let second = hand_off_by_push(&adm).await;
        assert!(second.position_at_entry() == 1 && !second.is_local());
        assert!(second.release().await.unwrap());
        let stats = adm.stats().await.unwrap();
        assert_eq!((stats.in_use, stats.queued), (0, vec![0, 0, 0]));
        adm.shutdown().await;
    }
    // Pushed on the group's shard only (SPUBLISH): a PUBLISH is relayed to every other node.
    assert_eq!(publishes_relayed(&cluster).await, bus_before);

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

/// PUBLISH messages the cluster's nodes received from each other over the cluster bus.
async fn publishes_relayed(cluster: &testkit::RedisCluster) -> u64 {
    let mut sum = 0;
    for url in cluster.urls() {
        let node = common::replica_at(&url, "probe");
        let info: String = node.cmd(redis::cmd("CLUSTER").arg("INFO")).await.unwrap();
        sum += info
            .lines()
            .find_map(|l| l.strip_prefix("cluster_stats_messages_publish_received:"))
            .map_or(0, |v| v.trim().parse::<u64>().unwrap());
    }
    sum
}

/// On a cluster a replica's grants come on a shard channel: when its subscription's connection
/// is cut, it subscribes again and pushes reach it as before (not only the heartbeat's catch-up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_shard_subscription_comes_back() {
    let cluster = tokio::task::spawn_blocking(testkit::RedisCluster::start)
        .await
        .unwrap();
    let redis = RedisHandle::new(&RedisConfig {
        cluster_nodes: cluster.urls(),
        prefix: "cut".into(),
        ..RedisConfig::default()
    })
    .unwrap();
    let adm = Admission::start(
        redis.clone(),
        AdmissionConfig {
            group: "cut-adm".into(),
            global_cap: 1,
            heartbeat_ttl: Duration::from_secs(60),
            ..common::adm_cfg()
        },
    )
    .await
    .unwrap();
    let nodes: Vec<RedisHandle> = cluster
        .urls()
        .iter()
        .map(|u| common::replica_at(u, "probe"))
        .collect();
    let shard_channels = || async {
        let mut n = 0;
        for node in &nodes {
            let chans: Vec<String> = node
                .cmd(redis::cmd("PUBSUB").arg("SHARDCHANNELS"))
                .await
                .unwrap();
            n += chans.len();
        }
        n
    };
    let subscribed = || async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while shard_channels().await != 1 {
            assert!(Instant::now() < deadline, "not subscribed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    subscribed().await;
    let mut killed = 0;
    for node in &nodes {
        let n: i64 = node
            .cmd(redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub"))
            .await
            .unwrap();
        killed += n;
    }
    assert_eq!(killed, 1, "the subscriber's connection");
    subscribed().await;

    // The heartbeat after the new subscription went before the waiter queued; the next one is
    // 20 s away: only the push can grant it within the bound.
    let second = hand_off_by_push(&adm).await;
    assert!(second.release().await.unwrap());
    adm.shutdown().await;
}

/// u1 takes the only slot, u2 queues behind it, u1 releases: u2's permit, which must arrive
/// within 10 s (the callers' heartbeat TTL is long enough that only the grant's push can).
async fn hand_off_by_push(adm: &Admission) -> limiter_core::Permit {
    let far = Instant::now() + Duration::from_secs(30);
    let first = adm.admit(b"u1", HIGH, far).await.unwrap();
    let (tx, mut positions) = tokio::sync::watch::channel(0u32);
    let adm2 = adm.clone();
    let second = tokio::spawn(async move { adm2.admit_watched(b"u2", MID, far, tx).await });
    positions.wait_for(|p| *p == 1).await.unwrap();
    assert!(first.release().await.unwrap());
    tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the grant's push never arrived")
        .unwrap()
        .unwrap()
}
