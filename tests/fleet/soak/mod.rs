//! The soak: not a CI test (ignored; `bench/soak` runs it). Steady load from 60 users on three
//! replicas for `SOAK_MINUTES` (30), with a fault every `SOAK_FAULT_EVERY_S` (120) in turn: a
//! replica killed (SIGKILL) and started again, Redis restarted empty, replica 0 cut off from Redis
//! (a TCP proxy) for twice the lease TTL, PostgreSQL stopped at once and started again. Redis,
//! PostgreSQL (a cluster initdb'd in a temporary directory) and the simulator are the soak's own.
//!
//! It reports (Markdown, on stderr and into `SOAK_REPORT` if set) each goal and whether it held:
//! the LLM's recorded maximum in flight over the whole run; each replica's RSS and Redis
//! `used_memory` against ±10 % of their median from the first sixth of the run to its end;
//! Redis's key count before the load, at its end and once the windows' keys have expired; slots
//! and waiters left once the load stopped; per fault the time until every replica is shared
//! again; and p99 latency per bucket (5 minutes; 1 minute for runs under 10 minutes). The time
//! series behind it ([`series`]) go to `SOAK_SERIES` (JSON) if set.
//!
//! Layout: `series.rs` (the sampler and the latency buckets), `report.rs` (Markdown and JSON).

mod report;
mod series;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use testkit::proxy::TcpProxy;

use self::report::{FaultRecord, Run, outcome_key};
use self::series::{LATENCY_BUCKET, Pids, Sampler, latency_buckets, load1, quantile};
use crate::harness::{
    Fleet, FleetOptions, Load, LoadOptions, PgCluster, RedisTarget, TestDb, client, serial,
};

const LLM_MS: u64 = 500;
const LEASE_MS: u64 = 6000;
const HEARTBEAT_MS: u64 = 2000;
const USERS: usize = 60;

#[derive(Debug, Clone, Copy)]
enum Fault {
    KillReplica,
    RedisRestart,
    Partition,
    PostgresRestart,
}

const FAULTS: [Fault; 4] = [
    Fault::KillReplica,
    Fault::RedisRestart,
    Fault::Partition,
    Fault::PostgresRestart,
];

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn dbsize(redis: &testkit::RedisServer) -> u64 {
    redis
        .command("DBSIZE")
        .trim()
        .trim_start_matches(':')
        .parse()
        .unwrap_or(0)
}

/// Every key's name (the soak's Redis holds a few hundred at most).
async fn key_names(url: &str) -> Vec<String> {
    let Ok(client) = redis::Client::open(url) else {
        return Vec::new();
    };
    let Ok(mut c) = client.get_multiplexed_async_connection().await else {
        return Vec::new();
    };
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut c)
        .await
        .unwrap_or_default();
    keys.sort();
    keys
}

/// Every replica answering, with Redis up and admitting through it, and PostgreSQL up. (Not the
/// health `status`: it stays `degraded` while the refusals of the fault weigh in the error rate.)
async fn all_well(fleet: &Fleet) -> bool {
    for i in 0..fleet.replicas.len() {
        let Some(h) = fleet.health(i).await else {
            return false;
        };
        let c = &h["components"];
        if c["admission"]["mode"] != "shared"
            || c["redis"]["status"] != "up"
            || c["postgres"]["status"] != "up"
        {
            return false;
        }
    }
    true
}

