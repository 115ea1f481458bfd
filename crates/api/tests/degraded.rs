//! Redis down: the per-IP windows fail open or closed per configuration, admission uses this
//! replica's local share of the caps, and health says `degraded`.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use api::config::secret::Secret;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_fail_open_serves_and_health_is_degraded() {
    let db = TestDb::create().await;
    let mut redis_server = testkit::RedisServer::start();
    let prefix = testkit::unique_prefix("deg");
    let mut cfg = config(&db, &prefix);
    cfg.redis.url = Secret::new(redis_server.url());
    cfg.redis.timeout_ms = 300;
    cfg.admission.heartbeat_ttl_ms = 300;
    // The local share for the whole outage: under the safety default a replica of an idle fleet
    // admits nothing locally (nothing of it is counted in Redis).
    cfg.admission.outage_policy = api::config::OutagePolicy::Availability;
    let mut closed_cfg = cfg.clone();
    closed_cfg.limits.fail_open = false;
    migrate(&cfg).await;
    let open = Server::start(cfg.clone(), Arc::new(chat::EchoAssistant)).await;
    let closed = Server::start(closed_cfg, Arc::new(chat::EchoAssistant)).await;
    // Its calls hold until released: the observer of what its local share lets through.
    let fake = FakeAssistant::new(Duration::from_secs(30), usize::MAX, Mode::Answer);
    let capped = Server::start(cfg, fake.clone()).await;
    let c = client();
    assert_eq!(chat(&c, &open, "deg-1", "before").await.status(), 200);
    // The fleet is these 3 replicas (the configured expected size is 3 too, so wait for 2 of
    // them to have read all 3 from the registry, not merely to keep the configured figure).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for s in [&open, &capped] {
        loop {
            let v = admin_health(&c, s).await;
            let q = &v["components"]["queue"];
            if q["liveReplicas"] == 3 && v["components"]["admission"]["knownReplicas"] == 3 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "3 replicas never registered: {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    redis_server.stop();
    let r = chat(&c, &open, "deg-1", "during").await;
    assert_eq!(r.status(), 200, "fail-open window, local admission");
    let r = chat(&c, &closed, "deg-2", "during").await;
    assert_eq!(r.status(), 503, "fail-closed window");
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(problem_code(r).await, "service_unavailable");

    let v = admin_health(&c, &open).await;
    assert_eq!(v["status"], "degraded", "{v}");
    assert_eq!(v["components"]["redis"]["status"], "down");
    assert_eq!(v["components"]["redis"]["mode"], "degraded");
    assert!(v["components"]["rateLimit"]["failedOpen"].as_u64().unwrap() >= 1);
    // The fleet-wide figures need Redis; this replica's own are still reported.
    assert!(v["components"]["queue"].is_null());
    let local = &v["components"]["admission"];
    assert_eq!(local["mode"], "degraded", "{v}");
    // Three replicas in the registry when Redis went: floor(20 / 3) each.
    assert_eq!(local["knownReplicas"], 3, "{v}");
    assert_eq!(local["localShare"], 6, "{v}");
    assert_eq!(local["localSlotsInUse"], 0);
    // And the share is what runs: 8 users at once on `capped`, 6 run, 2 wait.
    let pending: Vec<_> = (0..8)
        .map(|i| {
            let (c, url) = (c.clone(), capped.url("/api/chat"));
            tokio::spawn(async move {
                c.post(url)
                    .bearer_auth(token(&format!("deg-share-{i}")))
                    .json(&serde_json::json!({"message": "q", "useRAG": false}))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    assert!(
        fake.wait_in_flight(6, Duration::from_secs(20)).await,
        "6 running"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = admin_health(&c, &capped).await;
        let local = &v["components"]["admission"];
        if local["localWaiters"] == 2 {
            assert_eq!(local["localSlotsInUse"], 6, "{v}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "2 never waited: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fake.release();
    for p in pending {
        assert_eq!(p.await.unwrap(), 200);
    }
    assert_eq!(fake.max(), 6, "the local share, never more, ran at once");
    // Still ready: Redis down is a declared degraded mode, PostgreSQL is up.
    assert_eq!(
        c.get(open.url("/readyz")).send().await.unwrap().status(),
        200
    );

    // Redis back: shared limits resume without a restart.
    redis_server.restart();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = admin_health(&c, &open).await;
        if v["components"]["redis"]["mode"] == "shared" {
            assert_eq!(v["components"]["admission"]["mode"], "shared");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "back to shared mode: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(chat(&c, &open, "deg-1", "after").await.status(), 200);
}

/// A replica that never reached Redis sizes its share by the configured fleet size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_never_reached_uses_the_expected_fleet_size() {
    let db = TestDb::create().await;
    let mut cfg = config(&db, &testkit::unique_prefix("deg-never"));
    // Nothing listens there.
    cfg.redis.url = Secret::new(format!("redis://127.0.0.1:{}", testkit::free_port()));
    cfg.redis.timeout_ms = 300;
    cfg.admission.heartbeat_ttl_ms = 300;
    cfg.admission.expected_replicas = 4;
    migrate(&cfg).await;
    let server = Server::start(cfg, Arc::new(chat::EchoAssistant)).await;
    let c = client();
    assert_eq!(chat(&c, &server, "never-1", "q").await.status(), 200);
    let v = admin_health(&c, &server).await;
    let local = &v["components"]["admission"];
    assert_eq!(local["mode"], "degraded", "{v}");
    assert_eq!(local["knownReplicas"], 4, "{v}");
    assert_eq!(local["localShare"], 5, "20 / 4: {v}");
}

async fn admin_health(c: &reqwest::Client, s: &Server) -> serde_json::Value {
    c.get(s.url("/api/system-health"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
