//! The soak: not a CI test (ignored; `bench/soak` runs it). Steady load from 60 users on three
//! replicas for `SOAK_MINUTES` (30), with a fault every `SOAK_FAULT_EVERY_S` (120) in turn: a
//! replica killed (SIGKILL) and started again, Redis restarted empty, replica 0 cut off from Redis
//! (a TCP proxy) for twice the lease TTL, PostgreSQL stopped at once and started again. Redis,
//! PostgreSQL (a cluster initdb'd in a temporary directory) and the simulator are the soak's own.
//!
//! It reports (Markdown, on stderr and into `SOAK_REPORT` if set): the LLM's recorded maximum in
//! flight over the whole run; each replica's RSS and Redis `used_memory`, sampled every 10 s, as
//! the spread from the first sixth of the run to its end; Redis's key count before the load,
//! at its end and once the windows' keys have expired; slots and waiters left once the load
//! stopped; per fault the time until every replica is shared again; and p99 latency
//! per bucket (5 minutes; 1 minute for runs under 10 minutes).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use testkit::proxy::TcpProxy;

use crate::harness::load::{Outcome, summary};
use crate::harness::{
    Fleet, FleetOptions, Load, LoadOptions, PgCluster, RedisTarget, TestDb, client, serial,
};

const LLM_MS: u64 = 500;
const LEASE_MS: u64 = 6000;
const HEARTBEAT_MS: u64 = 2000;
const SAMPLE_EVERY: Duration = Duration::from_secs(10);

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

/// One sample: seconds since the start, each replica's RSS (kB), Redis used_memory, key count.
#[derive(Debug, Clone)]
struct Sample {
    at_s: f64,
    rss_kb: Vec<u64>,
    used_memory: u64,
    keys: u64,
}