fn pids_of(fleet: &Fleet) -> Vec<Option<u32>> {
    (0..fleet.replicas.len()).map(|i| fleet.pid(i)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "the soak: run through bench/soak"]
async fn soak() {
    let _one = serial().await;
    let minutes = env_f64("SOAK_MINUTES", 30.0);
    let fault_every = Duration::from_secs_f64(env_f64("SOAK_FAULT_EVERY_S", 120.0));
    let total = Duration::from_secs_f64(minutes * 60.0);
    let bucket = if minutes >= 10.0 {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(60)
    };

    let pg = tokio::task::spawn_blocking(PgCluster::start).await.unwrap();
    let db = TestDb::create_on(&pg.url()).await;
    let mut redis = testkit::RedisServer::start();
    let proxy = TcpProxy::start(redis.port()).await;
    let opts = FleetOptions {
        llm_latency_ms: LLM_MS,
        ..FleetOptions::new(RedisTarget::Standalone(redis.url()), &db.url)
    }
    .env("FLEETGATE_LEASE_TTL_MS", LEASE_MS)
    .env("FLEETGATE_ADMISSION_HEARTBEAT_MS", HEARTBEAT_MS)
    .env("FLEETGATE_DATABASE_ACQUIRE_TIMEOUT_MS", 1500)
    .replica_env(0, "FLEETGATE_REDIS_URL", proxy.url());
    let mut fleet = Fleet::start("soak", opts).await;
    let keys_before_names = key_names(&redis.url()).await;
    let keys_before = dbsize(&redis);
    let load_before = load1();
    let load = Load::start(
        &client(),
        LoadOptions {
            bases: fleet.bases(),
            users: (0..USERS).map(|n| format!("soak-user-{n}")).collect(),
            ip_offset: 0,
            // A killed replica refuses connections: the client tries the next one.
            failover: true,
        },
    );
    fleet.sim.reset_stats().await;
    let start = Instant::now();
    let pids: Pids = Arc::new(Mutex::new(pids_of(&fleet)));
    let sampler = Sampler::start(fleet.sim.base.clone(), redis.url(), pids.clone(), start);
    let mut next_fault = fault_every;
    let mut faults: Vec<FaultRecord> = Vec::new();
    let mut killed = 1;
    while start.elapsed() < total {
        if start.elapsed() >= next_fault {
            let fault = FAULTS[faults.len() % FAULTS.len()];
            let at_s = start.elapsed().as_secs_f64();
            match fault {
                Fault::KillReplica => {
                    // Replicas 1 and 2 in turn: replica 0 keeps its process (its RSS is the
                    // long-running one) and its own way to Redis.
                    fleet.kill(killed).await;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    fleet.restart(killed).await;
                    *pids.lock().unwrap() = pids_of(&fleet);
                    killed = 3 - killed;
                }
                Fault::RedisRestart => redis.restart(),
                Fault::Partition => {
                    proxy.cut();
                    tokio::time::sleep(Duration::from_millis(2 * LEASE_MS)).await;
                    proxy.restore();
                }
                Fault::PostgresRestart => {
                    let pg = &pg;
                    tokio::task::block_in_place(|| pg.stop());
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    tokio::task::block_in_place(|| pg.start_again());
                }
            }
            let until_s = start.elapsed().as_secs_f64();
            let ended = Instant::now();
            // A fault may end before the replicas noticed it (a Redis restart takes
            // milliseconds): first the fleet unwell (5 s at most), then well again.
            while ended.elapsed() < Duration::from_secs(5) && all_well(&fleet).await {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let mut recovered = None;
            while ended.elapsed() < Duration::from_secs(60) {
                if all_well(&fleet).await {
                    recovered = Some(ended.elapsed());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            eprintln!("soak: {fault:?} at {at_s:.0} s, well again after {recovered:?}");
            faults.push(FaultRecord {
                at_s,
                until_s,
                fault,
                recovered,
            });
            next_fault += fault_every;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let keys_at_end = dbsize(&redis);
    let outcomes = load.stop().await;
    let samples = sampler.stop().await;
    let (_, llm_max) = fleet.sim.llm_in_flight().await;
    let stopped = Instant::now();

    // Slots and waiters left behind, and the key count back to its baseline (windows expire).
    let mut left = serde_json::Value::Null;
    while stopped.elapsed() < Duration::from_secs(60) {
        left = fleet.queue(0).await.unwrap_or_default();
        let waiting: u64 = ["chat", "research", "export"]
            .iter()
            .map(|c| left["waiting"][c].as_u64().unwrap_or(u64::MAX))
            .fold(0, u64::saturating_add);
        if left["slotsInUse"] == 0 && waiting == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let slots_left = left["slotsInUse"].as_u64();
    let mut keys_after = dbsize(&redis);
    while keys_after > keys_before && stopped.elapsed() < Duration::from_secs(180) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        keys_after = dbsize(&redis);
    }
    let keys_settled_after = stopped.elapsed();
    let keys_new: Vec<String> = key_names(&redis.url())
        .await
        .into_iter()
        .filter(|k| !keys_before_names.contains(k))
        .collect();

    let mut outcomes_summary = std::collections::BTreeMap::new();
    for o in &outcomes {
        *outcomes_summary.entry(outcome_key(o)).or_insert(0) += 1;
    }
    // A replica killed with SIGKILL drops the connections of the requests it was serving.
    let cut = outcomes.iter().filter(|o| o.status == 0).count();
    let unanswered = outcomes
        .iter()
        .filter(|o| o.status != 0 && !(o.ok() || o.retryable()))
        .count();
    let n_buckets = (total.as_secs_f64() / bucket.as_secs_f64()).ceil() as u32;
    let p99_buckets = (0..n_buckets)
        .map(|b| {
            let lo = start + bucket * b;
            let hi = lo + bucket;
            let mut ms: Vec<u128> = outcomes
                .iter()
                .filter(|o| o.status != 0 && o.started >= lo && o.started < hi)
                .map(|o| (o.finished - o.started).as_millis())
                .collect();
            let n = ms.len();
            let s = bucket.as_secs();
            (
                s * u64::from(b),
                s * u64::from(b + 1),
                quantile(&mut ms, 0.99),
                n,
            )
        })
        .collect();
    let run = Run {
        minutes,
        fault_every,
        total,
        llm_max,
        outcomes_summary,
        requests: outcomes.len(),
        unanswered,
        cut,
        slots_left,
        left,
        keys_before,
        keys_at_end,
        keys_after,
        keys_settled_after,
        keys_new,
        samples,
        faults,
        p99_buckets,
        latency: latency_buckets(&outcomes, start, total, LATENCY_BUCKET),
        load_before,
        load_after: load1(),
    };
    let report = run.markdown();
    eprintln!("{report}");
    if let Ok(path) = std::env::var("SOAK_REPORT") {
        std::fs::write(&path, &report).expect("write the soak report");
    }
    if let Ok(path) = std::env::var("SOAK_SERIES") {
        let json = serde_json::to_string_pretty(&run.series_json()).expect("series json");
        std::fs::write(&path, json).expect("write the soak series");
    }
    fleet.assert_all_running();
    assert!(llm_max <= 20, "the LLM saw {llm_max} at once");
    assert_eq!(unanswered, 0, "{:?}", run.outcomes_summary);
    assert_eq!(slots_left, Some(0), "slots left behind: {}", run.left);
}
