//! Redis killed mid-load and started again 10 s later (empty, as after a crash without
//! persistence): no replica exits; every replica's health says `degraded` during the outage;
//! the LLM never sees more than 20 calls at once, and no more than 18 once only the local shares
//! run (each replica admits within floor(20 / 3) = 6); every request is served; within 5 s of Redis returning, every replica is `healthy` again and the
//! shared cap is back (the LLM reaches 20 again, more than the 18 of the local shares).

use std::time::{Duration, Instant};

use crate::harness::load::summary;
use crate::harness::{Fleet, FleetOptions, Load, LoadOptions, RedisTarget, TestDb, client, serial};

/// Samples the LLM's in-flight count every 50 ms for `d`; returns the largest seen.
async fn sample_llm(fleet: &Fleet, d: Duration) -> u64 {
    let until = Instant::now() + d;
    let mut max = 0;
    while Instant::now() < until {
        let (now, max_since_reset) = fleet.sim.llm_in_flight().await;
        max = max.max(now).max(max_since_reset);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    max
}

async fn statuses(fleet: &Fleet) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for i in 0..fleet.replicas.len() {
        out.push(fleet.status(i).await);
    }
    out
}

/// Every replica healthy, in shared mode, admitting through Redis.
async fn all_shared(fleet: &Fleet) -> bool {
    for i in 0..fleet.replicas.len() {
        let Some(h) = fleet.health(i).await else {
            return false;
        };
        let c = &h["components"];
        if h["status"] != "healthy"
            || c["redis"]["mode"] != "shared"
            || c["queue"]["degraded"] != false
        {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_for_10_seconds() {
    let _one = serial().await;
    let mut redis = testkit::RedisServer::start();
    let db = TestDb::create().await;
    // Recovery waits one heartbeat TTL after adopting (so every replica has re-registered its
    // local slots before Redis's counts are trusted): with the default 3 s it takes 3.2-4.2 s
    // here, too close to the 5 s promised for a loaded machine; 2 s leaves room.
    let opts = FleetOptions {
        llm_latency_ms: 400,
        ..FleetOptions::new(RedisTarget::Standalone(redis.url()), &db.url)
    }
    .env("FLEETGATE_ADMISSION_HEARTBEAT_MS", 2000);
    let mut fleet = Fleet::start("redis-down", opts).await;
    let load = Load::start(
        &client(),
        LoadOptions {
            bases: fleet.bases(),
            users: (0..60).map(|n| format!("redis-user-{n}")).collect(),
            ip_offset: 0,
            failover: false,
        },
    );
    // Shared mode first: the cap is reached.
    let before = sample_llm(&fleet, Duration::from_secs(3)).await;
    assert_eq!(before, 20, "the shared cap is reached before the outage");

    fleet.sim.reset_stats().await;
    let down = Instant::now();
    redis.stop();
    // Health turns degraded on every replica (a Redis call times out in 1 s).
    let mut max_during = 0;
    let mut degraded_after = None;
    while down.elapsed() < Duration::from_secs(3) && degraded_after.is_none() {
        max_during = max_during.max(sample_llm(&fleet, Duration::from_millis(100)).await);
        if statuses(&fleet)
            .await
            .iter()
            .all(|s| s.as_deref() == Some("degraded"))
        {
            degraded_after = Some(down.elapsed());
        }
    }
    // Once the calls admitted in shared mode are over (400 ms), only the local shares run.
    tokio::time::sleep(Duration::from_millis(800)).await;
    fleet.sim.reset_stats().await;
    let remaining = Duration::from_secs(10).saturating_sub(down.elapsed());
    let max_local = sample_llm(&fleet, remaining).await;
    let mid = statuses(&fleet).await;
    max_during = max_during.max(max_local);
    redis.restart();
    let up = Instant::now();

    let mut recovered_after = None;
    let mut max_after = 0;
    while up.elapsed() < Duration::from_secs(8) {
        max_after = max_after.max(sample_llm(&fleet, Duration::from_millis(200)).await);
        if recovered_after.is_none() && all_shared(&fleet).await {
            recovered_after = Some(up.elapsed());
            break;
        }
    }
    // The shared cap again: the LLM reaches 20 (above the local shares' 18), never more.
    fleet.sim.reset_stats().await;
    let shared_again = sample_llm(&fleet, Duration::from_secs(4)).await;
    let stopping = Instant::now();
    let outcomes = load.stop().await;
    let slowest = outcomes
        .iter()
        .map(|o| o.finished - o.started)
        .max()
        .unwrap_or_default();
    eprintln!(
        "load stopped in {:?}, slowest request {slowest:?}",
        stopping.elapsed()
    );
    eprintln!(
        "redis outage: degraded after {degraded_after:?}, LLM max {max_during} during \
         ({max_local} on local shares), \
         healthy+shared {recovered_after:?} after restart, max {shared_again} after; {:?}",
        summary(&outcomes)
    );

    fleet.assert_all_running();
    let degraded_after = degraded_after.expect("health never said degraded on every replica");
    assert!(
        degraded_after < Duration::from_secs(5),
        "{degraded_after:?}"
    );
    assert!(
        mid.iter().all(|s| s.as_deref() == Some("degraded")),
        "health late in the outage: {mid:?}"
    );
    assert!(
        max_during <= 20,
        "the LLM saw {max_during} at once during the outage"
    );
    assert!(
        (6..=18).contains(&max_local),
        "on local shares (3 x 6) the LLM saw {max_local} at once"
    );
    assert!(
        max_after <= 20,
        "the LLM saw {max_after} at once after the restart"
    );
    let recovered_after = recovered_after.expect("not healthy and shared again within 8 s");
    assert!(
        recovered_after <= Duration::from_secs(5),
        "{recovered_after:?}"
    );
    assert_eq!(
        shared_again, 20,
        "the shared cap (20, not 3 x 6) is enforced again"
    );
    // Every request was served: waiters of the moment moved to the local queues, and the
    // calls running when Redis went finished.
    assert!(outcomes.iter().all(|o| o.ok()), "{:?}", summary(&outcomes));
    fleet.assert_drained(0, 3, Duration::from_secs(10)).await;
}
