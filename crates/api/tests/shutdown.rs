//! SIGTERM during load: running requests complete, waiters are answered, and no lease of the
//! replica is left in Redis when `run` returns.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_load_drains_and_releases_everything() {
    let db = TestDb::create().await;
    let prefix = testkit::unique_prefix("term");
    let mut cfg = config(&db, &prefix);
    cfg.trusted_proxies = vec!["127.0.0.1/32".into()];
    migrate(&cfg).await;
    // Calls hold until released by the test (or 20 s).
    let fake = FakeAssistant::new(Duration::from_secs(20), usize::MAX, Mode::Answer);
    let mut server = Server::start(cfg, fake.clone()).await;
    let c = client();
    // 3 users × 3 requests: 6 run (2 per user), 3 wait for their user's slot.
    let reqs: Vec<_> = (0..9)
        .map(|i| {
            let c = c.clone();
            let url = server.url("/api/chat");
            tokio::spawn(async move {
                let r = c
                    .post(url)
                    .bearer_auth(token(&format!("term-user-{}", i % 3)))
                    .header("x-forwarded-for", format!("192.0.2.{i}"))
                    .json(&serde_json::json!({"message": "q"}))
                    .send()
                    .await
                    .unwrap();
                let s = r.status().as_u16();
                (s, r.text().await.unwrap())
            })
        })
        .collect();
    assert!(
        fake.wait_in_flight(6, Duration::from_secs(20)).await,
        "6 running"
    );
    let r = redis(&prefix).await;
    let global = r.keys().lease_scope("api", b"global");
    let replica = server.state.gate().replica_id().to_string();
    let held: i64 = r.cmd(redis::cmd("ZCARD").arg(&global)).await.unwrap();
    assert_eq!(held, 6, "6 leases held in Redis before the signal");

    // A probe as an orchestrator sends it: ready before the signal, 503 once it is given, while
    // the replica still answers (the probe polls back to back, so it asks within the half
    // second the replica keeps answering after the signal).
    let probe = reqwest::Client::builder().no_proxy().build().unwrap();
    let readyz = server.url("/readyz");
    let ready = probe.get(&readyz).send().await.unwrap();
    assert_eq!(ready.status(), 200, "ready before the signal");
    server.signal_shutdown();
    let mut ready_after_signal = 0;
    let unready = loop {
        match probe.get(&readyz).send().await {
            Ok(r) if r.status() == 503 => break r,
            Ok(r) => {
                assert_eq!(r.status(), 200);
                ready_after_signal += 1;
            }
            Err(e) => panic!(
                "the replica stopped answering before readiness said 503 \
                 ({ready_after_signal} answers 200 after the signal): {e}"
            ),
        }
    };
    assert!(unready.headers().contains_key("retry-after"));
    let v: serde_json::Value = unready.json().await.unwrap();
    assert_eq!(v["ready"], false, "{v}");
    assert_eq!(v["shuttingDown"], true, "{v}");
    assert_eq!(
        v["postgres"], "ok",
        "unready because of the shutdown alone: {v}"
    );
    // Let the running ones finish.
    fake.release();
    let mut ok = 0;
    let mut refused = 0;
    for t in reqs {
        let (s, body) = t.await.unwrap();
        match s {
            200 => ok += 1,
            503 => {
                assert!(body.contains("service_unavailable"), "{body}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(ok + refused, 9);
    assert!(ok >= 6, "every running request completed (ok = {ok})");
    server.shutdown().await;
    assert_eq!(fake.in_flight.load(Ordering::SeqCst), 0);
    // Nothing of this replica is left: no lease, no waiter, no pending grant, not registered.
    let keys = keys_with_members(&r, &prefix).await;
    assert!(!keys.is_empty(), "the queue's keys were found");
    for (key, members) in keys {
        let leftover = [":lease:", ":q2:", ":uq2:", ":holders", ":grants:"]
            .iter()
            .any(|p| key.contains(p));
        if leftover {
            assert_eq!(members, 0, "{key} still holds {members}");
        }
    }
    let registered: Option<f64> = r
        .cmd(
            redis::cmd("ZSCORE")
                .arg(r.keys().group_key("api", "replicas"))
                .arg(&replica),
        )
        .await
        .unwrap();
    assert!(registered.is_none(), "the replica left the registry");
    let held: i64 = r.cmd(redis::cmd("ZCARD").arg(&global)).await.unwrap();
    assert_eq!(held, 0);
    // And it takes no new requests.
    assert!(
        c.post(server.url("/api/chat"))
            .bearer_auth(token("x"))
            .json(&serde_json::json!({"message": "q"}))
            .send()
            .await
            .is_err()
    );
    // Refused waiters got their query back: 3 spent per user at most.
    let store = migrate(&server.state.config().clone()).await;
    for u in 0..3 {
        let left = store.remaining(&format!("term-user-{u}")).await.unwrap();
        assert!(
            left >= 1,
            "user {u}: only answered queries stay spent ({left} left)"
        );
    }
}
