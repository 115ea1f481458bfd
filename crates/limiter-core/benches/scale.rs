//! How admission's cost grows with the queue, the fleet and the number of groups (`bench/scale`).
//!
//! ```text
//! cargo bench -p limiter-core --bench scale -- [--secs 5] [--cap 20] \
//!     [--waiters 100,1000,10000] [--replicas 3,30,100] [--groups 1,3]
//! ```
//!
//! Every configuration gets a fresh redis-server (a 3-master cluster for `groups`) started by
//! testkit, so nothing one run leaves behind is measured by the next. Replicas are `Admission`
//! instances in this process, each with its own `RedisHandle` (its own connections, heartbeats and
//! pub/sub subscription), as separate processes would have. Every waiter is its own user, so
//! only the global cap makes anyone wait; a granted waiter releases at once and queues again.
//!
//! Printed per configuration, one JSON line:
//! - `grants_per_sec` over the measured window (after a warm-up that fills the queue);
//! - `redis_us_per_grant`: Redis's CPU (`INFO cpu`, all nodes) over the window per grant,
//!   heartbeats and pub/sub included;
//! - `calls_over_1ms` / `longest_call_us`: Redis's slow log over the window (every node);
//! - `handoff_p50_us` / `handoff_p99_us`: the time a slot stands free: the k-th release issued in
//!   the window to the (k + cap)-th grant. With the queue never empty and one class, every release
//!   hands its slot to the queue's head, so in time order the grants follow the releases.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use limiter_core::{Admission, AdmissionConfig, Class, RedisConfig, RedisHandle};
use tokio::time::Instant;

struct Args {
    secs: f64,
    cap: u32,
    waiters: Vec<usize>,
    replicas: Vec<usize>,
    groups: Vec<usize>,
}

fn parse_args() -> Args {
    let args: Vec<String> = std::env::args().collect();
    let get = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let list = |name: &str, default: &str| -> Vec<usize> {
        get(name)
            .unwrap_or_else(|| default.into())
            .split(',')
            .filter_map(|v| v.trim().parse().ok())
            .collect()
    };
    Args {
        secs: get("--secs").and_then(|v| v.parse().ok()).unwrap_or(5.0),
        cap: get("--cap").and_then(|v| v.parse().ok()).unwrap_or(20),
        waiters: list("--waiters", "100,1000,10000"),
        replicas: list("--replicas", "3,30,100"),
        groups: list("--groups", "1,3"),
    }
}

/// One measured configuration.
struct Run {
    scenario: &'static str,
    waiters: usize,
    replicas: usize,
    groups: usize,
}

/// What the tasks record: when each grant arrived and each release was issued.
#[derive(Default)]
struct Events {
    grants: Vec<Instant>,
    releases: Vec<Instant>,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize] as f64
}

/// Redis's CPU seconds so far, summed over the nodes.
async fn redis_cpu(conns: &mut [redis::aio::MultiplexedConnection]) -> f64 {
    let mut total = 0.0;
    for c in conns.iter_mut() {
        let info: String = redis::cmd("INFO").arg("cpu").query_async(c).await.unwrap();
        for line in info.lines() {
            if let Some(v) = line
                .strip_prefix("used_cpu_user:")
                .or_else(|| line.strip_prefix("used_cpu_sys:"))
            {
                total += v.trim().parse::<f64>().unwrap_or(0.0);
            }
        }
    }
    total
}

/// Starts counting calls over 1 ms (the slow log, on every node).
async fn slowlog_start(conns: &mut [redis::aio::MultiplexedConnection]) {
    for c in conns.iter_mut() {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("slowlog-log-slower-than")
            .arg(1000)
            .arg("slowlog-max-len")
            .arg(10_000)
            .query_async(c)
            .await
            .unwrap();
        let _: () = redis::cmd("SLOWLOG")
            .arg("RESET")
            .query_async(c)
            .await
            .unwrap();
    }
}

/// Calls over 1 ms since `slowlog_start`, and the longest call's µs (0 if none), over the nodes.
async fn slowlog_read(conns: &mut [redis::aio::MultiplexedConnection]) -> (usize, u64) {
    let (mut n, mut longest) = (0, 0);
    for c in conns.iter_mut() {
        // Each entry: id, unix time, µs, the command, client address, client name.
        let entries: Vec<Vec<redis::Value>> = redis::cmd("SLOWLOG")
            .arg("GET")
            .arg(-1)
            .query_async(c)
            .await
            .unwrap();
        n += entries.len();
        for e in &entries {
            let us: u64 = redis::from_redis_value_ref(&e[2]).unwrap();
            longest = longest.max(us);
        }
    }
    (n, longest)
}

async fn plain_conns(urls: &[String]) -> Vec<redis::aio::MultiplexedConnection> {
    let mut out = Vec::new();
    for u in urls {
        let client = redis::Client::open(u.as_str()).unwrap();
        out.push(client.get_multiplexed_async_connection().await.unwrap());
    }
    out
}

/// Group names whose hash tags land on distinct masters of a 3-master cluster made by
/// `redis-cli --cluster create` (slots split in thirds: 0-5460, 5461-10922, 10923-16383).
async fn spread_groups(conn: &mut redis::aio::MultiplexedConnection, n: usize) -> Vec<String> {
    let mut taken = [false; 3];
    let mut out = Vec::new();
    for i in 0.. {
        if out.len() == n {
            break;
        }
        let name = format!("scale{i}");
        let slot: u32 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(format!("{{{name}}}"))
            .query_async(conn)
            .await
            .unwrap();
        let third = match slot {
            0..=5460 => 0,
            5461..=10922 => 1,
            _ => 2,
        };
        if n == 1 || !taken[third] {
            taken[third] = true;
            out.push(name);
        }
    }
    out
}

