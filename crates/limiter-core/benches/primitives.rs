//! Decisions per second of the sliding window and of lease acquire+release at concurrency 1, 16
//! and 64, next to `redis-benchmark` running EVALSHA of the same script at the same concurrency, in
//! the same run, against a dedicated redis-server this bench starts.
//!
//! cargo bench -p limiter-core --bench primitives [-- --secs 3 --rounds 3]
//!
//! Ours: one multiplexed connection per process (concurrent calls are pipelined on it).
//! redis-benchmark: C connections, one request in flight on each.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use limiter_core::scripts::SLIDING_WINDOW;
use limiter_core::{
    Acquire, LeaseManager, LeaseScope, RedisConfig, RedisHandle, SlidingWindow, WindowPolicy,
};
use rand::Rng;

const KEYS: u32 = 10_000;
const LIMIT: u32 = 100;
const WINDOW_MS: u64 = 60_000;

struct Run {
    ops_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[idx])
}

async fn drive<F, Fut>(concurrency: usize, secs: f64, op: F) -> Run
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let op = Arc::clone(&op);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            while Instant::now() < deadline {
                let t = Instant::now();
                op().await;
                lat.push(t.elapsed().as_micros() as u32);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    Run {
        ops_per_sec: all.len() as f64 / elapsed,
        p50_us: percentile(&all, 0.5),
        p99_us: percentile(&all, 0.99),
    }
}

/// `redis-benchmark` EVALSHA of the sliding-window script: requests/s and p50/p99 (us).
fn redis_benchmark(port: u16, concurrency: usize, secs: f64, sha: &str, ceiling_rps: f64) -> Run {
    // Enough requests to run about `secs` at the expected ceiling.
    let n = ((ceiling_rps * secs) as u64).max(20_000);
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-c", &concurrency.to_string(), "-n", &n.to_string()])
        .args(["-r", &KEYS.to_string(), "--csv"])
        .args(["EVALSHA", sha, "1", "bench:win:api:{__rand_int__}"])
        .args([LIMIT.to_string(), WINDOW_MS.to_string()])
        .output()
        .expect("redis-benchmark must be installed");
    let text = String::from_utf8_lossy(&out.stdout);
    // CSV: "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let line = text
        .lines()
        .find(|l| l.starts_with("\"EVALSHA"))
        .unwrap_or_else(|| panic!("unexpected redis-benchmark output: {text}"));
    let f: Vec<f64> = line
        .split(',')
        .skip(1)
        .map(|s| s.trim_matches('"').parse().unwrap_or(0.0))
        .collect();
    Run {
        ops_per_sec: f[0],
        p50_us: f[3] * 1000.0,
        p99_us: f[5] * 1000.0,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn spread(v: &[f64]) -> String {
    let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = v.iter().cloned().fold(0.0, f64::max);
    format!("{:.0}–{:.0}", min, max)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: f64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let secs = arg("--secs", 3.0);
    let rounds = arg("--rounds", 3.0) as usize;

    let server = testkit::RedisServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let _rt = rt.enter();
    let redis = RedisHandle::new(&RedisConfig {
        url: server.url(),
        prefix: "bench".into(),
        ..RedisConfig::default()
    })
    .unwrap();
    let sha = SLIDING_WINDOW.sha1().to_string();
    let load = Command::new("redis-cli")
        .args([
            "-p",
            &server.port().to_string(),
            "SCRIPT",
            "LOAD",
            SLIDING_WINDOW.source(),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&load.stdout).trim(), sha);

    println!(
        "| scenario | c | ours ops/s (median, spread) | ours p50 / p99 µs | redis-benchmark EVALSHA ops/s | its p50 / p99 µs | ratio ours / redis-benchmark |"
    );
    println!("|---|---|---|---|---|---|---|");
    for c in [1usize, 16, 64] {
        let (mut ours, mut theirs, mut ours_lat, mut their_lat) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let w = SlidingWindow::new(
                redis.clone(),
                WindowPolicy::new("api", LIMIT, Duration::from_millis(WINDOW_MS)),
            )
            .unwrap();
            let r = rt.block_on(drive(c, secs, move || {
                let w = w.clone();
                async move {
                    let key = rand::rng().random_range(0..KEYS).to_string();
                    w.check(key.as_bytes()).await.unwrap();
                }
            }));
            let b = redis_benchmark(server.port(), c, secs, &sha, r.ops_per_sec);
            ours.push(r.ops_per_sec);
            ours_lat.push((r.p50_us, r.p99_us));
            theirs.push(b.ops_per_sec);
            their_lat.push((b.p50_us, b.p99_us));
        }
        let (o, t) = (median(ours.clone()), median(theirs.clone()));
        let ol = ours_lat[rounds / 2];
        let tl = their_lat[rounds / 2];
        println!(
            "| sliding window (exact) | {c} | {o:.0} ({}) | {:.0} / {:.0} | {t:.0} ({}) | {:.0} / {:.0} | {:.2}× |",
            spread(&ours),
            ol.0,
            ol.1,
            spread(&theirs),
            tl.0,
            tl.1,
            o / t
        );
    }

    for c in [1usize, 16, 64] {
        let mut pairs = Vec::new();
        let mut lat = Vec::new();
        for _ in 0..rounds {
            let m = LeaseManager::new(redis.clone(), "adm", Duration::from_secs(15)).unwrap();
            let r = rt.block_on(drive(c, secs, move || {
                let m = m.clone();
                async move {
                    let user = format!("user:{}", rand::rng().random_range(0..1000));
                    let scopes = [LeaseScope::new(user, 2), LeaseScope::new("global", 1000)];
                    if let Acquire::Granted(l) = m.try_acquire(&scopes).await.unwrap() {
                        l.release().await.unwrap();
                    }
                }
            }));
            pairs.push(r.ops_per_sec);
            lat.push((r.p50_us, r.p99_us));
        }
        let l = lat[rounds / 2];
        println!(
            "| lease acquire+release pairs | {c} | {:.0} ({}) | {:.0} / {:.0} | — | — | — |",
            median(pairs.clone()),
            spread(&pairs),
            l.0,
            l.1
        );
    }
}
