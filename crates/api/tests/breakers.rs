//! The breaker seam with the real breaker-store: health shows every breaker, an open one lowers
//! the score, and `force-close-circuits` closes it fleet-wide.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_shows_breakers_and_admin_closes_them() {
    init();
    let db = TestDb::create().await;
    let prefix = testkit::unique_prefix("brk");
    let cfg = config(&db, &prefix);
    let store = migrate(&cfg).await;
    let r = redis(&prefix).await;
    let breakers = api::admin::breakers::build(&cfg, r.clone()).unwrap();
    let state = api::AppState::with_parts(cfg, Arc::new(chat::EchoAssistant), r, store)
        .await
        .unwrap()
        .with_breakers(Arc::new(breakers.clone()));
    let server = Server::start_state(state).await;
    let c = client();
    let url = server.url("/api/system-health");

    let v: serde_json::Value = c
        .get(&url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let b = &v["components"]["breakers"];
    assert_eq!(b["wired"], true);
    let states = b["states"].as_array().unwrap();
    assert_eq!(states.len(), 3, "{b}");
    assert!(states.iter().all(|s| s["state"] == "closed"), "{b}");
    let healthy_score = v["score"].as_u64().unwrap();

    breakers
        .force_open("llm", Duration::from_secs(600))
        .await
        .unwrap();
    let v: serde_json::Value = c
        .get(&url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let llm = v["components"]["breakers"]["states"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "llm")
        .cloned()
        .unwrap();
    assert_eq!(llm["state"], "open");
    assert!(v["score"].as_u64().unwrap() < healthy_score);
    assert!(
        v["recommendations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains("breaker"))
    );

    let r = c
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"action": "force-close-circuits"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["result"]["wired"], true);
    assert_eq!(v["result"]["closed"], 1);
    let snap = breakers.snapshot("llm").await.unwrap();
    assert_eq!(snap.state.as_str(), "closed");
    let r = c
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"action": "reset-errors"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["result"]["breakerWindows"], true);
}
