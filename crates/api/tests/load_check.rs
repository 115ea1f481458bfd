//! The load check of the chat route, over TCP: 10 concurrent chats from one user and one IP.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_concurrent_chats_from_one_user_and_ip() {
    let db = TestDb::create().await;
    let prefix = testkit::unique_prefix("load");
    let cfg = config(&db, &prefix);
    let store = migrate(&cfg).await;
    // The first calls hold until 2 are in flight at once (or 5 s): while they hold, a third would
    // be seen if the per-user cap let it in (checked: with a cap of 3 this test fails, seeing 3).
    let fake = FakeAssistant::new(Duration::from_secs(5), 2, Mode::Answer);
    let server = Server::start(cfg, fake.clone()).await;
    let c = client();

    let reqs = (0..10).map(|i| {
        let c = c.clone();
        let url = server.url("/api/chat");
        async move {
            c.post(url)
                .bearer_auth(token("user-1"))
                .json(&serde_json::json!({"message": format!("Test query {i}"), "useRAG": true}))
                .send()
                .await
                .unwrap()
        }
    });
    let responses = futures_util::future::join_all(reqs).await;

    let mut ok = 0;
    let mut rate_limited = 0;
    let mut quota = 0;
    for r in responses {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body: serde_json::Value = r.json().await.unwrap();
        match (status, body["code"].as_str()) {
            (200, _) => {
                ok += 1;
                assert!(body["queriesRemaining"].as_u64().unwrap() <= 2);
                assert!(body["answer"].as_str().unwrap().starts_with("answer to"));
            }
            (429, Some("rate_limited")) => {
                rate_limited += 1;
                assert_eq!(headers["ratelimit-policy"], "\"chat\";q=5;w=60");
                let rl = headers["ratelimit"].to_str().unwrap();
                assert!(rl.starts_with("\"chat\";r=0;t="), "{rl}");
                let ra: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=60).contains(&ra), "{ra}");
                assert_eq!(headers["content-type"], "application/problem+json");
            }
            (429, Some("daily_quota_exhausted")) => {
                quota += 1;
                let ra: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
                assert_until_midnight(ra as f64);
            }
            other => panic!("unexpected {other:?}: {body}"),
        }
    }
    assert_eq!(rate_limited, 5, "5 pass the IP window, 5 are refused");
    assert_eq!(ok, 3, "the free tier answers 3 a day");
    assert_eq!(quota, 2, "the other 2 get daily_quota_exhausted");
    assert_eq!(fake.calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert!(
        fake.max() <= 2,
        "never more than 2 at once for one user, saw {}",
        fake.max()
    );
    assert_eq!(fake.max(), 2, "the per-user cap of 2 was actually reached");
    assert_eq!(store.remaining("user-1").await.unwrap(), 0);
    let used: i32 =
        sqlx::query_scalar("SELECT queries_used FROM user_profiles WHERE user_id = 'user-1'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(used, 3, "quota ends at 0, never below");
}
