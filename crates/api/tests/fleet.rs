//! 200 concurrent chats from 200 users over 3 replicas sharing one Redis and one database: the
//! fleet-wide cap of 20 holds, as seen by the pipeline every replica calls.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn global_cap_holds_across_three_servers() {
    let db = TestDb::create().await;
    let prefix = testkit::unique_prefix("fleet");
    let mut cfg = config(&db, &prefix);
    cfg.database.max_connections = 8;
    cfg.database.acquire_timeout_ms = 30_000;
    // The load balancer in front of the fleet is the trusted proxy; each user has an address.
    cfg.trusted_proxies = vec!["127.0.0.1/32".into()];
    migrate(&cfg).await;
    // One observer behind all three replicas. Calls hold until 20 run at once (or 10 s).
    let fake = FakeAssistant::new(Duration::from_secs(10), 20, Mode::Answer);
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(Server::start(cfg.clone(), fake.clone() as Arc<dyn chat::Assistant>).await);
    }
    let c = client();
    let reqs = (0..200).map(|i| {
        let c = c.clone();
        let url = servers[i % 3].url("/api/chat");
        async move {
            let r = c
                .post(url)
                .bearer_auth(token(&format!("fleet-user-{i}")))
                .header("x-forwarded-for", format!("198.51.100.{}", i % 250 + 1))
                .header("x-forwarded-for", format!("10.9.{}.{}", i / 250, i % 250))
                .json(&serde_json::json!({"message": "q", "useRAG": false}))
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            let body = r.text().await.unwrap();
            (s, body)
        }
    });
    let results = futures_util::future::join_all(reqs).await;
    let failures: Vec<_> = results.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failures.is_empty(),
        "{} failed, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert_eq!(fake.calls.load(std::sync::atomic::Ordering::SeqCst), 200);
    assert!(
        fake.max() <= 20,
        "the pipeline saw {} in flight",
        fake.max()
    );
    assert_eq!(fake.max(), 20, "the global cap was reached");
    for s in &mut servers {
        s.shutdown().await;
    }
}
