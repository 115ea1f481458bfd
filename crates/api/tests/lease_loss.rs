//! A running request whose admission lease is lost (its replica could not renew it for a whole
//! TTL, or Redis forgot it) runs to completion: the answer is not thrown away. Its slot may have
//! gone to another request meanwhile; the lost lease is never revived by a renewal, and its
//! release at the end frees nothing of the slot's new holder.
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
async fn a_request_whose_lease_is_lost_runs_to_completion_and_frees_nothing_else() {
    let db = TestDb::create().await;
    let prefix = testkit::unique_prefix("lost");
    let mut cfg = config(&db, &prefix);
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
    let holders = r.keys().group_key("api", "holders");

    let a = send(&c, &one, "lost-a");
    assert!(fake_a.wait_in_flight(1, Duration::from_secs(10)).await);
    let leases = members(&r, &global).await;
    assert_eq!(leases.len(), 1);
    let lost = leases[0].clone();
    // Redis forgets it (as a restart without persistence, or an expiry, would).
    let user_key: String = r
        .cmd(redis::cmd("HGET").arg(&holders).arg(&lost))
        .await
        .unwrap();
    let _: i64 = r
        .cmd(redis::cmd("ZREM").arg(&global).arg(&lost))
        .await
        .unwrap();
    let _: i64 = r
        .cmd(redis::cmd("ZREM").arg(&user_key).arg(&lost))
        .await
        .unwrap();
    let _: i64 = r
        .cmd(redis::cmd("HDEL").arg(&holders).arg(&lost))
        .await
        .unwrap();

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
