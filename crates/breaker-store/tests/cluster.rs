//! The same scripts on a Redis Cluster (3 masters this test owns): every key of a breaker shares
//! one hash tag, and transitions published from inside a script reach subscribers on any node.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use breaker_store::{BreakerError, BreakerState, Breakers, Outcome};
use common::*;
use limiter_core::{RedisConfig, RedisHandle};
use testkit::{RedisCluster, unique_prefix};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_breakers_work_on_a_cluster() {
    let cluster = RedisCluster::start();
    let prefix = unique_prefix("brk-cluster");
    let cfg = config(fast_policy(200));
    // Different services land on different slots (and likely nodes).
    let rs: Vec<Breakers> = (0..3)
        .map(|_| {
            let h = RedisHandle::new(&RedisConfig {
                cluster_nodes: cluster.urls(),
                prefix: prefix.clone(),
                ..RedisConfig::default()
            })
            .unwrap();
            assert!(h.is_cluster());
            Breakers::new(h, cfg.clone()).unwrap()
        })
        .collect();
    for i in 0..5 {
        fail_once(&rs[i % 3]).await;
    }
    assert!(all_see(&rs, BreakerState::Open, Duration::from_secs(1)).await);
    assert!(!rs[0].degraded());
    open_period_over(&rs).await;
    let probe = rs[1].acquire(SERVICE).await.unwrap();
    assert!(probe.is_probe());
    assert!(matches!(
        rs[2].acquire(SERVICE).await,
        Err(BreakerError::HalfOpenBusy { .. })
    ));
    rs[1].record(probe, Outcome::Success).await;
    assert!(all_see(&rs, BreakerState::Closed, Duration::from_secs(1)).await);
    for svc in ["llm", "semantic-scholar", "a{b}:c"] {
        rs[0].force_open(svc, Duration::from_secs(5)).await.unwrap();
        for b in &rs {
            // Unknown services are learned on first use: one script call.
            assert!(matches!(
                b.acquire(svc).await,
                Err(BreakerError::Open { .. })
            ));
        }
    }
}