async fn measure(a: &Args, run: Run, redis: RedisConfig, urls: Vec<String>) {
    let mut stats = plain_conns(&urls).await;
    let groups = if run.groups > 1 {
        spread_groups(&mut stats[0], run.groups).await
    } else {
        vec!["scale0".to_string()]
    };
    // One instance per replica and group, each with its own handle (own connections).
    let mut replicas: Vec<Vec<Admission>> = Vec::new();
    for group in &groups {
        let cfg = AdmissionConfig {
            group: group.clone(),
            classes: vec!["only".into()],
            global_cap: a.cap,
            user_cap: 1,
            max_queue: (run.waiters as u32).saturating_mul(2).max(100),
            max_queued_per_user: 1,
            ..AdmissionConfig::default()
        };
        let mut of_group = Vec::new();
        for _ in 0..run.replicas {
            let handle = RedisHandle::new(&redis).unwrap();
            of_group.push(Admission::start(handle, cfg.clone()).await.unwrap());
        }
        replicas.push(of_group);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let events: Vec<Arc<Mutex<Events>>> = groups.iter().map(|_| Arc::default()).collect();
    let mut tasks = Vec::new();
    for (g, of_group) in replicas.iter().enumerate() {
        for i in 0..run.waiters {
            let adm = of_group[i % of_group.len()].clone();
            let (stop, events) = (Arc::clone(&stop), Arc::clone(&events[g]));
            let user = format!("u{i}");
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let far = Instant::now() + Duration::from_secs(600);
                    let Ok(p) = adm.admit(user.as_bytes(), Class::new(0), far).await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    {
                        let mut ev = events.lock().unwrap();
                        ev.grants.push(Instant::now());
                        ev.releases.push(Instant::now());
                    }
                    let _ = p.release().await;
                }
            }));
        }
    }
    // Warm-up: every waiter enqueued and the hand-off running.
    tokio::time::sleep(Duration::from_secs_f64(2.0 + run.waiters as f64 / 5_000.0)).await;
    slowlog_start(&mut stats).await;
    let cpu0 = redis_cpu(&mut stats).await;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(a.secs)).await;
    let t1 = Instant::now();
    let cpu1 = redis_cpu(&mut stats).await;
    let (slow_calls, longest_us) = slowlog_read(&mut stats).await;
    stop.store(true, Ordering::Relaxed);
    for t in &tasks {
        t.abort();
    }
    let mut grants = 0usize;
    let mut gaps = Vec::new();
    for ev in &events {
        let ev = ev.lock().unwrap();
        let mut gs: Vec<Instant> = ev
            .grants
            .iter()
            .copied()
            .filter(|t| *t >= t0 && *t < t1)
            .collect();
        let mut rs: Vec<Instant> = ev
            .releases
            .iter()
            .copied()
            .filter(|t| *t >= t0 && *t < t1)
            .collect();
        gs.sort_unstable();
        rs.sort_unstable();
        grants += gs.len();
        let cap = a.cap as usize;
        for (k, r) in rs.iter().enumerate() {
            if let Some(g) = gs.get(k + cap) {
                gaps.push(g.saturating_duration_since(*r).as_micros() as u64);
            }
        }
    }
    gaps.sort_unstable();
    let secs = (t1 - t0).as_secs_f64();
    let rps = grants as f64 / secs;
    println!(
        "{{\"scenario\":\"{}\",\"waiters\":{},\"replicas\":{},\"groups\":{},\"cap\":{},\"secs\":{:.2},\"grants\":{},\"grants_per_sec\":{:.1},\"redis_cores\":{:.3},\"redis_us_per_grant\":{:.2},\"handoff_p50_us\":{:.0},\"handoff_p99_us\":{:.0},\"calls_over_1ms\":{},\"longest_call_us\":{}}}",
        run.scenario,
        run.waiters,
        run.replicas,
        groups.len(),
        a.cap,
        secs,
        grants,
        rps,
        (cpu1 - cpu0) / secs,
        if grants > 0 {
            (cpu1 - cpu0) * 1e6 / grants as f64
        } else {
            0.0
        },
        percentile(&gaps, 0.5),
        percentile(&gaps, 0.99),
        slow_calls,
        longest_us,
    );
    for t in tasks {
        let _ = t.await;
    }
    for of_group in replicas {
        for adm in of_group {
            adm.shutdown().await;
        }
    }
}

fn main() {
    let a = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let standalone = |url: String| RedisConfig {
            url,
            prefix: "scale".into(),
            ..RedisConfig::default()
        };
        // Waiters: 3 replicas, a growing queue.
        for &w in &a.waiters {
            let server = testkit::RedisServer::start();
            let run = Run {
                scenario: "waiters",
                waiters: w,
                replicas: 3,
                groups: 1,
            };
            measure(&a, run, standalone(server.url()), vec![server.url()]).await;
        }
        // Replicas: 1,000 waiters, a growing fleet.
        for &r in &a.replicas {
            let server = testkit::RedisServer::start();
            let run = Run {
                scenario: "replicas",
                waiters: 1_000,
                replicas: r,
                groups: 1,
            };
            measure(&a, run, standalone(server.url()), vec![server.url()]).await;
        }
        // Groups on a 3-master cluster: 3 replicas and 300 waiters per group.
        for &g in &a.groups {
            let cluster = tokio::task::spawn_blocking(testkit::RedisCluster::start)
                .await
                .unwrap();
            let cfg = RedisConfig {
                cluster_nodes: cluster.urls(),
                prefix: "scale".into(),
                ..RedisConfig::default()
            };
            let run = Run {
                scenario: "groups",
                waiters: 300,
                replicas: 3,
                groups: g,
            };
            measure(&a, run, cfg, cluster.urls()).await;
        }
    });
}
