//! Admission queue figures against a dedicated redis-server:
//! 1. hand-off latency: from `release` on replica A to the waiter on replica B holding its permit;
//! 2. utilization: slot-time in use / (cap × elapsed) with a standing backlog;
//! 3. Redis round trips per granted waiter under a backlog of 200 (INFO commandstats), also with
//!    300 more waiters of one user held back by its own cap the whole time (they must cost the
//!    dispatch nothing).
//!
//! cargo bench -p limiter-core --bench queue [-- --handoffs 2000 --secs 10 --blocked 300]
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use limiter_core::{Admission, AdmissionConfig, Class, RedisConfig, RedisHandle};
use tokio::sync::watch;
use tokio::time::Instant;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn handle(url: &str) -> RedisHandle {
    RedisHandle::new(&RedisConfig {
        url: url.to_string(),
        prefix: "qb".into(),
        ..RedisConfig::default()
    })
    .unwrap()
}

/// Commands the server executed, by name (from INFO commandstats).
async fn commandstats(redis: &RedisHandle) -> std::collections::HashMap<String, u64> {
    let info: String = redis
        .cmd(redis::cmd("INFO").arg("commandstats"))
        .await
        .unwrap();
    info.lines()
        .filter_map(|l| {
            let l = l.strip_prefix("cmdstat_")?;
            let (name, rest) = l.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

async fn handoff(url: &str, n: usize) -> Vec<f64> {
    let cfg = AdmissionConfig {
        group: "handoff".into(),
        global_cap: 1,
        ..AdmissionConfig::default()
    };
    let a = Admission::start(handle(url), cfg.clone()).await.unwrap();
    let b = Admission::start(handle(url), cfg).await.unwrap();
    let far = || Instant::now() + Duration::from_secs(10);
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let holder = a.admit(b"a", Class::new(0), far()).await.unwrap();
        let (tx, mut rx) = watch::channel(0u32);
        let b2 = b.clone();
        let waiter = tokio::spawn(async move {
            let p = b2
                .admit_watched(b"b", Class::new(0), far(), tx)
                .await
                .unwrap();
            (Instant::now(), p)
        });
        rx.wait_for(|p| *p > 0).await.unwrap();
        let t0 = Instant::now();
        holder.release().await.unwrap();
        let (t1, permit) = waiter.await.unwrap();
        if i >= 50 {
            // the first ones warm connections and script caches
            lat.push((t1 - t0).as_secs_f64() * 1e6);
        }
        permit.release().await.unwrap();
    }
    lat.sort_by(|x, y| x.partial_cmp(y).unwrap());
    lat
}

/// A standing backlog of `clients` waiters over `replicas` replicas, each holding its slot for
/// `hold`, plus `blocked` waiters of one user that holds its cap throughout. Returns
/// (utilization, grants, evalsha per grant, all commands per grant).
async fn backlog(
    url: &str,
    replicas: usize,
    clients: usize,
    hold: Duration,
    secs: f64,
    blocked: usize,
) -> (f64, u64, f64, f64) {
    let cfg = AdmissionConfig {
        group: format!("backlog{clients}-{}-{blocked}", hold.as_millis()),
        global_cap: 20,
        user_cap: 2,
        max_queue: 10_000,
        max_queued_per_user: 10_000,
        ..AdmissionConfig::default()
    };
    let mut adms = Vec::new();
    for _ in 0..replicas {
        adms.push(Admission::start(handle(url), cfg.clone()).await.unwrap());
    }
    // The blocked user: its two slots held, its waiters queued before the window opens.
    let far_deadline = Instant::now() + Duration::from_secs(3600);
    let mut held = Vec::new();
    let mut blocked_waiters = Vec::new();
    if blocked > 0 {
        for _ in 0..2 {
            held.push(
                adms[0]
                    .admit(b"blocked", Class::new(0), far_deadline)
                    .await
                    .unwrap(),
            );
        }
        for i in 0..blocked {
            let adm = adms[i % replicas].clone();
            let (tx, mut rx) = watch::channel(0u32);
            blocked_waiters.push(tokio::spawn(async move {
                adm.admit_watched(b"blocked", Class::new(0), far_deadline, tx)
                    .await
            }));
            rx.wait_for(|p| *p > 0).await.unwrap();
        }
    }
    let busy_us = Arc::new(AtomicU64::new(0));
    let grants = Arc::new(AtomicU64::new(0));
    // Every grant, including those that drain the backlog after the window (their calls are in
    // the command counts too).
    let all_grants = Arc::new(AtomicU64::new(0));
    let probe = handle(url);
    let before = commandstats(&probe).await;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let adm = adms[c % replicas].clone();
        let (busy_us, grants, all_grants) = (
            Arc::clone(&busy_us),
            Arc::clone(&grants),
            Arc::clone(&all_grants),
        );
        tasks.push(tokio::spawn(async move {
            let user = format!("user{c}");
            while Instant::now() < end {
                let p = adm
                    .admit(
                        user.as_bytes(),
                        Class::new(0),
                        Instant::now() + Duration::from_secs(60),
                    )
                    .await
                    .unwrap();
                let got = Instant::now();
                all_grants.fetch_add(1, Ordering::Relaxed);
                if got >= end {
                    drop(p);
                    break;
                }
                tokio::time::sleep(hold).await;
                // Slot-time counted up to the end of the window only.
                let stop = Instant::now().min(end);
                busy_us.fetch_add((stop - got).as_micros() as u64, Ordering::Relaxed);
                grants.fetch_add(1, Ordering::Relaxed);
                p.release().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = (end - start).as_secs_f64();
    let after = commandstats(&probe).await;
    let delta = |name: &str| after.get(name).unwrap_or(&0) - before.get(name).unwrap_or(&0);
    // Client round trips are the EVALSHA calls (plus a SCRIPT LOAD per script and process) and
    // the INFO probes; everything else ran inside scripts.
    let client_calls = delta("evalsha") + delta("eval") + delta("script|load") + delta("script");
    let all: u64 = after
        .iter()
        .map(|(k, v)| v - before.get(k).unwrap_or(&0))
        .sum();
    let g = grants.load(Ordering::Relaxed);
    let total = all_grants.load(Ordering::Relaxed) as f64;
    let util = busy_us.load(Ordering::Relaxed) as f64 / 1e6 / (20.0 * elapsed);
    for w in blocked_waiters {
        w.abort();
    }
    drop(held);
    for a in adms {
        a.shutdown().await;
    }
    (util, g, client_calls as f64 / total, all as f64 / total)
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
    let handoffs = arg("--handoffs", 2000.0) as usize;
    let secs = arg("--secs", 10.0);
    let blocked = arg("--blocked", 300.0) as usize;
    let server = testkit::RedisServer::start();
    let url = server.url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let lat = handoff(&url, handoffs).await;
        println!("| hand-off release(A) → permit(B) | n | p50 µs | p90 µs | p99 µs | max µs |");
        println!("|---|---|---|---|---|---|");
        println!(
            "| pub/sub push, no polling | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            lat.len(),
            percentile(&lat, 0.5),
            percentile(&lat, 0.9),
            percentile(&lat, 0.99),
            lat[lat.len() - 1]
        );
        println!();
        println!("| backlog (waiters, replicas, hold; blocked waiters of a user at its cap) | grants | utilization (slot-time / cap×elapsed) | EVALSHA round trips per grant | all Redis commands per grant (incl. inside scripts) |");
        println!("|---|---|---|---|---|");
        for (clients, hold_ms, blocked) in [(200usize, 20u64, 0usize), (200, 100, 0), (200, 20, blocked)] {
            let (util, grants, evalsha, all) =
                backlog(&url, 4, clients, Duration::from_millis(hold_ms), secs, blocked).await;
            println!(
                "| {clients}, 4, {hold_ms} ms; {blocked} | {grants} | {:.1}% | {evalsha:.2} | {all:.1} |",
                util * 100.0
            );
        }
    });
}
