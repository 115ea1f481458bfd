//! The soak's time series: every [`SAMPLE_EVERY`], what the simulator's LLM ran at once (now,
//! and the most at any instant since the previous sample, from its call log), each replica's
//! RSS, Redis `used_memory` and key count, and the machine's load; and, from the requests'
//! outcomes once the load stopped, latency (p50, p99) and outcomes per [`LATENCY_BUCKET`].
//!
//! The sampler is its own task so the series has no holes while the main loop waits out a fault
//! (a partition lasts twice the lease TTL, a PostgreSQL restart up to a minute with its recovery).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use upstream_sim::calls::{LlmCall, max_concurrent};

use crate::harness::load::Outcome;

pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Longer than the samples: 5 s holds about a hundred requests, too few for a p99.
pub const LATENCY_BUCKET: Duration = Duration::from_secs(10);

/// One sample, taken `at_s` seconds after the load started.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at_s: f64,
    /// LLM calls running at the simulator when sampled.
    pub llm_now: Option<u64>,
    /// The most LLM calls running at once at any instant since the previous sample.
    pub llm_max: Option<u64>,
    /// Per replica, VmRSS in kB (`None` while it is down).
    pub rss_kb: Vec<Option<u64>>,
    /// `None` while Redis is down.
    pub used_memory: Option<u64>,
    pub keys: Option<u64>,
    pub load1: Option<f64>,
}

/// The replicas' current process ids; the main loop updates them when it restarts one.
pub type Pids = Arc<Mutex<Vec<Option<u32>>>>;

pub struct Sampler {
    stop: watch::Sender<bool>,
    task: JoinHandle<Vec<Sample>>,
}

impl Sampler {
    pub fn start(sim_base: String, redis_url: String, pids: Pids, start: Instant) -> Sampler {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let client = crate::harness::client();
            let redis = redis::Client::open(redis_url).expect("redis url");
            let mut samples = Vec::new();
            // The simulator's clock when the previous sample was taken.
            let mut since_ms = None;
            let mut tick = tokio::time::interval_at(
                tokio::time::Instant::from_std(start) + SAMPLE_EVERY,
                SAMPLE_EVERY,
            );
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => return samples,
                }
                let at_s = start.elapsed().as_secs_f64();
                let (llm_now, llm_max, sim_ms) = llm(&client, &sim_base, since_ms).await;
                since_ms = sim_ms.or(since_ms);
                let pids = pids.lock().unwrap().clone();
                let (used_memory, keys) = redis_sizes(&redis).await;
                samples.push(Sample {
                    at_s,
                    llm_now,
                    llm_max,
                    rss_kb: pids.into_iter().map(rss_kb).collect(),
                    used_memory,
                    keys,
                    load1: load1(),
                });
            }
        });
        Sampler { stop, task }
    }

    pub async fn stop(self) -> Vec<Sample> {
        let _ = self.stop.send(true);
        self.task.await.expect("the sampler panicked")
    }
}

/// (in flight now, most at once since `since_ms`, the simulator's clock) from `/stats`.
async fn llm(
    client: &reqwest::Client,
    base: &str,
    since_ms: Option<u64>,
) -> (Option<u64>, Option<u64>, Option<u64>) {
    let stats: Option<Value> = async {
        let r = client
            .get(format!("{base}/stats"))
            .timeout(Duration::from_secs(4))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }
    .await;
    let Some(s) = stats else {
        return (None, None, None);
    };
    let now_ms = s["uptime_ms"].as_u64();
    let in_flight = s["groups"]["llm"]["in_flight"].as_u64();
    let calls: Vec<LlmCall> = serde_json::from_value(s["llm_calls"].clone()).unwrap_or_default();
    let max = match (since_ms, now_ms) {
        (Some(from), Some(to)) => Some(max_concurrent(&calls, from, to, |_| true) as u64),
        _ => in_flight,
    };
    (in_flight, max, now_ms)
}

async fn redis_sizes(redis: &redis::Client) -> (Option<u64>, Option<u64>) {
    let sizes = async {
        let mut c = redis.get_multiplexed_async_connection().await.ok()?;
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut c)
            .await
            .ok()?;
        let used = info
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok());
        let keys: Option<u64> = redis::cmd("DBSIZE").query_async(&mut c).await.ok();
        Some((used, keys))
    };
    tokio::time::timeout(Duration::from_secs(2), sizes)
        .await
        .ok()
        .flatten()
        .unwrap_or((None, None))
}

fn rss_kb(pid: Option<u32>) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{}/status", pid?))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

pub fn load1() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The `q`-quantile (nearest rank) of `ms`.
pub fn quantile(ms: &mut [u128], q: f64) -> Option<u128> {
    if ms.is_empty() {
        return None;
    }
    ms.sort_unstable();
    let rank = ((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len());
    Some(ms[rank - 1])
}

/// Latency and outcomes of the requests that started within each `bucket` from `start` on.
pub fn latency_buckets(
    outcomes: &[Outcome],
    start: Instant,
    total: Duration,
    bucket: Duration,
) -> Vec<Value> {
    let n = (total.as_secs_f64() / bucket.as_secs_f64()).ceil() as u32;
    (0..n)
        .map(|b| {
            let lo = start + bucket * b;
            let hi = lo + bucket;
            let inside: Vec<&Outcome> = outcomes
                .iter()
                .filter(|o| o.started >= lo && o.started < hi)
                .collect();
            let mut ms: Vec<u128> = inside
                .iter()
                .filter(|o| o.status != 0)
                .map(|o| (o.finished - o.started).as_millis())
                .collect();
            json!({
                "t": (bucket * b).as_secs_f64(),
                "answered": ms.len(),
                "ok": inside.iter().filter(|o| o.ok()).count(),
                "refused": inside.iter().filter(|o| o.status != 0 && !o.ok()).count(),
                "lost": inside.iter().filter(|o| o.status == 0).count(),
                "p50_ms": quantile(&mut ms, 0.50),
                "p99_ms": quantile(&mut ms, 0.99),
            })
        })
        .collect()
}

pub fn samples_json(samples: &[Sample]) -> Vec<Value> {
    samples
        .iter()
        .map(|s| {
            json!({
                "t": s.at_s,
                "llm_in_flight": s.llm_now,
                "llm_max": s.llm_max,
                "rss_kb": s.rss_kb,
                "used_memory": s.used_memory,
                "keys": s.keys,
                "load1": s.load1,
            })
        })
        .collect()
}
