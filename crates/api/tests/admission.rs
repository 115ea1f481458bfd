//! Layer 2 over TCP: queue timeout and queue full are 503 with Retry-After, and the spent query
//! is given back; priority order is limiter-core's (tested there).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_timeout_and_queue_full_are_503_and_refunded() {
    let db = TestDb::create().await;
    let prefix = testkit::unique_prefix("adm");
    let mut cfg = config(&db, &prefix);
    cfg.admission.max_concurrent_global = 1;
    cfg.admission.max_concurrent_per_user = 1;
    cfg.admission.max_queue = 1;
    cfg.admission.queue_timeout_ms = 1500;
    cfg.trusted_proxies = vec!["127.0.0.1/32".into()];
    let store = migrate(&cfg).await;
    let fake = FakeAssistant::new(Duration::from_secs(20), usize::MAX, Mode::Answer);
    let server = Server::start(cfg, fake.clone()).await;
    let c = client();
    let send = |user: &'static str, ip: &'static str| {
        let c = c.clone();
        let url = server.url("/api/chat");
        tokio::spawn(async move {
            c.post(url)
                .bearer_auth(token(user))
                .header("x-forwarded-for", ip)
                .json(&serde_json::json!({"message": "q"}))
                .send()
                .await
                .unwrap()
        })
    };
    let running = send("adm-a", "192.0.2.1");
    assert!(fake.wait_in_flight(1, Duration::from_secs(10)).await);
    let waiting = send("adm-b", "192.0.2.2");
    // Wait until b is in the queue, then c finds it full.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let s = server.state.gate().stats().await.unwrap();
        if s.waiting.chat == 1 || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let full = send("adm-c", "192.0.2.3").await.unwrap();
    assert_eq!(full.status(), 503);
    assert!(full.headers().contains_key("retry-after"));
    assert_eq!(problem_code(full).await, "queue_full");
    let timed_out = waiting.await.unwrap();
    assert_eq!(timed_out.status(), 503);
    assert!(timed_out.headers().contains_key("retry-after"));
    assert_eq!(problem_code(timed_out).await, "queue_timeout");
    fake.release();
    assert_eq!(running.await.unwrap().status(), 200);
    assert_eq!(store.remaining("adm-a").await.unwrap(), 2);
    assert_eq!(
        store.remaining("adm-b").await.unwrap(),
        3,
        "timed-out query refunded"
    );
    assert_eq!(
        store.remaining("adm-c").await.unwrap(),
        3,
        "refused query refunded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_gone_while_queued_gets_its_query_back() {
    let db = TestDb::create().await;
    let prefix = testkit::unique_prefix("gone");
    let mut cfg = config(&db, &prefix);
    cfg.admission.max_concurrent_global = 1;
    cfg.admission.max_concurrent_per_user = 1;
    cfg.trusted_proxies = vec!["127.0.0.1/32".into()];
    let store = migrate(&cfg).await;
    let fake = FakeAssistant::new(Duration::from_secs(20), usize::MAX, Mode::Answer);
    let server = Server::start(cfg, fake.clone()).await;
    let c = client();
    let url = server.url("/api/chat");
    let running = {
        let (c, url) = (c.clone(), url.clone());
        tokio::spawn(async move {
            c.post(url)
                .bearer_auth(token("gone-a"))
                .header("x-forwarded-for", "192.0.2.10")
                .json(&serde_json::json!({"message": "q"}))
                .send()
                .await
                .unwrap()
        })
    };
    assert!(fake.wait_in_flight(1, Duration::from_secs(10)).await);
    // B waits for the only slot, then gives up (client timeout closes the connection).
    let impatient = c
        .post(&url)
        .bearer_auth(token("gone-b"))
        .header("x-forwarded-for", "192.0.2.11")
        .timeout(Duration::from_millis(700))
        .json(&serde_json::json!({"message": "q"}))
        .send()
        .await;
    assert!(impatient.is_err(), "the client timed out");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while store.remaining("gone-b").await.unwrap() != 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        store.remaining("gone-b").await.unwrap(),
        3,
        "never served, so not counted"
    );
    let s = server.state.gate().stats().await.unwrap();
    assert_eq!(s.waiting.chat, 0, "the abandoned waiter left the queue");
    fake.release();
    assert_eq!(running.await.unwrap().status(), 200);
    assert_eq!(store.remaining("gone-a").await.unwrap(), 2);
}
