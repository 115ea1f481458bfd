//! Scenario 5 of `bench/run` (the HTTP chat route): what the chat route's limiter stack adds to a
//! request under HTTP load from `wrk`, against the same route without it.
//!
//! ```text
//! cargo bench -p api --bench http_stack -- --redis URL [--secs 3] [--rounds 3] [--conc 1,16,64]
//! ```
//!
//! Serves four routers of one service on loopback ports (echo pipeline, so only our own work is
//! measured), all with the same outer layers (request id, client IP, request counters, JWT auth):
//!
//! - `off`: `POST /api/chat` without any limiter (`api::bench_support`, never built by the service);
//! - `no-quota`: per-IP sliding window + admission slot (Redis), no quota spend;
//! - `full`: the service's own router: per-IP window + quota spend (PostgreSQL) + admission slot;
//! - `full-async-commit`: the same with `FLEETGATE_QUOTA_ASYNC_COMMIT` (each batch of quota spends
//!   commits with `SET LOCAL synchronous_commit = off`, not waiting for its WAL flush).
//!
//! Caps, windows and quota are set so that nothing is refused or queued: the figures are the cost
//! of the checks, not of waiting. Each request carries one of 1000 users' tokens and a random
//! client IP (`X-Forwarded-For`, trusted from 127.0.0.1), so keys spread as with real traffic.
//! Variants alternate within each round; one JSON line per run on stdout.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use api::bench_support::{Without, app_without};
use api::config::Config;
use api::config::secret::Secret;
use sqlx::{Connection, Executor};

// The service binary's allocator (src/main.rs), so the routers run as they do in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SECRET: &str = "bench-secret-0123456789abcdef0123456789";
const USERS: usize = 1000;

struct Args {
    redis: String,
    secs: u64,
    rounds: usize,
    conc: Vec<usize>,
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
        secs: get("--secs").and_then(|v| v.parse().ok()).unwrap_or(3),
        rounds: get("--rounds").and_then(|v| v.parse().ok()).unwrap_or(3),
        conc: get("--conc")
            .unwrap_or_else(|| "1,16,64".into())
            .split(',')
            .filter_map(|c| c.trim().parse().ok())
            .collect(),
    }
}

/// A scratch database (migrated by the caller).
async fn scratch_db(admin: &str, name: &str) -> String {
    let mut conn = sqlx::PgConnection::connect(admin).await.unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name}"
    )))
    .await
    .unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
    format!("{base}/{name}")
}

async fn drop_db(admin: &str, name: &str) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(admin).await {
        let _ = conn
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .await;
    }
}

fn config(a: &Args, db_url: String, prefix: &str) -> Config {
    let mut cfg = Config::default();
    cfg.redis.url = Secret::new(a.redis.clone());
    cfg.redis.prefix = prefix.into();
    cfg.database.url = Secret::new(db_url);
    cfg.database.max_connections = 16;
    cfg.auth.jwt_secret = Some(Secret::new(SECRET));
    cfg.trusted_proxies = vec!["127.0.0.1/32".into()];
    // Nothing refused, nothing queued: the cost of the checks, not of waiting.
    cfg.limits.chat_per_ip_per_min = 1000;
    cfg.admission.max_concurrent_per_user = 1000;
    cfg.admission.max_concurrent_global = 10_000;
    cfg.admission.max_queue = 10_000;
    cfg.quota.free_daily_queries = 1_000_000_000;
    cfg
}

async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

/// The wrk script: POST /api/chat, tokens and client IPs rotating per request.
fn wrk_script(dir: &std::path::Path) -> std::path::PathBuf {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 24 * 3600;
    let tokens: Vec<String> = (0..USERS)
        .map(|i| {
            let t = api::auth::jwt::sign_hs256(
                SECRET.as_bytes(),
                &serde_json::json!({"sub": format!("bench-user-{i}"), "exp": exp}),
            );
            format!("\"{t}\"")
        })
        .collect();
    let script = format!(
        r#"local tokens = {{{}}}
local n = 0
math.randomseed(os.time() + tonumber(tostring({{}}):sub(8), 16))
request = function()
  n = n + 1
  local ip = "10." .. math.random(0, 255) .. "." .. math.random(0, 255) .. "." .. math.random(1, 254)
  return wrk.format("POST", "/api/chat", {{
    ["Authorization"] = "Bearer " .. tokens[math.random(1, #tokens)],
    ["Content-Type"] = "application/json",
    ["X-Forwarded-For"] = ip,
  }}, '{{"message":"q"}}')
end
response = function(status, headers, body)
  if status ~= 200 then
    io.stderr:write("unexpected status " .. status .. "\n")
    wrk.thread:stop()
  end
end
"#,
        tokens.join(",")
    );
    let path = dir.join("chat.lua");
    std::fs::write(&path, script).unwrap();
    path
}

/// `2.34ms` → µs.
fn wrk_duration_us(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (v, unit) = s.split_at(split);
    let v: f64 = v.parse().ok()?;
    Some(match unit {
        "us" => v,
        "ms" => v * 1e3,
        "s" => v * 1e6,
        "m" => v * 60e6,
        _ => return None,
    })
}

struct WrkResult {
    rps: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    requests: u64,
    errors: bool,
}

async fn wrk(addr: SocketAddr, script: &std::path::Path, c: usize, secs: u64) -> WrkResult {
    let threads = c.clamp(1, 2);
    let out = tokio::process::Command::new("wrk")
        .args([
            "-t",
            &threads.to_string(),
            "-c",
            &c.to_string(),
            "-d",
            &format!("{secs}s"),
            "--latency",
            "-s",
            script.to_str().unwrap(),
            &format!("http://{addr}"),
        ])
        .output()
        .await
        .expect("wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut r = WrkResult {
        rps: 0.0,
        p50: 0.0,
        p90: 0.0,
        p99: 0.0,
        requests: 0,
        errors: !out.status.success()
            || stderr.contains("unexpected status")
            || text.contains("Non-2xx"),
    };
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["50%", v] => r.p50 = wrk_duration_us(v).unwrap_or(0.0),
            ["90%", v] => r.p90 = wrk_duration_us(v).unwrap_or(0.0),
            ["99%", v] => r.p99 = wrk_duration_us(v).unwrap_or(0.0),
            ["Requests/sec:", v] => r.rps = v.parse().unwrap_or(0.0),
            [n, "requests", "in", ..] => r.requests = n.parse().unwrap_or(0),
            _ => {}
        }
    }
    if r.errors {
        eprintln!("wrk reported errors:\n{text}\n{stderr}");
    }
    r
}

