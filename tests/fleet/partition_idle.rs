//! One replica of three loses Redis while the fleet is idle, and load arrives while its last
//! contact with Redis still vouches for its slots there (the safety policy's window). The two
//! others, reaching Redis, admit up to the whole cap of 20 by Redis's counts, which hold none of
//! the cut replica's local grants; so under the safety policy the cut replica only reuses the
//! slots Redis counts for it (none: the fleet was idle) and refuses with `Retry-After`. With the
//! local limit of a whole-Redis outage (its share, 6, since the fleet's peak was 0) the LLM saw
//! 26 at once. The admission model finds the same
//! (`crates/admission-model`, `safety_with_the_services_outage_limit_exceeds_the_cap_in_a_partition`).

use std::time::{Duration, Instant};

use testkit::proxy::TcpProxy;

use crate::harness::load::summary;
use crate::harness::{Fleet, FleetOptions, Load, LoadOptions, RedisTarget, TestDb, client, serial};

/// Long, so that the window in which the cut replica may admit locally (2/3 of it after its
/// last heartbeat, less a tenth) is several seconds.
const LEASE_MS: u64 = 9000;
/// Longer than the window's rest: what is admitted in it still runs when the others fill up.
const LLM_MS: u64 = 3000;
const HEARTBEAT_MS: u64 = 1500;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_replica_cut_off_while_idle_then_load() {
    let _one = serial().await;
    let redis = testkit::RedisServer::start();
    let proxy = TcpProxy::start(redis.port()).await;
    let db = TestDb::create().await;
    let opts = FleetOptions {
        llm_latency_ms: LLM_MS,
        ..FleetOptions::new(RedisTarget::Standalone(redis.url()), &db.url)
    }
    .env("FLEETGATE_LEASE_TTL_MS", LEASE_MS)
    .env("FLEETGATE_ADMISSION_HEARTBEAT_MS", HEARTBEAT_MS)
    .replica_env(0, "FLEETGATE_REDIS_URL", proxy.url());
    let fleet = Fleet::start("partition-idle", opts).await;
    fleet.sim.reset_stats().await;

    proxy.cut();
    let cut = Instant::now();
    // Degraded as soon as a call of replica 0 fails (its next heartbeat at the latest).
    let mut degraded = None;
    while cut.elapsed() < Duration::from_secs(3) {
        let mode = fleet
            .health(0)
            .await
            .map(|h| h["components"]["admission"]["mode"].clone());
        if mode == Some(serde_json::json!("degraded")) {
            degraded = Some(cut.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let load = Load::start(
        &client(),
        LoadOptions {
            bases: fleet.bases(),
            users: (0..60).map(|n| format!("idle-user-{n}")).collect(),
            ip_offset: 0,
            failover: false,
        },
    );
    tokio::time::sleep(Duration::from_millis(LLM_MS + 1000)).await;
    let (_, max_run) = fleet.sim.llm_in_flight().await;
    let outcomes = load.stop().await;
    proxy.restore();
    eprintln!(
        "partition of an idle fleet: replica 0 degraded {degraded:?} after the cut; LLM max \
         {max_run}; {:?}",
        summary(&outcomes)
    );
    assert!(degraded.is_some(), "replica 0 never went degraded");
    assert!(
        max_run <= 20,
        "the LLM saw {max_run} at once with one replica cut off"
    );
    assert!(
        outcomes.iter().all(|o| o.ok() || o.retryable()),
        "a request neither answered nor refused with Retry-After: {:?}",
        summary(&outcomes)
    );
}
