//! The health report with a million user profiles: what `check_system_load()` costs with and
//! without the usage-day index, and what a flood of probes costs PostgreSQL now that one report a
//! second is shared (calls counted by PostgreSQL itself, `pg_stat_user_functions`).
//!
//! ```text
//! cargo bench -p api --bench health_load -- [--profiles 1000000] [--active 10000] [--secs 5] [--probes 128]
//! ```
//!
//! Makes a scratch database on the machine's PostgreSQL (`FLEETGATE_TEST_DATABASE_URL`, function
//! call counting on for it alone), fills `user_profiles` (usage days spread over a year, `--active`
//! of them active today), times 20 calls of `check_system_load()` with the index and 20 with it
//! dropped (the table as it was before the migration), then serves a replica in-process (echo
//! pipeline, Redis at `--redis`) and sends `--probes` concurrent clients at
//! `GET /api/system-health` for `--secs`. Prints one JSON line per measurement.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::config::Config;
use api::config::secret::Secret;
use sqlx::{Connection, Executor, Row};

const SECRET: &str = "bench-secret-0123456789abcdef0123456789";

struct Args {
    redis: String,
    profiles: u64,
    active: u64,
    secs: u64,
    probes: usize,
}

fn parse_args() -> Args {
    let args: Vec<String> = std::env::args().collect();
    let get = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    Args {
        redis: get("--redis").unwrap_or_else(|| "redis://127.0.0.1:6379".into()),
        profiles: get("--profiles")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000),
        active: get("--active")
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000),
        secs: get("--secs").and_then(|v| v.parse().ok()).unwrap_or(5),
        probes: get("--probes").and_then(|v| v.parse().ok()).unwrap_or(128),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn time_load_check(conn: &mut sqlx::PgConnection) -> (f64, f64) {
    for _ in 0..2 {
        conn.execute("SELECT * FROM check_system_load()")
            .await
            .unwrap();
    }
    let mut ms: Vec<f64> = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        conn.execute("SELECT * FROM check_system_load()")
            .await
            .unwrap();
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    (percentile(&ms, 0.5), percentile(&ms, 0.9))
}

fn main() {
    let a = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(a));
}

async fn run(a: Args) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let admin = std::env::var("FLEETGATE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("fg_health_{}", std::process::id());
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    for sql in [
        format!("DROP DATABASE IF EXISTS {name}"),
        format!("CREATE DATABASE {name}"),
        format!("ALTER DATABASE {name} SET track_functions = 'pl'"),
    ] {
        conn.execute(sqlx::AssertSqlSafe(sql)).await.unwrap();
    }
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    let url = format!("{base}/{name}");

    let mut cfg = Config::default();
    cfg.redis.url = Secret::new(a.redis.clone());
    cfg.redis.prefix = format!("bench-health-{}", std::process::id());
    cfg.database.url = Secret::new(url.clone());
    cfg.database.max_connections = 10;
    cfg.auth.jwt_secret = Some(Secret::new(SECRET));
    cfg.server.pipeline = "echo".into();
    let quota = api::limits::quota::QuotaStore::connect_lazy(&cfg).unwrap();
    quota.migrate().await.unwrap();

    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    let fill = Instant::now();
    sqlx::query(
        "INSERT INTO user_profiles (user_id, queries_used, usage_day)
         SELECT 'user-' || n,
                CASE WHEN n <= $2 THEN 1 + n % 3 ELSE n % 3 END,
                CASE WHEN n <= $2 THEN (now() AT TIME ZONE 'UTC')::date
                     ELSE (now() AT TIME ZONE 'UTC')::date - 1 - (n % 365)::int END
         FROM generate_series(1, $1) AS n",
    )
    .bind(a.profiles as i64)
    .bind(a.active as i64)
    .execute(&mut db)
    .await
    .unwrap();
    db.execute("ANALYZE user_profiles").await.unwrap();
    eprintln!("filled {} profiles in {:?}", a.profiles, fill.elapsed());

    let (p50, p90) = time_load_check(&mut db).await;
    println!(
        "{}",
        serde_json::json!({"measure": "check_system_load", "index": true, "profiles": a.profiles, "active": a.active, "p50_ms": p50, "p90_ms": p90})
    );
    db.execute("DROP INDEX user_profiles_active_day")
        .await
        .unwrap();
    db.execute("ANALYZE user_profiles").await.unwrap();
    let (p50, p90) = time_load_check(&mut db).await;
    println!(
        "{}",
        serde_json::json!({"measure": "check_system_load", "index": false, "profiles": a.profiles, "active": a.active, "p50_ms": p50, "p90_ms": p90})
    );
    db.execute(
        "CREATE INDEX user_profiles_active_day ON user_profiles (usage_day) WHERE queries_used > 0",
    )
    .await
    .unwrap();
    db.execute("ANALYZE user_profiles").await.unwrap();
    drop(db);

    // The flood, against a replica served in-process.
    let state = api::AppState::new(cfg, Arc::new(chat::EchoAssistant))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api::run(listener, state, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(a.probes)
        .build()
        .unwrap();
    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let until = started + Duration::from_secs(a.secs);
    let mut tasks = Vec::new();
    for _ in 0..a.probes {
        let (client, latencies, errors) = (client.clone(), latencies.clone(), errors.clone());
        let url = format!("http://{addr}/api/system-health");
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while Instant::now() < until {
                let t = Instant::now();
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.bytes().await;
                        mine.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    _ => {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
            latencies.lock().unwrap().extend(mine);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    // The replica's sessions have ended and reported their function calls.
    let mut calls = 0i64;
    for _ in 0..50 {
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        calls = sqlx::query(
            "SELECT coalesce(sum(calls), 0)::int8 AS n FROM pg_stat_user_functions
             WHERE funcname = 'check_system_load'",
        )
        .fetch_one(&mut c)
        .await
        .unwrap()
        .get("n");
        // The 44 calls of the timing above are counted too (same database).
        if calls > 44 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut l = latencies.lock().unwrap().clone();
    l.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({
            "measure": "health_flood",
            "profiles": a.profiles,
            "probes": a.probes,
            "secs": elapsed,
            "answered": l.len(),
            "errors": errors.load(std::sync::atomic::Ordering::Relaxed),
            "req_per_s": l.len() as f64 / elapsed,
            "p50_ms": percentile(&l, 0.5),
            "p99_ms": percentile(&l, 0.99),
            "check_system_load_calls": calls - 44,
            "calls_per_s": (calls - 44) as f64 / elapsed,
        })
    );
    conn.execute(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .await
    .unwrap();
}
