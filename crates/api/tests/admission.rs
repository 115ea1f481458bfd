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
    // The refund and the queue leave both run when the request is dropped, in either order.
    while server.state.gate().stats().await.unwrap().waiting.chat != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the abandoned waiter left the queue"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fake.release();
    assert_eq!(running.await.unwrap().status(), 200);
    assert_eq!(store.remaining("gone-a").await.unwrap(), 2);
}

/// A JSON chat spends while it waits for its slot: with its quota row locked by another
/// transaction (so its spend cannot answer), the request is already in the queue. A user without
/// queries is refused while the slot is still taken and leaves nothing queued; from then on that
/// user spends first, so with its row locked it does not even queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_spend_runs_while_a_chat_waits_and_a_refusal_leaves_the_queue() {
    use sqlx::Connection;

    let db = TestDb::create().await;
    let prefix = testkit::unique_prefix("ovl");
    let mut cfg = config(&db, &prefix);
    cfg.admission.max_concurrent_global = 1;
    cfg.admission.max_concurrent_per_user = 1;
    cfg.trusted_proxies = vec!["127.0.0.1/32".into()];
    let store = migrate(&cfg).await;
    store.set_override("ovl-none", Some(0)).await.unwrap();
    store.set_override("ovl-b", Some(3)).await.unwrap();
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
    let waiting = async || server.state.gate().stats().await.unwrap().waiting.chat;
    let running = send("ovl-a", "192.0.2.20");
    assert!(fake.wait_in_flight(1, Duration::from_secs(10)).await);

    // B's spend is held up by the lock; B queues meanwhile.
    let mut lock = db.connect().await;
    let mut tx = lock.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM user_profiles WHERE user_id = 'ovl-b' FOR UPDATE")
        .execute(&mut *tx)
        .await
        .unwrap();
    let b = send("ovl-b", "192.0.2.21");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while waiting().await != 1 {
        assert!(tokio::time::Instant::now() < deadline, "B never queued");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.remaining("ovl-b").await.unwrap(), 3, "not spent yet");
    tx.commit().await.unwrap();
    while store.remaining("ovl-b").await.unwrap() != 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "B's spend never ran"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(waiting().await, 1, "B still waits for its slot");

    // A user without queries is refused while the slot is taken, and does not stay queued.
    let r = send("ovl-none", "192.0.2.22").await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(problem_code(r).await, "daily_quota_exhausted");
    // Its queue place is given up when the refused request is dropped, which may finish just
    // after the response went out.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while waiting().await != 1 {
        assert!(tokio::time::Instant::now() < deadline, "only B waits");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(server.state.quota().refused_lately("ovl-none"));
    assert!(!server.state.quota().refused_lately("ovl-b"));

    // Known refused: with its spend held up, it takes no place in the queue.
    let mut tx = lock.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM user_profiles WHERE user_id = 'ovl-none' FOR UPDATE")
        .execute(&mut *tx)
        .await
        .unwrap();
    let none = send("ovl-none", "192.0.2.22");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!none.is_finished());
    assert_eq!(waiting().await, 1, "the known-refused user did not queue");
    tx.commit().await.unwrap();
    let r = none.await.unwrap();
    assert_eq!(r.status(), 429);

    fake.release();
    assert_eq!(running.await.unwrap().status(), 200);
    assert_eq!(b.await.unwrap().status(), 200);
    assert_eq!(store.remaining("ovl-b").await.unwrap(), 2, "spent once");
    assert_eq!(fake.calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// A client that leaves while its spend is still in flight (held up by a locked row) gets the
/// query back once the spend answers: nothing was served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_spend_that_answers_after_the_client_left_is_given_back() {
    use sqlx::Connection;

    let db = TestDb::create().await;
    let prefix = testkit::unique_prefix("ovl-gone");
    let mut cfg = config(&db, &prefix);
    cfg.trusted_proxies = vec!["127.0.0.1/32".into()];
    let store = migrate(&cfg).await;
    store.set_override("ovl-gone", Some(3)).await.unwrap();
    let fake = FakeAssistant::new(Duration::ZERO, usize::MAX, Mode::Answer);
    let server = Server::start(cfg, fake.clone()).await;
    let mut lock = db.connect().await;
    let mut tx = lock.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM user_profiles WHERE user_id = 'ovl-gone' FOR UPDATE")
        .execute(&mut *tx)
        .await
        .unwrap();
    let impatient = client()
        .post(server.url("/api/chat"))
        .bearer_auth(token("ovl-gone"))
        .header("x-forwarded-for", "192.0.2.30")
        .timeout(Duration::from_millis(700))
        .json(&serde_json::json!({"message": "q"}))
        .send()
        .await;
    assert!(impatient.is_err(), "the client timed out");
    // Sessions of this database other than the caller's still running the spend statement.
    let spending = async || -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid() AND state = 'active' AND query LIKE '%unnest%'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while spending().await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the spend never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tx.commit().await.unwrap();
    while spending().await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the spend never ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The spend committed once the lock went; its refund follows.
    loop {
        let used: i32 =
            sqlx::query_scalar("SELECT queries_used FROM user_profiles WHERE user_id = 'ovl-gone'")
                .fetch_one(store.pool())
                .await
                .unwrap();
        if used == 0 && store.remaining("ovl-gone").await.unwrap() == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the query was never given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fake.calls.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// research goes through the same fleet-wide queue as chat (the admission layer), and its body is
/// read and checked before it: a malformed request is answered at once, never queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn research_queues_for_a_slot_and_a_bad_body_never_does() {
    let db = TestDb::create().await;
    let prefix = testkit::unique_prefix("adm-r");
    let mut cfg = config(&db, &prefix);
    cfg.admission.max_concurrent_global = 1;
    cfg.admission.max_concurrent_per_user = 1;
    cfg.admission.queue_timeout_ms = 1500;
    cfg.trusted_proxies = vec!["127.0.0.1/32".into()];
    migrate(&cfg).await;
    let fake = FakeAssistant::new(Duration::from_secs(20), usize::MAX, Mode::Answer);
    let server = Server::start(cfg, fake.clone()).await;
    let c = client();
    let holder = {
        let c = c.clone();
        let url = server.url("/api/chat");
        tokio::spawn(async move {
            c.post(url)
                .bearer_auth(token("adm-r-a"))
                .header("x-forwarded-for", "192.0.2.11")
                .json(&serde_json::json!({"message": "q"}))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    assert!(fake.wait_in_flight(1, Duration::from_secs(10)).await);
    let research = |user: &'static str, ip: &'static str, query: &'static str| {
        c.post(server.url("/api/research"))
            .bearer_auth(token(user))
            .header("x-forwarded-for", ip)
            .json(&serde_json::json!({"query": query}))
            .send()
    };
    // The only slot is held: a blank query is still answered at once.
    let started = tokio::time::Instant::now();
    let bad = research("adm-r-b", "192.0.2.12", "  ").await.unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(problem_code(bad).await, "invalid_request");
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "a malformed request waited {:?}",
        started.elapsed()
    );
    // A good one waits in the research class (seen in the fleet's queue) until its timeout.
    let waiting = tokio::spawn(research("adm-r-c", "192.0.2.13", "aspirin"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut seen_waiting = false;
    while !seen_waiting && tokio::time::Instant::now() < deadline {
        seen_waiting = server.state.gate().stats().await.unwrap().waiting.research == 1;
        if !seen_waiting {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert!(seen_waiting, "the research request never queued");
    let timed_out = waiting.await.unwrap().unwrap();
    assert_eq!(timed_out.status(), 503);
    assert!(timed_out.headers().contains_key("retry-after"));
    assert_eq!(problem_code(timed_out).await, "queue_timeout");
    fake.release();
    assert_eq!(holder.await.unwrap(), 200);
}
