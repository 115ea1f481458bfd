//! Each admin action (`POST /api/system-health` with the admin token) does what it says, as
//! seen from outside the replica that ran it: waiters refused on every replica, counters and
//! breaker windows zeroed, breakers closed for every replica's calls, old conversations and stale
//! usage counters gone, long idle transactions ended.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use sqlx::{Connection, Executor};
use upstream_sim::{Group, SimConfig};

async fn admin(c: &reqwest::Client, s: &Server, action: &str) -> Value {
    let r = c
        .post(s.url("/api/system-health"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "action": action }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{action}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["ok"], true, "{v}");
    v["result"].clone()
}

async fn health(c: &reqwest::Client, s: &Server) -> Value {
    c.get(s.url("/api/system-health"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn chat_from(
    c: &reqwest::Client,
    s: &Server,
    user: &str,
    ip: &str,
) -> tokio::task::JoinHandle<reqwest::Response> {
    let req = c
        .post(s.url("/api/chat"))
        .bearer_auth(token(user))
        .header("x-forwarded-for", ip)
        .json(&json!({"message": "q", "useRAG": false}));
    tokio::spawn(async move { req.send().await.unwrap() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reset_queue_refuses_every_waiter_on_every_replica() {
    let db = TestDb::create().await;
    let prefix = testkit::unique_prefix("adm-q");
    let mut cfg = config(&db, &prefix);
    cfg.admission.max_concurrent_global = 1;
    cfg.admission.max_concurrent_per_user = 1;
    // Short enough that a reset that reached nobody ends the test soon, as a timeout.
    cfg.admission.queue_timeout_ms = 10_000;
    let store = migrate(&cfg).await;
    let fake = FakeAssistant::new(Duration::from_secs(30), usize::MAX, Mode::Answer);
    let a = Server::start(cfg.clone(), fake.clone()).await;
    let b = Server::start(cfg, fake.clone()).await;
    let c = client();
    let holder = chat_from(&c, &a, "adm-holder", "198.51.100.1");
    assert!(fake.wait_in_flight(1, Duration::from_secs(10)).await);
    // One waiter on each replica.
    let w1 = chat_from(&c, &a, "adm-w1", "198.51.100.2");
    let w2 = chat_from(&c, &b, "adm-w2", "198.51.100.3");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while a.state.gate().stats().await.unwrap().waiting.chat < 2 {
        assert!(tokio::time::Instant::now() < deadline, "2 never waited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let result = admin(&c, &a, "reset-queue").await;
    assert_eq!(result["waitersReleased"], 2, "{result}");
    for w in [w1, w2] {
        let r = w.await.unwrap();
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key("retry-after"));
        assert_eq!(problem_code(r).await, "service_unavailable");
    }
    // Refused before they ran: their queries are given back.
    for u in ["adm-w1", "adm-w2"] {
        assert_eq!(store.remaining(u).await.unwrap(), 3, "{u}");
    }
    assert_eq!(a.state.gate().stats().await.unwrap().waiting.chat, 0);
    fake.release();
    assert_eq!(holder.await.unwrap().status(), 200);
    // The queue still works.
    let r = chat_from(&c, &b, "adm-after", "198.51.100.4")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_errors_zeroes_counters_and_breaker_windows() {
    let sim = upstream_sim::spawn(SimConfig::default()).await.unwrap();
    let db = TestDb::create().await;
    let mut cfg = config(&db, &testkit::unique_prefix("adm-err"));
    cfg.trusted_proxies = vec!["127.0.0.1/32".into()];
    cfg.limits.chat_per_ip_per_min = 1;
    // Failures are counted, but not enough to open the breaker.
    cfg.upstream.breaker_failure_threshold = 100;
    let server = rag_replica(&sim, cfg).await;
    let c = client();
    // A client error (the second chat of one address in a minute) ...
    assert_eq!(
        chat_from(&c, &server, "adm-e1", "198.51.100.10")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        chat_from(&c, &server, "adm-e1", "198.51.100.10")
            .await
            .unwrap()
            .status(),
        429
    );
    // ... and a server error with a failure in the LLM's breaker window.
    sim.set(|s| s.faults_mut(Group::Llm).error_rate = 1.0)
        .unwrap();
    assert_eq!(
        chat_from(&c, &server, "adm-e2", "198.51.100.11")
            .await
            .unwrap()
            .status(),
        503
    );
    let llm_failures = |v: &Value| {
        v["components"]["breakers"]["states"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["service"] == "llm")
            .unwrap()["failures"]
            .as_u64()
            .unwrap()
    };
    let before = health(&c, &server).await;
    let comp = &before["components"];
    assert!(
        comp["rateLimit"]["denied"].as_u64().unwrap() >= 1,
        "{before}"
    );
    assert!(
        comp["errors"]["serverErrors"].as_u64().unwrap() >= 1,
        "{before}"
    );
    assert!(
        comp["errors"]["clientErrors"].as_u64().unwrap() >= 1,
        "{before}"
    );
    assert!(llm_failures(&before) >= 1, "{before}");

    let result = admin(&c, &server, "reset-errors").await;
    assert_eq!(result["breakerWindows"], true, "{result}");
    let after = health(&c, &server).await;
    let comp = &after["components"];
    assert_eq!(comp["rateLimit"]["denied"], 0, "{after}");
    assert_eq!(comp["errors"]["serverErrors"], 0, "{after}");
    assert_eq!(comp["errors"]["clientErrors"], 0, "{after}");
    assert_eq!(llm_failures(&after), 0, "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn force_close_circuits_closes_breakers_for_every_replica() {
    let sim = upstream_sim::spawn(SimConfig::default()).await.unwrap();
    let db = TestDb::create().await;
    let prefix = testkit::unique_prefix("adm-brk");
    let mut cfg = config(&db, &prefix);
    cfg.trusted_proxies = vec!["127.0.0.1/32".into()];
    cfg.quota.free_daily_queries = 1000;
    cfg.limits.chat_per_ip_per_min = 1000;
    let a = rag_replica(&sim, cfg.clone()).await;
    let b = rag_replica(&sim, cfg.clone()).await;
    // Another member of the fleet opens the LLM breaker for 10 minutes.
    let other = api::admin::breakers::build(&cfg, redis(&prefix).await).unwrap();
    other
        .force_open("llm", Duration::from_secs(600))
        .await
        .unwrap();
    let c = client();
    // Both replicas refuse LLM calls now (they learn it by push or on their next call).
    for s in [&a, &b] {
        let r = chat_from(&c, s, "adm-b", "198.51.100.20").await.unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(problem_code(r).await, "upstream_unavailable");
    }
    assert_eq!(
        sim.stats().group(Group::Llm).total,
        0,
        "refused, not called"
    );

    let result = admin(&c, &a, "force-close-circuits").await;
    assert_eq!(result["wired"], true, "{result}");
    assert!(result["closed"].as_u64().unwrap() >= 1, "{result}");
    // The replica that did not run the action calls the LLM again (within a push's delay).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let r = chat_from(&c, &b, "adm-b", "198.51.100.21").await.unwrap();
        if r.status() == 200 {
            break;
        }
        assert_eq!(problem_code(r).await, "upstream_unavailable");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the other replica still refuses 3 s after force-close-circuits"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sim.stats().group(Group::Llm).total, 1);
    assert_eq!(
        chat_from(&c, &a, "adm-b", "198.51.100.22")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(sim.stats().group(Group::Llm).total, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_sessions_deletes_old_conversations_and_stale_counters() {
    let db = TestDb::create().await;
    let cfg = config(&db, &testkit::unique_prefix("adm-clean"));
    let store = migrate(&cfg).await;
    let pool = store.pool();
    let (old, recent) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    for (id, age_days) in [(old, 31), (recent, 29)] {
        sqlx::query(
            "INSERT INTO conversations (id, user_id, updated_at) \
             VALUES ($1, 'adm-u', now() - make_interval(days => $2))",
        )
        .bind(id)
        .bind(age_days)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO messages (conversation_id, role, content) VALUES ($1, 'user', 'q')",
        )
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
    }
    // A counter left from an earlier UTC day, and today's.
    for (user, days_ago, used) in [("adm-stale", 1, 2), ("adm-today", 0, 1)] {
        sqlx::query(
            "INSERT INTO user_profiles (user_id, usage_day, queries_used) \
             VALUES ($1, (now() AT TIME ZONE 'UTC')::date - $2, $3)",
        )
        .bind(user)
        .bind(days_ago)
        .bind(used)
        .execute(pool)
        .await
        .unwrap();
    }
    let server = Server::start(cfg, Arc::new(chat::EchoAssistant)).await;
    let result = admin(&client(), &server, "cleanup-sessions").await;
    assert_eq!(result["old_conversations_deleted"], 1, "{result}");
    assert_eq!(result["stale_usage_counters_reset"], 1, "{result}");
    let left: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM conversations")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(left, vec![recent]);
    let messages: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT conversation_id FROM messages")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(
        messages,
        vec![recent],
        "the old conversation's messages went with it"
    );
    let used = |u: &'static str| {
        sqlx::query_scalar::<_, i32>("SELECT queries_used FROM user_profiles WHERE user_id = $1")
            .bind(u)
            .fetch_one(pool)
    };
    assert_eq!(used("adm-stale").await.unwrap(), 0);
    assert_eq!(used("adm-today").await.unwrap(), 1, "today's count is kept");
}

async fn pid(c: &mut sqlx::PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(c)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_cleanup_ends_only_long_idle_transactions() {
    let db = TestDb::create().await;
    let mut cfg = config(&db, &testkit::unique_prefix("adm-emerg"));
    cfg.database.emergency_idle_secs = 2;
    migrate(&cfg).await;
    let server = Server::start(cfg, Arc::new(chat::EchoAssistant)).await;
    let connect = || sqlx::PgConnection::connect(&db.url);
    // Idle inside a transaction for longer than the threshold.
    let mut long = connect().await.unwrap();
    let long_pid = pid(&mut long).await;
    long.execute("BEGIN").await.unwrap();
    long.execute("SELECT 1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Idle inside a transaction, but only just; and idle outside any transaction.
    let mut fresh = connect().await.unwrap();
    let fresh_pid = pid(&mut fresh).await;
    fresh.execute("BEGIN").await.unwrap();
    fresh.execute("SELECT 1").await.unwrap();
    let mut idle = connect().await.unwrap();
    let idle_pid = pid(&mut idle).await;

    let result = admin(&client(), &server, "emergency-cleanup").await;
    let ended: Vec<(i64, bool)> = result["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["pid"].as_i64().unwrap(), c["terminated"] == true))
        .collect();
    assert_eq!(ended, vec![(i64::from(long_pid), true)], "{result}");
    assert!(
        long.execute("SELECT 1").await.is_err(),
        "the long idle transaction's session was ended"
    );
    fresh.execute("COMMIT").await.unwrap();
    assert_eq!(pid(&mut idle).await, idle_pid);
    assert_eq!(pid(&mut fresh).await, fresh_pid);
}
