//! Work per request that grew without bound: exports of any length, and a health report that
//! scanned every user profile on every probe.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use sqlx::{Connection, Row};
use tokio::time::Instant;

use crate::harness::{TestDb, serial, wait_for};
use crate::support::{Replica, ask, token};

/// A conversation longer than `FLEETGATE_EXPORT_MAX_MESSAGES` is refused with a clear error; a
/// shorter one exports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlong_conversation_is_not_exported() {
    let _s = serial().await;
    let r = Replica::start("exportcap", &[("FLEETGATE_EXPORT_MAX_MESSAGES", "40")]).await;
    let resp = r
        .chat("sam", "198.51.100.70", ask("first question", false))
        .await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    let id = uuid_of(&body);
    let export = || {
        r.client
            .post(r.url("/api/export"))
            .bearer_auth(token("sam"))
            .json(&json!({"conversationId": id.to_string(), "format": "markdown"}))
            .send()
    };
    assert_eq!(export().await.unwrap().status(), 200, "2 messages export");
    // History grows past the bound (written directly: 60 more messages).
    let mut c = r.db.connect().await;
    sqlx::query(
        "INSERT INTO messages (conversation_id, role, content)
         SELECT $1, CASE WHEN n % 2 = 0 THEN 'user' ELSE 'assistant' END, 'message ' || n
         FROM generate_series(1, 60) AS n",
    )
    .bind(id)
    .execute(&mut c)
    .await
    .unwrap();
    let resp = export().await.unwrap();
    assert_eq!(resp.status(), 422);
    let problem: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(problem["code"], "export_too_large", "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("at most 40"),
        "{problem}"
    );
}

fn uuid_of(body: &serde_json::Value) -> sqlx::types::Uuid {
    body["conversationId"].as_str().unwrap().parse().unwrap()
}

/// 128 clients probe the health report as fast as they can for 3 s; PostgreSQL, observed through
/// `pg_stat_user_functions` (function call counting on for this database only), ran
/// `check_system_load()` at most once per second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_probe_flood_costs_one_load_check_per_second() {
    let _s = serial().await;
    let db = TestDb::create().await;
    let name = db.url.rsplit('/').next().unwrap().to_string();
    let admin_url = std::env::var("FLEETGATE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {name} SET track_functions = 'pl'"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let mut r = Replica::start_on("flood", db, &[]).await;
    let answered = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let until = started + Duration::from_secs(3);
    let mut probes = Vec::new();
    for i in 0..128 {
        let (c, url, answered) = (
            r.client.clone(),
            r.url(if i % 8 == 0 {
                "/metrics"
            } else {
                "/api/system-health"
            }),
            Arc::clone(&answered),
        );
        probes.push(tokio::spawn(async move {
            while Instant::now() < until {
                if let Ok(resp) = c.get(&url).send().await
                    && resp.status() == 200
                {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for p in probes {
        p.await.unwrap();
    }
    let elapsed = started.elapsed();
    // The replica's sessions report their function counts when they end.
    r.terminate().await;
    let db = &r.db;
    let calls = wait_for(Duration::from_secs(10), || async {
        let mut c = db.connect().await;
        let row = sqlx::query(
            "SELECT coalesce(sum(calls), 0)::int8 AS calls FROM pg_stat_user_functions
             WHERE funcname = 'check_system_load'",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        let n: i64 = row.get("calls");
        (n > 0).then_some(n)
    })
    .await
    .expect("no check_system_load() call was counted");
    let answered = answered.load(Ordering::Relaxed);
    assert!(answered >= 128, "{answered} probes answered");
    let bound = elapsed.as_secs() as i64 + 2;
    assert!(
        calls <= bound,
        "{calls} check_system_load() calls for {answered} probes in {elapsed:?} (bound {bound})"
    );
}

/// The usage-day count of `check_system_load()` is answered from an index, not a scan of every
/// profile: the plan PostgreSQL chooses for it, with 20 000 profiles of which 10 are active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_users_are_counted_through_an_index() {
    let _s = serial().await;
    let r = Replica::start("usageindex", &[]).await;
    let mut c = r.db.connect().await;
    sqlx::query(
        "INSERT INTO user_profiles (user_id, queries_used, usage_day)
         SELECT 'u' || n, CASE WHEN n <= 10 THEN 1 ELSE 0 END,
                (now() AT TIME ZONE 'UTC')::date - (n % 30)
         FROM generate_series(1, 20000) AS n",
    )
    .execute(&mut c)
    .await
    .unwrap();
    sqlx::query("ANALYZE user_profiles")
        .execute(&mut c)
        .await
        .unwrap();
    let plan: String = sqlx::query(
        "EXPLAIN SELECT count(*) FROM user_profiles
         WHERE usage_day = (now() AT TIME ZONE 'UTC')::date AND queries_used > 0",
    )
    .fetch_all(&mut c)
    .await
    .unwrap()
    .iter()
    .map(|row| row.get::<String, _>(0))
    .collect::<Vec<_>>()
    .join("\n");
    assert!(!plan.contains("Seq Scan"), "{plan}");
    assert!(plan.contains("user_profiles_active_day"), "{plan}");
}