fn rss_kb(pid: Option<u32>) -> u64 {
    let Some(pid) = pid else { return 0 };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn info_field(redis: &testkit::RedisServer, section: &str, field: &str) -> u64 {
    redis
        .command(&format!("INFO {section}"))
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn dbsize(redis: &testkit::RedisServer) -> u64 {
    redis
        .command("DBSIZE")
        .trim()
        .trim_start_matches(':')
        .parse()
        .unwrap_or(0)
}

fn sample(fleet: &Fleet, redis: &testkit::RedisServer, start: Instant) -> Sample {
    Sample {
        at_s: start.elapsed().as_secs_f64(),
        rss_kb: (0..fleet.replicas.len())
            .map(|i| rss_kb(fleet.pid(i)))
            .collect(),
        used_memory: info_field(redis, "memory", "used_memory"),
        keys: dbsize(redis),
    }
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

/// (min, max, spread as (max - min) / min in %) of `values`.
fn spread(values: &[u64]) -> (u64, u64, f64) {
    let min = values.iter().copied().min().unwrap_or(0);
    let max = values.iter().copied().max().unwrap_or(0);
    let pct = if min == 0 {
        0.0
    } else {
        (max - min) as f64 * 100.0 / min as f64
    };
    (min, max, pct)
}

fn p99(mut ms: Vec<u128>) -> u128 {
    if ms.is_empty() {
        return 0;
    }
    ms.sort_unstable();
    ms[(ms.len() * 99).div_ceil(100).saturating_sub(1)]
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
    let keys_before = dbsize(&redis);
    let load = Load::start(
        &client(),
        LoadOptions {
            bases: fleet.bases(),
            users: (0..60).map(|n| format!("soak-user-{n}")).collect(),
            ip_offset: 0,
            // A killed replica refuses connections: the client tries the next one.
            failover: true,
        },
    );
    fleet.sim.reset_stats().await;
    let start = Instant::now();
    let mut samples = vec![sample(&fleet, &redis, start)];
    let mut next_sample = SAMPLE_EVERY;
    let mut next_fault = fault_every;
    let mut faults: Vec<(f64, Fault, Option<Duration>)> = Vec::new();
    let mut killed = 1;
    while start.elapsed() < total {
        if start.elapsed() >= next_fault {
            let fault = FAULTS[faults.len() % FAULTS.len()];
            let at = start.elapsed().as_secs_f64();
            match fault {
                Fault::KillReplica => {
                    // Replicas 1 and 2 in turn: replica 0 keeps its process (its RSS is the
                    // long-running one) and its own way to Redis.
                    fleet.kill(killed).await;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    fleet.restart(killed).await;
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
            eprintln!("soak: {fault:?} at {at:.0} s, well again after {recovered:?}");
            faults.push((at, fault, recovered));
            next_fault += fault_every;
        }
        if start.elapsed() >= next_sample {
            samples.push(sample(&fleet, &redis, start));
            next_sample += SAMPLE_EVERY;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let keys_at_end = dbsize(&redis);
    let outcomes = load.stop().await;
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

    let mut report = String::new();
    let w = &mut report;
    let _ = writeln!(
        w,
        "Soak: {minutes} min, a fault every {:.0} s, 60 users on 3 replicas, LLM {LLM_MS} ms, \
         lease TTL {LEASE_MS} ms, heartbeat TTL {HEARTBEAT_MS} ms.\n",
        fault_every.as_secs_f64()
    );
    let _ = writeln!(
        w,
        "- LLM calls at once, most over the run: **{llm_max}** (cap 20)"
    );
    let _ = writeln!(
        w,
        "- requests: {} ({:?})",
        outcomes.len(),
        summary(&outcomes)
    );
    // A replica killed with SIGKILL drops the connections of the requests it was serving.
    let cut = outcomes.iter().filter(|o| o.status == 0).count();
    let unanswered = outcomes
        .iter()
        .filter(|o| o.status != 0 && !(o.ok() || o.retryable()))
        .count();
    let _ = writeln!(
        w,
        "- answered, neither served nor refused with Retry-After: {unanswered}; connection lost \
         (in flight on a killed replica): {cut}"
    );
    let _ = writeln!(
        w,
        "- slots in use once the load stopped: {slots_left:?} (queue {left})"
    );
    let _ = writeln!(
        w,
        "- Redis keys: {keys_before} before the load, {keys_at_end} at its end, {keys_after} \
         {:.0} s after it stopped",
        keys_settled_after.as_secs_f64()
    );
    let from = total.as_secs_f64() / 6.0;
    let steady: Vec<&Sample> = samples.iter().filter(|s| s.at_s >= from).collect();
    let _ = writeln!(
        w,
        "- from {from:.0} s to the end ({} samples every {} s):",
        steady.len(),
        SAMPLE_EVERY.as_secs()
    );
    for i in 0..fleet.replicas.len() {
        let (min, max, pct) = spread(&steady.iter().map(|s| s.rss_kb[i]).collect::<Vec<_>>());
        let note = if i == 0 {
            "never restarted"
        } else {
            "restarted by the kill faults"
        };
        let _ = writeln!(
            w,
            "  - replica {i} RSS {min}–{max} kB, spread {pct:.1} % ({note})"
        );
    }
    let (min, max, pct) = spread(&steady.iter().map(|s| s.used_memory).collect::<Vec<_>>());
    let _ = writeln!(
        w,
        "  - Redis used_memory {min}–{max} B, spread {pct:.1} % (emptied by each Redis restart)"
    );
    let (min, max, _) = spread(&steady.iter().map(|s| s.keys).collect::<Vec<_>>());
    let _ = writeln!(w, "  - Redis keys {min}–{max}");
    let _ = writeln!(
        w,
        "- faults (at, kind, every replica shared again with Redis and PostgreSQL up, after the \
         fault ended; about 5 s means no replica was seen otherwise in the 5 s watched first):"
    );
    for (at, f, rec) in &faults {
        let _ = writeln!(w, "  - {at:.0} s {f:?}: {rec:?}");
    }
    let _ = writeln!(
        w,
        "- p99 latency of answered requests per {} s bucket:",
        bucket.as_secs()
    );
    let answered: Vec<&Outcome> = outcomes.iter().filter(|o| o.status != 0).collect();
    let buckets = (total.as_secs_f64() / bucket.as_secs_f64()).ceil() as u32;
    for b in 0..buckets {
        let lo = start + bucket * b;
        let hi = lo + bucket;
        let ms: Vec<u128> = answered
            .iter()
            .filter(|o| o.started >= lo && o.started < hi)
            .map(|o| (o.finished - o.started).as_millis())
            .collect();
        let n = ms.len();
        let _ = writeln!(
            w,
            "  - {}–{} s: p99 {} ms ({n} requests)",
            bucket.as_secs() * u64::from(b),
            bucket.as_secs() * u64::from(b + 1),
            p99(ms)
        );
    }
    eprintln!("{report}");
    if let Ok(path) = std::env::var("SOAK_REPORT") {
        std::fs::write(&path, &report).expect("write the soak report");
    }
    fleet.assert_all_running();
    assert!(llm_max <= 20, "the LLM saw {llm_max} at once");
    assert_eq!(unanswered, 0, "{:?}", summary(&outcomes));
    assert_eq!(slots_left, Some(0), "slots left behind: {left}");
}
