//! A running request whose admission lease is lost (its replica could not renew it within its
//! lifetime, or Redis forgot it): its slot may already be another request's.
//! - Under the safety outage policy (the default) it is stopped: 503 `service_unavailable` with
//!   `Retry-After`, its daily query given back, so the fleet never runs more than the cap.
//! - Under the availability policy it runs to completion: the answer is not thrown away. The
//!   lost lease is never revived by a renewal, and its release at the end frees nothing of the
//!   slot's new holder.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

async fn members(r: &limiter_core::RedisHandle, key: &str) -> Vec<String> {
    r.cmd(redis::cmd("ZRANGE").arg(key).arg(0).arg(-1))
        .await
        .unwrap()
}

fn send(c: &reqwest::Client, s: &Server, user: &str) -> tokio::task::JoinHandle<u16> {
    let req = c
        .post(s.url("/api/chat"))
        .bearer_auth(token(user))
        .json(&serde_json::json!({"message": "q", "useRAG": false}));
    tokio::spawn(async move { req.send().await.unwrap().status().as_u16() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_safety_a_request_whose_lease_is_lost_is_stopped_and_refunded() {
    let db = TestDb::create().await;
    let prefix = testkit::unique_prefix("lost-safe");
    let mut cfg = config(&db, &prefix);
    cfg.admission.max_concurrent_global = 1;
    cfg.admission.max_concurrent_per_user = 1;
    cfg.admission.lease_ttl_ms = 600;
    let store = migrate(&cfg).await;
    let fake = FakeAssistant::new(Duration::from_secs(30), usize::MAX, Mode::Answer);
    let server = Server::start(cfg, fake.clone()).await;
    let c = client();
    let r = redis(&prefix).await;
    let before = store.remaining("lost-s").await.unwrap();
    let req = c
        .post(server.url("/api/chat"))
        .bearer_auth(token("lost-s"))
        .json(&serde_json::json!({"message": "q", "useRAG": false}));
    let call = tokio::spawn(async move { req.send().await.unwrap() });
    assert!(fake.wait_in_flight(1, Duration::from_secs(10)).await);
    common::forget_the_only_lease(&r).await;
    // The next renewal (every 200 ms) finds it gone: the request stops, its assistant call
    // never released by the test.
    let resp = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the request with the lost lease was not stopped")
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(problem_code(resp).await, "service_unavailable");
    assert_eq!(
        store.remaining("lost-s").await.unwrap(),
        before,
        "the query was given back"
    );
    fake.release();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_availability_a_request_whose_lease_is_lost_runs_to_completion_and_frees_nothing_else()
 {
    let db = TestDb::create().await;
    let prefix = testkit::unique_prefix("lost");
    let mut cfg = config(&db, &prefix);
    cfg.admission.outage_policy = api::config::OutagePolicy::Availability;
    cfg.admission.max_concurrent_global = 1;
    cfg.admission.max_concurrent_per_user = 1;
    // Renewed every 200 ms.
    cfg.admission.lease_ttl_ms = 600;
    let store = migrate(&cfg).await;
    // Two replicas, so the two requests' pipelines are let go one at a time.
    let fake_a = FakeAssistant::new(Duration::from_secs(30), usize::MAX, Mode::Answer);
    let fake_b = FakeAssistant::new(Duration::from_secs(30), usize::MAX, Mode::Answer);
    let one = Server::start(cfg.clone(), fake_a.clone()).await;
    let two = Server::start(cfg, fake_b.clone()).await;
    let c = client();
    let r = redis(&prefix).await;
    let global = r.keys().lease_scope("api", b"global");

    let a = send(&c, &one, "lost-a");
    assert!(fake_a.wait_in_flight(1, Duration::from_secs(10)).await);
    let lost = common::forget_the_only_lease(&r).await;

    // The slot is free as far as the fleet knows: another request takes it.
    let b = send(&c, &two, "lost-b");
    assert!(fake_b.wait_in_flight(1, Duration::from_secs(10)).await);
    let held_by_b = members(&r, &global).await;
    assert_eq!(held_by_b.len(), 1);
    assert_ne!(held_by_b[0], lost);
    // Renewals of the lost lease (3 periods) find it gone and do not bring it back.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        members(&r, &global).await,
        held_by_b,
        "the lost lease came back"
    );
    // A third request waits: the cap of 1 is B's.
    let c3 = send(&c, &two, "lost-c");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while two.state.gate().stats().await.unwrap().waiting.chat < 1 {
        assert!(tokio::time::Instant::now() < deadline, "C never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A was not stopped: it answers when its pipeline is done.
    assert_eq!(
        fake_a.in_flight.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    fake_a.release();
    assert_eq!(
        a.await.unwrap(),
        200,
        "the request with the lost lease completed"
    );
    assert_eq!(
        store.remaining("lost-a").await.unwrap(),
        2,
        "and was counted"
    );
    // Its release is done (confirmed by Redis) and freed nothing of B's: C still waits.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while one.state.gate().outstanding() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "A's release");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(members(&r, &global).await, held_by_b);
    let stats = two.state.gate().stats().await.unwrap();
    assert_eq!((stats.slots_in_use, stats.waiting.chat), (1, 1));
    assert_eq!(fake_b.calls.load(std::sync::atomic::Ordering::SeqCst), 1);

    fake_b.release();
    assert_eq!(b.await.unwrap(), 200);
    assert_eq!(c3.await.unwrap(), 200);
    assert_eq!(fake_b.max(), 1, "B and C never ran together");
}
