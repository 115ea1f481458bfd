//! One user's waiting requests are capped: past `max_queued_per_user` they are refused with 429
//! `user_queue_full` and `Retry-After` (the query given back), while other users still queue.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_past_its_waiting_cap_gets_429_and_others_still_queue() {
    let db = TestDb::create().await;
    let prefix = testkit::unique_prefix("uq");
    let mut cfg = config(&db, &prefix);
    cfg.admission.max_concurrent_global = 1;
    cfg.admission.max_concurrent_per_user = 1;
    cfg.admission.max_queued_per_user = 1;
    cfg.admission.queue_timeout_ms = 20_000;
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
    let waiting = |n: u64| {
        let gate = server.state.gate().clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                if gate.stats().await.unwrap().waiting.chat == n {
                    return;
                }
                assert!(tokio::time::Instant::now() < deadline, "never {n} waiting");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let running = send("uq-a", "192.0.2.1");
    assert!(fake.wait_in_flight(1, Duration::from_secs(10)).await);
    let b1 = send("uq-b", "192.0.2.2");
    waiting(1).await;

    // Bob's second request, from another address: his share of the queue is full.
    let refused = send("uq-b", "192.0.2.3").await.unwrap();
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(problem_code(refused).await, "user_queue_full");

    // Carol still queues behind bob.
    let c1 = send("uq-c", "192.0.2.4");
    waiting(2).await;

    fake.release();
    assert_eq!(running.await.unwrap().status(), 200);
    assert_eq!(b1.await.unwrap().status(), 200);
    assert_eq!(c1.await.unwrap().status(), 200);
    assert_eq!(
        store.remaining("uq-b").await.unwrap(),
        2,
        "the refused query was given back"
    );
}
