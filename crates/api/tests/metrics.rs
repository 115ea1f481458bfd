//! `GET /metrics` after a scripted mix of requests: allowed, refused by the per-IP window (429),
//! queued behind the global cap, refused by an open breaker. Each counter must move by exactly
//! what the script did. One test in this binary: the registry is process-wide.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use upstream_sim::{Group, SimConfig};

type Scrape = HashMap<String, f64>;

async fn scrape(c: &reqwest::Client, s: &common::Server) -> (Scrape, String) {
    let resp = c.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = resp.text().await.unwrap();
    let mut m = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (k, v) = line.rsplit_once(' ').unwrap();
        m.insert(k.to_string(), v.parse::<f64>().unwrap());
    }
    (m, text)
}

fn get(m: &Scrape, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

fn delta(before: &Scrape, after: &Scrape, key: &str) -> f64 {
    get(after, key) - get(before, key)
}

async fn chat_url(c: &reqwest::Client, url: &str, user: &str, ip: &str) -> reqwest::Response {
    c.post(url)
        .bearer_auth(common::token(user))
        .header("x-forwarded-for", ip)
        .json(&json!({"message": "statin therapy in the elderly", "useRAG": false}))
        .send()
        .await
        .unwrap()
}

async fn chat(c: &reqwest::Client, s: &common::Server, user: &str, ip: &str) -> reqwest::Response {
    chat_url(c, &s.url("/api/chat"), user, ip).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_by_what_the_requests_did() {
    let sim = upstream_sim::spawn(SimConfig::default()).await.unwrap();
    let db = common::TestDb::create().await;
    let mut cfg = common::config(&db, &testkit::unique_prefix("metrics"));
    cfg.trusted_proxies = vec!["127.0.0.1/32".into()];
    cfg.limits.chat_per_ip_per_min = 2;
    cfg.admission.max_concurrent_global = 1;
    cfg.admission.max_concurrent_per_user = 1;
    cfg.upstream.breaker_failure_threshold = 2;
    let server = common::rag_replica(&sim, cfg).await;
    let c = common::client();
    let (m0, _) = scrape(&c, &server).await;

    // Allowed: two chats from one address.
    for u in ["a1", "a2"] {
        assert_eq!(chat(&c, &server, u, "10.0.0.1").await.status(), 200);
    }
    // Over the per-IP window: the third chat from one address.
    for u in ["b1", "b2"] {
        assert_eq!(chat(&c, &server, u, "10.0.0.2").await.status(), 200);
    }
    let r = chat(&c, &server, "b3", "10.0.0.2").await;
    assert_eq!(r.status(), 429);
    // Queued: a second chat while the only global slot is held by a slow answer.
    sim.set(|s| s.faults_mut(Group::Llm).latency_ms = 1500)
        .unwrap();
    let first = tokio::spawn({
        let c = c.clone();
        let url = server.url("/api/chat");
        async move { chat_url(&c, &url, "c1", "10.0.0.3").await.status() }
    });
    let started = tokio::time::Instant::now();
    while sim.stats().group(Group::Llm).in_flight == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "first chat never reached the LLM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(chat(&c, &server, "c2", "10.0.0.4").await.status(), 200);
    assert_eq!(first.await.unwrap(), 200);
    sim.set(|s| s.faults_mut(Group::Llm).latency_ms = 0)
        .unwrap();

    let (m1, text) = scrape(&c, &server).await;
    let d = |k: &str| delta(&m0, &m1, k);
    assert_eq!(
        d(r#"fleetgate_http_requests_total{route="/api/chat",method="POST",status="200"}"#),
        6.0
    );
    assert_eq!(
        d(r#"fleetgate_http_requests_total{route="/api/chat",method="POST",status="429"}"#),
        1.0
    );
    assert_eq!(
        d(
            r#"fleetgate_limiter_decisions_total{limiter="ip_window",policy="chat",outcome="allowed"}"#
        ),
        6.0
    );
    assert_eq!(
        d(
            r#"fleetgate_limiter_decisions_total{limiter="ip_window",policy="chat",outcome="denied"}"#
        ),
        1.0
    );
    assert_eq!(
        d(
            r#"fleetgate_limiter_decisions_total{limiter="admission",policy="chat",outcome="admitted"}"#
        ),
        5.0
    );
    assert_eq!(
        d(
            r#"fleetgate_limiter_decisions_total{limiter="admission",policy="chat",outcome="granted"}"#
        ),
        1.0
    );
    assert_eq!(
        d(r#"fleetgate_queue_wait_seconds_count{class="chat",outcome="granted"}"#),
        1.0
    );
    assert!(
        d(r#"fleetgate_queue_wait_seconds_sum{class="chat",outcome="granted"}"#) > 0.1,
        "the queued chat waited for the slow one"
    );
    assert_eq!(
        d(r#"fleetgate_limiter_decisions_total{limiter="quota",policy="daily",outcome="spent"}"#),
        6.0
    );
    assert_eq!(
        d(r#"fleetgate_upstream_request_duration_seconds_count{service="llm",outcome="success"}"#),
        6.0
    );
    assert!(
        d(
            r#"fleetgate_redis_script_duration_seconds_count{script="admission_enter",outcome="ok"}"#
        ) >= 6.0
    );
    assert_eq!(
        get(
            &m1,
            r#"fleetgate_breaker_state{service="llm",state="closed"}"#
        ),
        1.0
    );
    assert_eq!(get(&m1, "fleetgate_slots_capacity"), 1.0);
    assert_eq!(get(&m1, "fleetgate_degraded"), 0.0);
    assert!(get(&m1, "fleetgate_health_score") >= 70.0);
    // Bounded labels: no address or user id is ever a label value.
    for secret in ["10.0.0.", "\"a1\"", "\"c2\""] {
        assert!(!text.contains(secret), "{secret} leaked into a label");
    }

    // Breaker: the LLM fails until its breaker opens on this replica.
    sim.set(|s| s.faults_mut(Group::Llm).error_rate = 1.0)
        .unwrap();
    let mut n = 0;
    loop {
        n += 1;
        assert!(n < 20, "the breaker never opened");
        let r = chat(&c, &server, &format!("d{n}"), &format!("10.0.1.{n}")).await;
        assert_eq!(r.status(), 503);
        let (m, _) = scrape(&c, &server).await;
        if get(&m, r#"fleetgate_breaker_state{service="llm",state="open"}"#) == 1.0 {
            break;
        }
    }
    let (m2, _) = scrape(&c, &server).await;
    let llm_calls = sim.stats().group(Group::Llm).total;
    let r = chat(&c, &server, "e1", "10.0.2.1").await;
    assert_eq!(r.status(), 503);
    assert_eq!(common::problem_code(r).await, "upstream_unavailable");
    assert_eq!(
        sim.stats().group(Group::Llm).total,
        llm_calls,
        "refused locally"
    );
    let (m3, _) = scrape(&c, &server).await;
    let d = |k: &str| delta(&m2, &m3, k);
    assert_eq!(
        d(r#"fleetgate_upstream_errors_total{service="llm",kind="breaker_open"}"#),
        1.0
    );
    assert_eq!(
        d("fleetgate_quota_refunds_total"),
        1.0,
        "the refused chat is refunded"
    );
    assert_eq!(
        d(r#"fleetgate_http_requests_total{route="/api/chat",method="POST",status="503"}"#),
        1.0
    );
    assert_eq!(
        delta(
            &m0,
            &m3,
            r#"fleetgate_breaker_transitions_total{service="llm",to="open"}"#
        ),
        1.0
    );
    assert_eq!(
        get(
            &m3,
            r#"fleetgate_breaker_state{service="llm",state="open"}"#
        ),
        1.0
    );
    // The score comes from the health report, made at most once a second
    // (FLEETGATE_HEALTH_CACHE_MS): it drops within about a second.
    let healthy = get(&m1, "fleetgate_health_score");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (m, _) = scrape(&c, &server).await;
        if get(&m, "fleetgate_health_score") < healthy {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the score never dropped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
