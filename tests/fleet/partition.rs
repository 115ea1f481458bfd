//! One replica of three loses Redis (its connections cut, new ones refused) for twice the lease
//! TTL under load, while the other two keep it. Its leases expire in Redis unrenewed and the
//! others hand its slots on: under the default outage policy (safety) it stops admitting on its
//! local limit before that, and refuses with `Retry-After` until Redis answers it again. Over the
//! whole run the LLM never runs more than 20 calls at once (the simulator's recorded maximum), and
//! every request is answered or refused with `Retry-After`. On a replica that keeps admitting
//! locally (the availability policy, or before the safety policy) the LLM saw 26 at once.

use std::time::{Duration, Instant};

use testkit::proxy::TcpProxy;

use crate::harness::load::summary;
use crate::harness::{Fleet, FleetOptions, RedisTarget, TestDb, serial};

/// Short, so that twice it is a short test. The LLM answers well within a tenth of it (the drift
/// margin of the safety policy): a call admitted locally just before the stop ends before the
/// replica's leases can expire.
const LEASE_MS: u64 = 4000;
const LLM_MS: u64 = 300;
const HEARTBEAT_MS: u64 = 1500;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_replica_cut_off_for_two_lease_ttls() {
    cut_off_under_load(LLM_MS).await;
}

/// LLM calls longer than a lease: the cut-off replica's calls that were running at the cut
/// would outlive their leases, whose slots the other replicas hand on once expired in Redis.
/// Under the safety policy the replica stops them before that (its requests get 503 with
/// `Retry-After`): the LLM still never sees more than 20 at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_replica_cut_off_with_calls_longer_than_a_lease() {
    cut_off_under_load(LEASE_MS * 3 / 2).await;
}

async fn cut_off_under_load(llm_ms: u64) {
    let _one = serial().await;
    let redis = testkit::RedisServer::start();
    let proxy = TcpProxy::start(redis.port()).await;
    let db = TestDb::create().await;
    let opts = FleetOptions {
        llm_latency_ms: llm_ms,
        ..FleetOptions::new(RedisTarget::Standalone(redis.url()), &db.url)
    }
    .env("FLEETGATE_LEASE_TTL_MS", LEASE_MS)
    .env("FLEETGATE_ADMISSION_HEARTBEAT_MS", HEARTBEAT_MS)
    .replica_env(0, "FLEETGATE_REDIS_URL", proxy.url());
    let mut fleet = Fleet::start("partition", opts).await;
    let load = fleet
        .load_at_cap("partition", Duration::from_millis(HEARTBEAT_MS), llm_ms)
        .await;

    // From here the simulator records the whole run: the cut, and the return.
    proxy.cut();
    let cut = Instant::now();
    tokio::time::sleep(Duration::from_millis(2 * LEASE_MS)).await;
    let cut_off_health = fleet.health(0).await;
    proxy.restore();
    let back = Instant::now();
    let shared_after = fleet.wait_all_shared(back, Duration::from_secs(15)).await;
    // A little load through the fleet whole again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, max_run) = fleet.sim.llm_in_flight().await;
    let outcomes = load.stop().await;
    let during: Vec<_> = outcomes
        .iter()
        .filter(|o| o.replica == 0 && o.finished >= cut && o.started <= back)
        .collect();
    let refused = during.iter().filter(|o| o.status == 503).count();
    eprintln!(
        "partition: LLM max {max_run} over the run; replica 0 during the cut: {} requests, {refused} \
         refused with 503; shared again {shared_after:?} after the restore; {:?}",
        during.len(),
        summary(&outcomes)
    );

    fleet.assert_all_running();
    assert!(
        max_run <= 20,
        "the LLM saw {max_run} at once with one replica cut off"
    );
    let mode = cut_off_health
        .as_ref()
        .map(|h| h["components"]["admission"]["mode"].clone());
    assert_eq!(
        mode,
        Some(serde_json::json!("degraded")),
        "the cut-off replica declared its degraded mode"
    );
    assert!(
        refused > 0,
        "the cut-off replica refused nothing past its leases' lifetime"
    );
    assert!(
        outcomes.iter().all(|o| o.ok() || o.retryable()),
        "a request neither answered nor refused with Retry-After: {:?}",
        summary(&outcomes)
    );
    shared_after.expect("not every replica shared again within 15 s of the restore");
}
