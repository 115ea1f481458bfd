//! Redis down: the per-IP windows fail open or closed per configuration, admission uses this
//! replica's local share of the caps, and health says `degraded`.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use api::secret::Secret;
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
    let mut closed_cfg = cfg.clone();
    closed_cfg.limits.fail_open = false;
    migrate(&cfg).await;
    let open = Server::start(cfg, Arc::new(api::EchoPipeline)).await;
    let closed = Server::start(closed_cfg, Arc::new(api::EchoPipeline)).await;
    let c = client();
    assert_eq!(chat(&c, &open, "deg-1", "before").await.status(), 200);

    redis_server.stop();
    let r = chat(&c, &open, "deg-1", "during").await;
    assert_eq!(r.status(), 200, "fail-open window, local admission");
    let r = chat(&c, &closed, "deg-2", "during").await;
    assert_eq!(r.status(), 503, "fail-closed window");
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(problem_code(r).await, "service_unavailable");

    let v: serde_json::Value = c
        .get(open.url("/api/system-health"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "degraded", "{v}");
    assert_eq!(v["components"]["redis"]["status"], "down");
    assert_eq!(v["components"]["redis"]["mode"], "degraded");
    assert!(v["components"]["rateLimit"]["failedOpen"].as_u64().unwrap() >= 1);
    // The fleet-wide figures need Redis; this replica's own are still reported.
    assert!(v["components"]["queue"].is_null());
    let local = &v["components"]["admission"];
    assert_eq!(local["mode"], "degraded", "{v}");
    // Two replicas share the registry (the other may not have been seen yet).
    let known = local["knownReplicas"].as_u64().unwrap();
    assert!((1..=2).contains(&known), "{v}");
    assert_eq!(local["localShare"].as_u64().unwrap(), 20 / known, "{v}");
    assert_eq!(local["localSlotsInUse"], 0);
    // Still ready: Redis down is a declared degraded mode, PostgreSQL is up.
    assert_eq!(
        c.get(open.url("/readyz")).send().await.unwrap().status(),
        200
    );

    // Redis back: shared limits resume without a restart.
    redis_server.restart();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v: serde_json::Value = c
            .get(open.url("/api/system-health"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
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
