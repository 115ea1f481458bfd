//! Our side of the side-by-side benchmarks with peer libraries (driven by `bench/run`).
//!
//! One scenario per process, one JSON line on stdout, so the driver can alternate this runner
//! with the Node and Python peers against the same redis-server:
//!
//! ```text
//! cargo bench -p limiter-core --bench scenarios -- \
//!     --scenario window|lease|lease-flat|lease-try|lease-poll|deny|handoff-holder|handoff-waiter|script-sha|script-source \
//!     --concurrency N --secs S --redis URL --prefix P [--keys 10000] [--cap 20] [--n 200] [--retry 10]
//! ```
//!
//! - `window`: exact sliding window (limit 100 per 60 s) over `--keys` random clients.
//! - `window-pool`: the same script call, keys and arguments through a `deadpool-redis` pool of
//!   `--pool` connections (one command at a time each) instead of the one multiplexed
//!   connection: why the library multiplexes (README, "Why one multiplexed connection").
//! - `lease`: fleet-wide admission (`Admission`, global cap `--cap`, one user per task): admit
//!   waits in the queue when all slots are taken, then release; pairs per second.
//! - `lease-flat`: `lease` on a queue without per-user limits (user cap 0): redis-semaphore's
//!   semantics (one global cap), still queued in priority then arrival order, fenced.
//! - `lease-try`: `LeaseManager::try_acquire` + release with a cap no task ever hits.
//! - `lease-poll`: `LeaseManager` (the TTL semaphore without a queue, like redis-semaphore) at
//!   cap `--cap`: a refused task sleeps `--retry` ms (10, redis-semaphore's default) and tries
//!   again, as redis-semaphore's `acquire` does; then release. The like-for-like peer of 3a.
//! - `deny`: `CachedWindow` on one client already over its limit (5 per minute).
//! - `handoff-holder` / `handoff-waiter`: two processes; the holder keeps the only slot, the
//!   waiter queues for it, the holder releases after a random 2–12 ms; the waiter reports the
//!   wall-clock time from release to its permit (`SystemTime`, same machine, so comparable with
//!   the Node peer's `performance.timeOrigin + performance.now()`). The two sync through Redis
//!   lists on a dedicated connection (BLPOP), never on the measured path.
//!
//! One multiplexed `RedisHandle` per process: concurrent tasks pipeline on it.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use limiter_core::{
    Acquire, Admission, AdmissionConfig, CachedWindow, Class, LeaseManager, LeaseScope,
    RedisConfig, RedisHandle, SlidingWindow, WindowPolicy,
};
use rand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;

struct Args {
    scenario: String,
    concurrency: usize,
    secs: f64,
    redis: String,
    prefix: String,
    keys: u32,
    cap: u32,
    n: usize,
    retry_ms: u64,
    pool: usize,
}

fn parse_args() -> Args {
    let args: Vec<String> = std::env::args().collect();
    let get = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let num = |name: &str, default: f64| {
        get(name)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(default)
    };
    Args {
        scenario: get("--scenario").unwrap_or_else(|| "window".into()),
        concurrency: num("--concurrency", 1.0) as usize,
        secs: num("--secs", 3.0),
        redis: get("--redis").unwrap_or_else(|| "redis://127.0.0.1:6379".into()),
        prefix: get("--prefix").unwrap_or_else(|| "bench".into()),
        keys: num("--keys", 10_000.0) as u32,
        cap: num("--cap", 20.0) as u32,
        n: num("--n", 200.0) as usize,
        retry_ms: num("--retry", 10.0) as u64,
        pool: num("--pool", 16.0) as usize,
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize] as f64
}

