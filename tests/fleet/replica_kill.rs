//! kill -9 of a replica mid-load. The survivors keep serving every request, and what the dead
//! replica had in the fleet's queue comes back, as the simulator sees it (the survivors' users
//! reaching 20 LLM calls at once again):
//! - its slots (it held all 20): within the lease TTL;
//! - its waiters (20, at the head of the queue when slots free up): they stop blocking within
//!   the heartbeat TTL, long before the lease TTL, and never take a slot.

use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use upstream_sim::calls::{first_reached, max_concurrent};

use crate::harness::admission_keys::AdmissionKeys;
use crate::harness::load::{Outcome, chat, ip, summary};
use crate::harness::{
    Fleet, FleetOptions, Load, LoadOptions, RedisTarget, TestDb, client, serial, user_hash,
    wait_for,
};

const LEASE_TTL_MS: u64 = 12_000;
const HEARTBEAT_MS: u64 = 2000;
/// Scheduling noise on a loaded 2-core machine, on top of a TTL.
const SLACK: Duration = Duration::from_secs(2);

type Pending = Vec<JoinHandle<Result<Outcome, reqwest::Error>>>;

/// `n` users sending one chat each to replica `i`, in the background.
fn send(fleet: &Fleet, i: usize, tag: &str, n: usize, ip_offset: usize) -> Pending {
    let c = client();
    (0..n)
        .map(|k| {
            let (c, base, user) = (c.clone(), fleet.url(i, ""), format!("{tag}-{k}"));
            tokio::spawn(async move { chat(&c, &base, i, &user, &ip(ip_offset + k)).await })
        })
        .collect()
}

/// Waits until the LLM runs `in_flight` calls and the fleet's chat queue holds `waiting`.
async fn wait_until(fleet: &Fleet, keys: &str, in_flight: u64, waiting: usize) {
    let reached = wait_for(Duration::from_secs(30), || async {
        let (now, _) = fleet.sim.llm_in_flight().await;
        let mut k = AdmissionKeys::open(keys).await;
        (now == in_flight && k.chat_waiters().await.len() == waiting).then_some(())
    })
    .await;
    assert!(
        reached.is_some(),
        "never {in_flight} LLM calls and {waiting} waiters"
    );
}

/// Load from 60 survivors on replicas 1 and 2.
fn survivors(fleet: &Fleet, tag: &str) -> (Load, Vec<String>) {
    let users: Vec<String> = (0..60).map(|n| format!("{tag}-{n}")).collect();
    let hashes = users.iter().map(|u| user_hash(u)).collect();
    let load = Load::start(
        &client(),
        LoadOptions {
            bases: vec![fleet.url(1, ""), fleet.url(2, "")],
            users,
            ip_offset: 5000,
            failover: false,
        },
    );
    (load, hashes)
}