/// The p50 (µs) of 200 × `rounds` autocommit UPDATEs of one `user_profiles` row, one connection.
async fn bare_commit_p50(url: &str, rounds: usize) -> f64 {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    conn.execute(
        "INSERT INTO user_profiles (user_id) VALUES ('bench-bare-commit') ON CONFLICT DO NOTHING",
    )
    .await
    .unwrap();
    let update = "UPDATE user_profiles SET queries_used = queries_used + 1 WHERE user_id = 'bench-bare-commit'";
    for _ in 0..50 {
        conn.execute(update).await.unwrap();
    }
    let mut us: Vec<f64> = Vec::new();
    for _ in 0..200 * rounds.max(1) {
        let t = std::time::Instant::now();
        conn.execute(update).await.unwrap();
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    us.sort_by(f64::total_cmp);
    us[us.len() / 2]
}

fn main() {
    let a = parse_args();
    // The servers share the machine's two cores with wrk, Redis and PostgreSQL.
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
    let pid = std::process::id();
    let (db_sync, db_async) = (format!("fg_http_{pid}"), format!("fg_http_async_{pid}"));
    let url_sync = scratch_db(&admin, &db_sync).await;
    let url_async = scratch_db(&admin, &db_async).await;

    let mut variants: Vec<(&str, SocketAddr)> = Vec::new();
    let commit_url = url_sync.clone();
    let cfg = config(&a, url_sync, &format!("bench-http-{pid}"));
    let quota = api::limits::quota::QuotaStore::connect_lazy(&cfg).unwrap();
    quota.migrate().await.unwrap();
    let state = api::AppState::new(cfg, Arc::new(chat::EchoAssistant))
        .await
        .unwrap();
    let mut cfg_async = config(&a, url_async, &format!("bench-http-async-{pid}"));
    cfg_async.quota.async_commit = true;
    let quota_async = api::limits::quota::QuotaStore::connect_lazy(&cfg_async).unwrap();
    quota_async.migrate().await.unwrap();
    let state_async = api::AppState::new(cfg_async, Arc::new(chat::EchoAssistant))
        .await
        .unwrap();
    variants.push((
        "off",
        serve(app_without(state.clone(), Without::Limiters)).await,
    ));
    variants.push((
        "no-quota",
        serve(app_without(state.clone(), Without::Quota)).await,
    ));
    variants.push(("full", serve(api::app(state.clone())).await));
    variants.push(("full-async-commit", serve(api::app(state_async)).await));

    let dir = std::env::temp_dir().join(format!("fg-http-bench-{pid}"));
    std::fs::create_dir_all(&dir).unwrap();
    let script = wrk_script(&dir);

    // Warm-up: connections, pools, every user's profile row, script cache.
    for (_, addr) in &variants {
        let w = wrk(*addr, &script, 16, 2).await;
        assert!(!w.errors, "warm-up failed");
    }
    // The quota's goal at one connection allows a bare commit's p50 on top: timed here, in the
    // same run, on the same PostgreSQL (one autocommit UPDATE of one profile row, one connection).
    let commit_p50 = bare_commit_p50(&commit_url, a.rounds).await;
    println!(
        "{{\"runner\":\"bare-commit\",\"scenario\":\"http-commit\",\"c\":1,\"round\":0,\"p50_us\":{commit_p50:.1}}}"
    );
    let mut failed = false;
    for &c in &a.conc {
        for round in 0..a.rounds {
            let k = round % variants.len();
            let order: Vec<_> = variants[k..].iter().chain(&variants[..k]).collect();
            for (name, addr) in order {
                let w = wrk(*addr, &script, c, a.secs).await;
                failed |= w.errors;
                println!(
                    "{{\"runner\":\"http-{name}\",\"scenario\":\"http\",\"c\":{c},\"round\":{round},\"ops\":{},\"ops_per_sec\":{:.1},\"p50_us\":{:.1},\"p90_us\":{:.1},\"p99_us\":{:.1},\"errors\":{}}}",
                    w.requests, w.rps, w.p50, w.p90, w.p99, w.errors
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    drop_db(&admin, &db_sync).await;
    drop_db(&admin, &db_async).await;
    if failed {
        std::process::exit(1);
    }
}