/// Runs `op` in `concurrency` tasks for `secs` (after a short warm-up) and prints the JSON line.
/// `op` returns whether the operation counts (e.g. a denial in the deny scenario).
async fn drive<F, Fut>(a: &Args, op: F)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    // Warm-up: connections, script cache, allocator. Its calls are counted apart so the driver
    // can divide Redis's CPU time over the whole process life by every call made.
    let warm = Instant::now() + Duration::from_millis(300);
    let warm_ops = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..a.concurrency {
        let (op, warm_ops) = (Arc::clone(&op), Arc::clone(&warm_ops));
        tasks.push(tokio::spawn(async move {
            while Instant::now() < warm {
                op(i).await;
                warm_ops.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let counted = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(a.secs);
    let mut tasks = Vec::new();
    for i in 0..a.concurrency {
        let op = Arc::clone(&op);
        let counted = Arc::clone(&counted);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(200_000);
            while Instant::now() < deadline {
                let t = Instant::now();
                if op(i).await {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                // ns: local-cache answers take well under a microsecond.
                lat.push(t.elapsed().as_nanos() as u64);
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
    println!(
        "{{\"runner\":\"ours\",\"scenario\":\"{}\",\"c\":{},\"ops\":{},\"warm_ops\":{},\"counted\":{},\"secs\":{:.3},\"ops_per_sec\":{:.1},\"p50_us\":{:.3},\"p90_us\":{:.3},\"p99_us\":{:.3},\"p999_us\":{:.3}}}",
        a.scenario,
        a.concurrency,
        all.len(),
        warm_ops.load(Ordering::Relaxed),
        counted.load(Ordering::Relaxed),
        elapsed,
        all.len() as f64 / elapsed,
        percentile(&all, 0.5) / 1e3,
        percentile(&all, 0.9) / 1e3,
        percentile(&all, 0.99) / 1e3,
        percentile(&all, 0.999) / 1e3,
    );
}

fn handle(a: &Args) -> RedisHandle {
    RedisHandle::new(&RedisConfig {
        url: a.redis.clone(),
        prefix: a.prefix.clone(),
        ..RedisConfig::default()
    })
    .unwrap()
}

fn wall_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

async fn window(a: Args) {
    let w = SlidingWindow::new(
        handle(&a),
        WindowPolicy::new("api", 100, Duration::from_secs(60)),
    )
    .unwrap();
    let keys = a.keys;
    drive(&a, move |_| {
        let w = w.clone();
        async move {
            let key = rand::rng().random_range(0..keys).to_string();
            w.check(key.as_bytes()).await.unwrap().allowed
        }
    })
    .await;
}

async fn window_pool(a: Args) {
    let keys_of = handle(&a);
    let cfg = deadpool_redis::Config::from_url(a.redis.clone());
    let pool = cfg
        .builder()
        .unwrap()
        .max_size(a.pool)
        .runtime(deadpool_redis::Runtime::Tokio1)
        .build()
        .unwrap();
    let script = Arc::new(redis::Script::new(
        limiter_core::scripts::SLIDING_WINDOW.source(),
    ));
    let keys = a.keys;
    drive(&a, move |_| {
        let (pool, script, keys_of) = (pool.clone(), Arc::clone(&script), keys_of.clone());
        async move {
            let client = rand::rng().random_range(0..keys).to_string();
            let key = keys_of.keys().window("api", client.as_bytes());
            let mut conn = pool.get().await.unwrap();
            let reply: Vec<i64> = script
                .key(key)
                .arg(100u32)
                .arg(60_000u64)
                .invoke_async(&mut *conn)
                .await
                .unwrap();
            reply[0] == 1
        }
    })
    .await;
}

async fn deny(a: Args) {
    let w = SlidingWindow::new(
        handle(&a),
        WindowPolicy::new("api", 5, Duration::from_secs(60)),
    )
    .unwrap();
    let w = Arc::new(CachedWindow::new(w));
    // Over its limit before the clock starts: 5 admitted, the 6th denied (and cached).
    for _ in 0..6 {
        w.check(b"203.0.113.7").await.unwrap();
    }
    let from_cache = Arc::new(AtomicU64::new(0));
    let fc = Arc::clone(&from_cache);
    drive(&a, move |_| {
        let (w, fc) = (Arc::clone(&w), Arc::clone(&fc));
        async move {
            let (d, cached) = w.check(b"203.0.113.7").await.unwrap();
            if cached {
                fc.fetch_add(1, Ordering::Relaxed);
            }
            !d.allowed
        }
    })
    .await;
    eprintln!(
        "deny: {} answers from the local cache",
        from_cache.load(Ordering::Relaxed)
    );
}

/// `per_user`: the default per-user limits (cap 2, never reached with one user per task), or none.
async fn lease(a: Args, per_user: bool) {
    let defaults = AdmissionConfig::default();
    let cfg = AdmissionConfig {
        group: "bench".into(),
        global_cap: a.cap,
        max_queue: 10_000,
        user_cap: if per_user { defaults.user_cap } else { 0 },
        max_queued_per_user: if per_user {
            defaults.max_queued_per_user
        } else {
            0
        },
        ..defaults
    };
    let adm = Admission::start(handle(&a), cfg).await.unwrap();
    let users: Arc<Vec<String>> = Arc::new((0..a.concurrency).map(|i| format!("u{i}")).collect());
    let adm2 = adm.clone();
    drive(&a, move |i| {
        let (adm, users) = (adm2.clone(), Arc::clone(&users));
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            let p = adm
                .admit(users[i].as_bytes(), Class::new(0), deadline)
                .await
                .unwrap();
            p.release().await.unwrap()
        }
    })
    .await;
    adm.shutdown().await;
}

async fn lease_try(a: Args) {
    let m = LeaseManager::new(handle(&a), "bench", Duration::from_secs(15)).unwrap();
    let cap = a.cap;
    let users: Arc<Vec<String>> =
        Arc::new((0..a.concurrency).map(|i| format!("user:{i}")).collect());
    drive(&a, move |i| {
        let (m, users) = (m.clone(), Arc::clone(&users));
        async move {
            let scopes = [
                LeaseScope::new(users[i].clone(), 2),
                LeaseScope::new("global", cap),
            ];
            match m.try_acquire(&scopes).await.unwrap() {
                Acquire::Granted(l) => l.release().await.unwrap(),
                Acquire::Refused { .. } => false,
            }
        }
    })
    .await;
}

async fn lease_poll(a: Args) {
    let m = LeaseManager::new(handle(&a), "bench", Duration::from_secs(15)).unwrap();
    let (cap, retry) = (a.cap, Duration::from_millis(a.retry_ms));
    let users: Arc<Vec<String>> =
        Arc::new((0..a.concurrency).map(|i| format!("user:{i}")).collect());
    drive(&a, move |i| {
        let (m, users) = (m.clone(), Arc::clone(&users));
        async move {
            let scopes = [
                LeaseScope::new(users[i].clone(), 2),
                LeaseScope::new("global", cap),
            ];
            loop {
                match m.try_acquire(&scopes).await.unwrap() {
                    Acquire::Granted(l) => return l.release().await.unwrap(),
                    Acquire::Refused { .. } => tokio::time::sleep(retry).await,
                }
            }
        }
    })
    .await;
}

/// A dedicated connection for the BLPOP/RPUSH that keep holder and waiter in step.
async fn sync_conn(a: &Args) -> redis::aio::MultiplexedConnection {
    redis::Client::open(a.redis.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn blpop(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> String {
    let (_, v): (String, String) = redis::cmd("BLPOP")
        .arg(key)
        .arg(30)
        .query_async(conn)
        .await
        .unwrap();
    v
}

async fn rpush(conn: &mut redis::aio::MultiplexedConnection, key: &str, v: impl ToString) {
    let _: i64 = redis::cmd("RPUSH")
        .arg(key)
        .arg(v.to_string())
        .query_async(conn)
        .await
        .unwrap();
}

fn handoff_config() -> AdmissionConfig {
    AdmissionConfig {
        group: "handoff".into(),
        global_cap: 1,
        ..AdmissionConfig::default()
    }
}

async fn handoff_holder(a: Args) {
    let adm = Admission::start(handle(&a), handoff_config())
        .await
        .unwrap();
    let mut sync = sync_conn(&a).await;
    let k = |s: &str| format!("{}:sync:{s}", a.prefix);
    for i in 0..a.n {
        let far = Instant::now() + Duration::from_secs(30);
        let p = adm.admit(b"holder", Class::new(0), far).await.unwrap();
        rpush(&mut sync, &k("held"), i).await;
        blpop(&mut sync, &k("ready")).await;
        let pause = rand::rng().random_range(2_000..12_000);
        tokio::time::sleep(Duration::from_micros(pause)).await;
        let t0 = wall_us();
        p.release().await.unwrap();
        rpush(&mut sync, &k("released"), t0).await;
        // Same protocol as the Node peer (whose poller would otherwise lose the slot back to the
        // holder): the next round starts once the waiter has released.
        blpop(&mut sync, &k("done")).await;
    }
    adm.shutdown().await;
}

async fn handoff_waiter(a: Args) {
    let adm = Admission::start(handle(&a), handoff_config())
        .await
        .unwrap();
    let mut sync = sync_conn(&a).await;
    let k = |s: &str| format!("{}:sync:{s}", a.prefix);
    let mut lat = Vec::with_capacity(a.n);
    for _ in 0..a.n {
        blpop(&mut sync, &k("held")).await;
        let (tx, mut rx) = watch::channel(0u32);
        let adm2 = adm.clone();
        let waiter = tokio::spawn(async move {
            let far = Instant::now() + Duration::from_secs(30);
            let p = adm2
                .admit_watched(b"waiter", Class::new(0), far, tx)
                .await
                .unwrap();
            (wall_us(), p)
        });
        // Queued (position > 0): only now may the holder release.
        rx.wait_for(|p| *p > 0).await.unwrap();
        rpush(&mut sync, &k("ready"), 1).await;
        let (t1, p) = waiter.await.unwrap();
        let t0: i64 = blpop(&mut sync, &k("released")).await.parse().unwrap();
        lat.push((t1 - t0).max(0) as u64);
        p.release().await.unwrap();
        rpush(&mut sync, &k("done"), 1).await;
    }
    adm.shutdown().await;
    lat.sort_unstable();
    println!(
        "{{\"runner\":\"ours\",\"scenario\":\"handoff\",\"n\":{},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"max_us\":{}}}",
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.9),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(0)
    );
}

fn main() {
    let a = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        match a.scenario.as_str() {
            "window" => window(a).await,
            "window-pool" => window_pool(a).await,
            "deny" => deny(a).await,
            "lease" => lease(a, true).await,
            "lease-flat" => lease(a, false).await,
            "lease-try" => lease_try(a).await,
            "lease-poll" => lease_poll(a).await,
            "handoff-holder" => handoff_holder(a).await,
            "handoff-waiter" => handoff_waiter(a).await,
            // For redis-benchmark: the exact script text and SHA1 our window runs.
            "script-sha" => println!("{}", limiter_core::scripts::SLIDING_WINDOW.sha1()),
            "script-source" => print!("{}", limiter_core::scripts::SLIDING_WINDOW.source()),
            other => {
                eprintln!("unknown --scenario {other}");
                std::process::exit(2);
            }
        }
    });
}
