//! Redis behind Sentinel: a master, one replica and three sentinels, all started by the test;
//! three replicas find the master through the sentinels alone (`FLEETGATE_REDIS_URL` points at
//! nothing). Under load with the fleet at its cap, the master fails over, either on
//! `SENTINEL FAILOVER` (the old master, alive, is demoted: its clients are cut and writes to it
//! answer `READONLY`) or because it is killed (SIGKILL; the sentinels promote the replica once
//! they judge it down). Over the whole run the LLM never runs more than 20 calls at once (the
//! simulator's recorded maximum), every request is served or refused with `Retry-After`, every
//! replica follows the new master and re-registers what it holds there (replication is
//! asynchronous: the promoted replica may lack the last writes), and the shared cap is enforced
//! through the new master afterwards (the LLM reaches 20 again, never more).

use std::time::{Duration, Instant};

use crate::harness::load::summary;
use crate::harness::sentinel::SentinelSet;
use crate::harness::{Fleet, FleetOptions, RedisTarget, TestDb, serial};

const LLM_MS: u64 = 500;
const HEARTBEAT_MS: u64 = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// `SENTINEL FAILOVER`.
    Failover,
    /// SIGKILL the master.
    KillMaster,
}

async fn fail_over(fault: Fault) {
    let mut set = SentinelSet::start(&format!("{fault:?}").to_lowercase()).await;
    let db = TestDb::create().await;
    let opts = FleetOptions {
        llm_latency_ms: LLM_MS,
        // Nothing listens there: the master's address comes from the sentinels only.
        ..FleetOptions::new(
            RedisTarget::Standalone("redis://127.0.0.1:1".into()),
            &db.url,
        )
    }
    .env("FLEETGATE_REDIS_SENTINELS", set.addrs())
    .env("FLEETGATE_ADMISSION_HEARTBEAT_MS", HEARTBEAT_MS);
    let mut fleet = Fleet::start("sentinel", opts).await;
    let topology = fleet
        .health(0)
        .await
        .map(|h| h["components"]["redis"]["topology"].clone());
    assert_eq!(topology, Some(serde_json::json!("sentinel")));
    let load = fleet
        .load_at_cap("sentinel", Duration::from_millis(HEARTBEAT_MS), LLM_MS)
        .await;

    // From here the simulator records the whole run: the failover, and after.
    let started = Instant::now();
    match fault {
        Fault::Failover => set.failover().await,
        Fault::KillMaster => set.kill_first_master().await,
    }
    let promoted = set
        .wait_master(set.first_replica(), Duration::from_secs(30))
        .await;
    let promoted = promoted.unwrap_or_else(|| {
        panic!(
            "the replica was not promoted within 30 s; logs in {}",
            set.dir().display()
        )
    });
    let shared_after = fleet
        .wait_all_shared(started, Duration::from_secs(40))
        .await;
    // The shared cap through the new master: the LLM reaches 20 again, never more.
    let (max_failover, again, again_max) = fleet.run_max_then_cap_again().await;
    let outcomes = load.stop().await;
    let moved: Vec<bool> = (0..fleet.replicas.len())
        .map(|i| {
            fleet
                .log_tail_lines(i, 100_000)
                .contains("Redis master moved: registering again")
        })
        .collect();
    eprintln!(
        "sentinel {fault:?}: promoted after {promoted:?}, every replica shared again after \
         {shared_after:?}; LLM max {max_failover} through the failover, then {again} / \
         {again_max}; replicas that followed {moved:?}; {:?}",
        summary(&outcomes)
    );

    fleet.assert_all_running();
    assert!(
        max_failover <= 20,
        "the LLM saw {max_failover} at once through the failover"
    );
    assert!(
        outcomes.iter().all(|o| o.ok() || o.retryable()),
        "a request neither answered nor refused with Retry-After: {:?}",
        summary(&outcomes)
    );
    assert!(
        outcomes.iter().filter(|o| o.ok()).count() > outcomes.len() / 2,
        "most requests were refused: {:?}",
        summary(&outcomes)
    );
    assert!(
        moved.iter().all(|m| *m),
        "not every replica followed the new master: {moved:?}"
    );
    shared_after.expect("not every replica shared again within 40 s");
    assert_eq!(
        (again, again_max),
        (20, 20),
        "the shared cap (20) through the new master"
    );
    fleet.assert_drained(0, 3, Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinel_failover_under_load() {
    let _one = serial().await;
    fail_over(Fault::Failover).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinel_master_killed_under_load() {
    let _one = serial().await;
    fail_over(Fault::KillMaster).await;
}
