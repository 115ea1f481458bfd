//! Bad input and edges over TCP: body limit, malformed JSON, wrong types, empty and over-long
//! messages, unknown routes, the OpenAPI document, probes and the maintenance functions.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_problem_json() {
    let db = TestDb::create().await;
    let prefix = testkit::unique_prefix("edges");
    let mut cfg = config(&db, &prefix);
    cfg.limits.chat_per_ip_per_min = 1000;
    cfg.limits.research_per_ip_per_min = 1000;
    cfg.limits.export_per_ip_per_min = 1000;
    migrate(&cfg).await;
    let fake = FakeAssistant::new(Duration::from_millis(1), 1, Mode::Answer);
    let server = Server::start(cfg, fake.clone()).await;
    let c = client();
    let url = server.url("/api/chat");
    let t = token("u-edges");
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str, &str)> = vec![
        (
            "too large",
            c.post(&url)
                .bearer_auth(&t)
                .header("content-type", "application/json")
                .body(format!("{{\"message\":\"{}\"}}", "a".repeat(70_000))),
            413,
            "payload_too_large",
            "65536",
        ),
        (
            "malformed",
            c.post(&url)
                .bearer_auth(&t)
                .header("content-type", "application/json")
                .body("{\"message\":"),
            400,
            "invalid_request",
            "malformed JSON",
        ),
        (
            "wrong type",
            c.post(&url).bearer_auth(&t).json(&json!({"message": 5})),
            400,
            "invalid_request",
            "message",
        ),
        (
            "missing field",
            c.post(&url).bearer_auth(&t).json(&json!({"useRAG": true})),
            400,
            "invalid_request",
            "message",
        ),
        (
            "empty",
            c.post(&url).bearer_auth(&t).json(&json!({"message": "  "})),
            400,
            "invalid_request",
            "empty",
        ),
        (
            "over-long",
            c.post(&url)
                .bearer_auth(&t)
                .json(&json!({"message": "é".repeat(4001)})),
            400,
            "invalid_request",
            "4000",
        ),
        (
            "bad uuid",
            c.post(&url)
                .bearer_auth(&t)
                .json(&json!({"message": "x", "conversationId": "nope"})),
            400,
            "invalid_request",
            "conversationId",
        ),
        (
            "no content type",
            c.post(&url).bearer_auth(&t).body("{\"message\":\"x\"}"),
            400,
            "invalid_request",
            "Content-Type",
        ),
        (
            "research limit",
            c.post(server.url("/api/research"))
                .bearer_auth(&t)
                .json(&json!({"query": "x", "limit": 0})),
            400,
            "invalid_request",
            "limit",
        ),
        (
            "export format",
            c.post(server.url("/api/export"))
                .bearer_auth(&t)
                .json(&json!({"conversationId": uuid::Uuid::new_v4(), "format": "pdf"})),
            400,
            "invalid_request",
            "format",
        ),
        (
            "unknown route",
            c.get(server.url("/api/nope")),
            404,
            "not_found",
            "/api/nope",
        ),
    ];
    for (name, req, status, code, detail) in cases {
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{name}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{name}"
        );
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["code"], code, "{name}: {v}");
        assert_eq!(v["status"], status, "{name}");
        assert!(v["type"].as_str().unwrap().ends_with(code), "{name}");
        assert!(v["title"].is_string(), "{name}");
        assert!(
            v["detail"].as_str().unwrap().contains(detail),
            "{name}: {v}"
        );
    }
    // Exactly 4000 characters is fine.
    let r = c
        .post(&url)
        .bearer_auth(&t)
        .json(&json!({"message": "é".repeat(4000)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(fake.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The default pipeline does not offer research: 503 with Retry-After, no internals.
    let r = c
        .post(server.url("/api/research"))
        .bearer_auth(&t)
        .json(&json!({"query": "asthma"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.headers().contains_key("ratelimit-policy"));
    assert_eq!(problem_code(r).await, "service_unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_openapi_and_request_ids() {
    let db = TestDb::create().await;
    let prefix = testkit::unique_prefix("probes");
    let cfg = config(&db, &prefix);
    migrate(&cfg).await;
    let server = Server::start(cfg, std::sync::Arc::new(chat::EchoAssistant)).await;
    let c = client();
    let r = c.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    let r = c.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["ready"], true);
    let doc: serde_json::Value = c
        .get(server.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/api/chat",
        "/api/research",
        "/api/export",
        "/api/system-health",
        "/healthz",
        "/readyz",
        "/api/openapi.json",
    ] {
        assert!(
            doc["paths"].get(p).is_some(),
            "{p} missing from the document"
        );
    }
    assert!(doc["paths"]["/api/system-health"].get("post").is_some());
    assert!(doc["components"]["securitySchemes"].get("bearer").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_cleanup_terminates_only_this_databases_idle_transactions() {
    let db = TestDb::create().await;
    let other = TestDb::create().await;
    let cfg = config(&db, "unused");
    let store = migrate(&cfg).await;
    use sqlx::{Connection, Executor};
    // One idle-in-transaction session in this database, one in another database.
    let mut mine = sqlx::PgConnection::connect(&db.url).await.unwrap();
    mine.execute("BEGIN").await.unwrap();
    mine.execute("SELECT 1").await.unwrap();
    let mine_pid: i32 = {
        let mut probe = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle in transaction'",
        )
        .fetch_all(&mut probe)
        .await
        .unwrap();
        assert_eq!(pids.len(), 1);
        pids[0]
    };
    let mut theirs = sqlx::PgConnection::connect(&other.url).await.unwrap();
    theirs.execute("BEGIN").await.unwrap();
    theirs.execute("SELECT 1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let rows = store
        .emergency_cleanup_connections(Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, mine_pid);
    assert!(rows[0].2, "terminated");
    assert!(
        mine.execute("SELECT 1").await.is_err(),
        "our idle transaction was ended"
    );
    assert!(
        theirs.execute("SELECT 1").await.is_ok(),
        "another database's session is untouched"
    );
    // A threshold longer than the idle time terminates nothing.
    let rows = store
        .emergency_cleanup_connections(Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(rows.is_empty());
    let load = store.check_system_load().await.unwrap();
    assert!(load.iter().any(|m| m.metric == "idle_in_transaction"));
    // cleanup_old_sessions: conversations idle past the age go (with their messages), others stay.
    for (id, age_days) in [(uuid::Uuid::new_v4(), 40), (uuid::Uuid::new_v4(), 1)] {
        sqlx::query(
            "INSERT INTO conversations (id, user_id, updated_at) VALUES ($1, 'u', now() - make_interval(days => $2))",
        )
        .bind(id)
        .bind(age_days)
        .execute(store.pool())
        .await
        .unwrap();
    }
    let cleaned = store
        .cleanup_old_sessions(Duration::from_secs(30 * 86_400))
        .await
        .unwrap();
    assert!(
        cleaned
            .iter()
            .any(|(w, _)| w == "stale_usage_counters_reset")
    );
    assert!(
        cleaned.contains(&("old_conversations_deleted".to_string(), 1)),
        "{cleaned:?}"
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM conversations")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(left, 1);
    drop(theirs);
}
