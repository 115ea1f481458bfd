//! Rolling restart under load: SIGTERM each replica in turn (it drains: running requests finish,
//! its waiters are answered 503 with `Retry-After`, its slots are released), start it again on
//! the same port, wait until it is ready, next. No request fails other than with `Retry-After`
//! (a connection refused by a stopped replica is retried on the next one, as a load balancer
//! does). The moment each replica has exited, nothing of it is left in Redis (read directly):
//! no lease, no waiter, no grant, no registry entry; a leaked lease would still be there, its
//! 15 s TTL far from over. Afterwards no slot is held and nobody waits.

use std::time::{Duration, Instant};

use crate::harness::admission_keys::AdmissionKeys;
use crate::harness::load::summary;
use crate::harness::{Fleet, FleetOptions, Load, LoadOptions, RedisTarget, TestDb, client, serial};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restart_under_load() {
    let _one = serial().await;
    let redis = testkit::RedisServer::start();
    let db = TestDb::create().await;
    let opts = FleetOptions {
        llm_latency_ms: 400,
        ..FleetOptions::new(RedisTarget::Standalone(redis.url()), &db.url)
    }
    .env("FLEETGATE_LEASE_TTL_MS", 15_000);
    let mut fleet = Fleet::start("rolling", opts).await;
    let load = Load::start(
        &client(),
        LoadOptions {
            bases: fleet.bases(),
            users: (0..45).map(|n| format!("rolling-user-{n}")).collect(),
            ip_offset: 0,
            failover: true,
        },
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut keys = AdmissionKeys::open(&redis.url()).await;
    let mut drains = Vec::new();
    let mut held_at_signal = Vec::new();
    for i in 0..fleet.replicas.len() {
        let id = fleet.health(i).await.expect("health")["components"]["admission"]["replicaId"]
            .as_str()
            .expect("replicaId")
            .to_string();
        // It is serving: it holds slots now.
        let held = keys
            .leases()
            .await
            .iter()
            .filter(|l| l.starts_with(&format!("{id}.")))
            .count();
        held_at_signal.push(held);
        let t = Instant::now();
        let status = fleet.terminate(i, Duration::from_secs(30)).await;
        drains.push(t.elapsed());
        assert!(
            status.is_some_and(|s| s.success()),
            "replica {i} did not exit cleanly on SIGTERM: {status:?}\n{}",
            fleet.log_tail(i)
        );
        let left = keys.left_by(&id).await;
        assert!(
            left.is_empty(),
            "replica {i} ({id}, {held} leases before the signal) left behind at exit: {left:?}"
        );
        fleet.restart(i).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let outcomes = load.stop().await;
    let (_, max) = fleet.sim.llm_in_flight().await;
    eprintln!(
        "rolling restart: drains {drains:?}, leases held at the signal {held_at_signal:?}, LLM max \
         {max}; {:?}",
        summary(&outcomes)
    );

    let bad: Vec<_> = outcomes
        .iter()
        .filter(|o| !o.ok() && !o.retryable())
        .collect();
    assert!(
        bad.is_empty(),
        "failed without Retry-After: {:?}; errors: {:?}",
        summary(&outcomes),
        bad.iter()
            .map(|o| (o.replica, o.finished - o.started, o.error.as_deref()))
            .collect::<Vec<_>>()
    );
    assert!(outcomes.iter().filter(|o| o.ok()).count() > 100);
    assert!(
        held_at_signal.iter().sum::<usize>() > 0,
        "the replicas held slots when stopped: {held_at_signal:?}"
    );
    assert!(max <= 20, "the LLM saw {max} at once");
    for i in 0..fleet.replicas.len() {
        assert!(
            outcomes.iter().any(|o| o.ok() && o.replica == i),
            "replica {i} served nothing"
        );
    }
    fleet.assert_all_running();
    // Every replica's old registration has expired by now or was removed at shutdown.
    fleet.assert_drained(0, 3, Duration::from_secs(8)).await;
}