/// Time after `since_ms` (the simulator's clock) when the survivors first ran 20 LLM calls at
/// once, from the simulator's call log (`None`: not before `until`).
async fn survivors_full(
    fleet: &Fleet,
    hashes: &[String],
    since_ms: u64,
    until: Instant,
) -> Option<Duration> {
    loop {
        let calls = fleet.sim.llm_calls().await;
        if let Some(t) = first_reached(&calls, 20, since_ms, |c| hashes.contains(&c.user)) {
            return Some(Duration::from_millis(t - since_ms));
        }
        if Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The most LLM calls the survivors ran at once from `since_ms` on (the simulator's call log:
/// every instant, not samples).
async fn survivors_max(fleet: &Fleet, hashes: &[String], since_ms: u64) -> usize {
    let calls = fleet.sim.llm_calls().await;
    max_concurrent(&calls, since_ms, u64::MAX, |c| hashes.contains(&c.user))
}

async fn all_failed(pending: Pending) {
    for p in pending {
        assert!(p.await.unwrap().is_err(), "a dead replica answered");
    }
}

fn check_outcomes(outcomes: &[Outcome], hashes: &[String], stats: &serde_json::Value) {
    assert!(outcomes.iter().all(Outcome::ok), "{:?}", summary(outcomes));
    let per_user = hashes
        .iter()
        .filter_map(|h| stats["llm_users"][h]["max_in_flight"].as_u64())
        .max();
    assert!(per_user <= Some(2), "a user had {per_user:?} at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replica_killed_mid_load() {
    let _one = serial().await;
    let redis = testkit::RedisServer::start();
    let db = TestDb::create().await;
    // The LLM answers slowly until the kill, so the victims' slots are held when it comes.
    let opts = FleetOptions {
        llm_latency_ms: 60_000,
        ..FleetOptions::new(RedisTarget::Standalone(redis.url()), &db.url)
    }
    .env("FLEETGATE_LEASE_TTL_MS", LEASE_TTL_MS)
    .env("FLEETGATE_ADMISSION_HEARTBEAT_MS", HEARTBEAT_MS);
    let mut fleet = Fleet::start("kill", opts).await;
    let lease = Duration::from_millis(LEASE_TTL_MS);
    let heartbeat = Duration::from_millis(HEARTBEAT_MS);

    // Part 1, slots: replica 0 holds all 20 slots (and 20 waiters) when it dies.
    let victims = send(&fleet, 0, "victim", 40, 0);
    wait_until(&fleet, &redis.url(), 20, 20).await;
    let mut keys = AdmissionKeys::open(&redis.url()).await;
    let dead_leases = keys.leases().await;
    assert_eq!(dead_leases.len(), 20);
    fleet
        .sim
        .control(serde_json::json!({"llm_answer_latency_ms": 300}))
        .await;
    let killed_ms = fleet.sim.now_ms().await;
    let killed = Instant::now();
    fleet.kill(0).await;
    all_failed(victims).await;
    let (load, hashes) = survivors(&fleet, "survivor");
    let full = survivors_full(&fleet, &hashes, killed_ms, killed + lease + SLACK * 2).await;
    let leases_left = keys
        .leases()
        .await
        .iter()
        .filter(|l| dead_leases.contains(l))
        .count();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let outcomes = load.stop().await;
    let max = survivors_max(&fleet, &hashes, killed_ms).await;
    eprintln!(
        "kill -9, part 1: survivors at 20 after {full:?}, at most {max} at once; {:?}",
        summary(&outcomes)
    );
    assert!(max <= 20, "the survivors ran {max} at once");
    let full = full.expect("the dead replica's slots never came back");
    assert!(full <= lease + SLACK, "its slots came back after {full:?}");
    assert_eq!(leases_left, 0);
    check_outcomes(&outcomes, &hashes, &fleet.sim.stats().await);
    fleet.assert_drained(1, 2, Duration::from_secs(10)).await;

    // Part 2, waiters: replica 1 holds the 20 slots for ~5 s more, replica 0 (back again) has
    // 20 waiters at the head of the queue when it dies; when replica 1's calls end, its slots
    // must go to the survivors, not to the dead waiters (which would keep them a lease TTL).
    fleet.restart(0).await;
    fleet
        .sim
        .control(serde_json::json!({"llm_answer_latency_ms": 6000}))
        .await;
    let holders = send(&fleet, 1, "holder", 20, 100);
    wait_until(&fleet, &redis.url(), 20, 0).await;
    let victims = send(&fleet, 0, "waiter", 20, 200);
    wait_until(&fleet, &redis.url(), 20, 20).await;
    let dead_waiters: Vec<String> = keys
        .chat_waiters()
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    fleet
        .sim
        .control(serde_json::json!({"llm_answer_latency_ms": 300}))
        .await;
    let killed_ms = fleet.sim.now_ms().await;
    let killed = Instant::now();
    fleet.kill(0).await;
    all_failed(victims).await;
    let (load, hashes) = survivors(&fleet, "late");
    let full = survivors_full(&fleet, &hashes, killed_ms, killed + lease).await;
    let waiters_left = keys
        .chat_waiters()
        .await
        .iter()
        .filter(|(id, _)| dead_waiters.contains(id))
        .count();
    for h in holders {
        assert!(h.await.unwrap().unwrap().ok());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let outcomes = load.stop().await;
    // Replica 1's holders and the survivors together: the whole live fleet.
    let live: Vec<String> = (0..20)
        .map(|k| user_hash(&format!("holder-{k}")))
        .chain(hashes.iter().cloned())
        .collect();
    let max = survivors_max(&fleet, &live, killed_ms).await;
    eprintln!(
        "kill -9, part 2: survivors at 20 after {full:?}, the live fleet at most {max} at once; \
         {:?}",
        summary(&outcomes)
    );
    assert!(max <= 20, "the live fleet ran {max} at once");
    // Replica 1's calls end ~4-5 s after the kill; the heartbeat TTL (2 s) is over by then.
    let full = full.expect("dead waiters kept slots (survivors not at 20 within the lease TTL)");
    assert!(
        full < Duration::from_secs(6) + heartbeat + SLACK,
        "survivors at 20 after {full:?}"
    );
    assert_eq!(waiters_left, 0, "dead waiters still queued");
    check_outcomes(&outcomes, &hashes, &fleet.sim.stats().await);
    assert!(fleet.running(1) && fleet.running(2));
    fleet.assert_drained(1, 2, Duration::from_secs(10)).await;
}
