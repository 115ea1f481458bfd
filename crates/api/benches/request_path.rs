//! What the service's layers cost per request, over loopback TCP against a replica served
//! in-process (echo pipeline, machine's Redis and PostgreSQL, a scratch database):
//! `/healthz` (no layer), a full chat (JWT + per-IP window + quota spend + admission slot + echo),
//! and a chat refused by the per-IP window from the local cache (no Redis, no database).
//!
//! `cargo bench -p api --bench request_path` — figures go to BENCHMARKS.md (## api).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::config::Config;
use api::config::secret::Secret;
use sqlx::{Connection, Executor};

const SECRET: &str = "bench-secret-0123456789abcdef0123456789";

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

async fn measure(label: &str, n: usize, mut f: impl AsyncFnMut(usize) -> u16, want: u16) {
    for i in 0..20 {
        f(i).await; // warm-up
    }
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        let s = f(i + 20).await;
        lat.push(t.elapsed());
        assert_eq!(s, want, "{label}");
    }
    let total = start.elapsed();
    println!(
        "{label:<58} n={n:<5} p50={:>8.1?} p99={:>8.1?} ({:.0} req/s sequential)",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        n as f64 / total.as_secs_f64()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let admin = std::env::var("FLEETGATE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let db = format!("fg_bench_{}", std::process::id());
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);

    let mut cfg = Config::default();
    cfg.redis.prefix = format!("bench-api-{}", std::process::id());
    cfg.database.url = Secret::new(format!("{base}/{db}"));
    cfg.auth.jwt_secret = Some(Secret::new(SECRET));
    // Exactly the warm-up plus the measured chats: the window is full when they are done.
    cfg.limits.chat_per_ip_per_min = 920;
    cfg.quota.free_daily_queries = 1_000_000;
    let quota = api::limits::quota::QuotaStore::connect_lazy(&cfg).unwrap();
    quota.migrate().await.unwrap();
    let state = api::AppState::new(cfg, Arc::new(chat::EchoAssistant))
        .await
        .unwrap();
    let state2 = state.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api::run(listener, state, async {
        let _ = stop_rx.await;
    }));

    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let token = api::auth::jwt::sign_hs256(
        SECRET.as_bytes(),
        &serde_json::json!({"sub": "bench", "exp": exp}),
    );
    let url = |p: &str| format!("http://{addr}{p}");

    measure(
        "GET /healthz (no layer)",
        2000,
        async |_| {
            c.get(url("/healthz"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        },
        200,
    )
    .await;
    measure(
        "POST /api/chat, every layer, echo pipeline",
        900,
        async |_| {
            c.post(url("/api/chat"))
                .bearer_auth(&token)
                .json(&serde_json::json!({"message": "q"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        },
        200,
    )
    .await;
    // The 920/min window of 127.0.0.1 is spent by now (20 + 900): every further
    // request is refused, from the local cache after the first.
    measure(
        "POST /api/chat refused by the per-IP window (cached)",
        2000,
        async |_| {
            c.post(url("/api/chat"))
                .bearer_auth(&token)
                .json(&serde_json::json!({"message": "q"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        },
        429,
    )
    .await;

    // The pieces of the chat path, called directly.
    let q = quota.clone();
    measure(
        "  quota spend alone (one UPDATE, autocommit)",
        500,
        async |i| match q.spend(&format!("bench-{}", i % 50)).await.unwrap() {
            api::limits::quota::Spend::Spent(_) => 1,
            api::limits::quota::Spend::Exhausted { .. } => 0,
        },
        1,
    )
    .await;
    let gate = state2.gate().clone();
    measure(
        "  admission admit + awaited release (free slot)",
        500,
        async |_| {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            let slot = gate
                .admit("bench", api::limits::admission::RouteClass::Chat, deadline)
                .await
                .unwrap();
            drop(slot);
            // Drop releases in a task; wait for it so the next admit does not overlap.
            while gate.outstanding() > 0 {
                tokio::task::yield_now().await;
            }
            1
        },
        1,
    )
    .await;

    let _ = stop_tx.send(());
    let _ = server.await;
    drop(conn);
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    let _ = conn
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
        )))
        .await;
}
