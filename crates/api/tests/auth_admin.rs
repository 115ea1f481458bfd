//! Auth and admin over TCP: every bad token is 401, admin actions need the admin token, and a
//! forged `X-Forwarded-For` from an untrusted peer does not dodge the per-IP window.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use api::auth::jwt::{sign_hs256, sign_with_header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use serde_json::json;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_401() {
    let db = TestDb::create().await;
    let prefix = testkit::unique_prefix("auth");
    let mut cfg = config(&db, &prefix);
    cfg.auth.jwt_audience = Some("authenticated".into());
    cfg.limits.chat_per_ip_per_min = 1000;
    migrate(&cfg).await;
    let fake = FakeAssistant::new(Duration::from_millis(1), 1, Mode::Answer);
    let server = Server::start(cfg, fake.clone()).await;
    let c = client();
    let key = JWT_SECRET.as_bytes();
    let good = json!({"sub": "u", "exp": now() + 600, "aud": "authenticated"});
    let none_alg = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(good.to_string())
    );
    let bad: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("not a jwt", Some("Bearer abc".into())),
        ("alg none", Some(format!("Bearer {none_alg}"))),
        (
            "alg none signed",
            Some(format!(
                "Bearer {}",
                sign_with_header(key, &json!({"alg": "none"}), &good)
            )),
        ),
        (
            "HS512",
            Some(format!(
                "Bearer {}",
                sign_with_header(key, &json!({"alg": "HS512"}), &good)
            )),
        ),
        (
            "RS256",
            Some(format!(
                "Bearer {}",
                sign_with_header(key, &json!({"alg": "RS256"}), &good)
            )),
        ),
        (
            "wrong key",
            Some(format!("Bearer {}", sign_hs256(b"another-secret", &good))),
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                sign_hs256(
                    key,
                    &json!({"sub": "u", "exp": now() - 3600, "aud": "authenticated"})
                )
            )),
        ),
        (
            "no exp",
            Some(format!(
                "Bearer {}",
                sign_hs256(key, &json!({"sub": "u", "aud": "authenticated"}))
            )),
        ),
        (
            "wrong aud",
            Some(format!(
                "Bearer {}",
                sign_hs256(key, &json!({"sub": "u", "exp": now() + 600, "aud": "anon"}))
            )),
        ),
        (
            "no sub",
            Some(format!(
                "Bearer {}",
                sign_hs256(key, &json!({"exp": now() + 600, "aud": "authenticated"}))
            )),
        ),
        ("basic scheme", Some("Basic dXNlcjpwYXNz".into())),
        ("empty bearer", Some("Bearer ".into())),
        ("admin token as jwt", Some(format!("Bearer {ADMIN_TOKEN}"))),
        ("huge", Some(format!("Bearer {}", "a".repeat(20_000)))),
    ];
    for (name, auth) in bad {
        let mut req = c
            .post(server.url("/api/chat"))
            .json(&json!({"message": "hi"}));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{name}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer", "{name}");
        assert_eq!(problem_code(r).await, "unauthorized", "{name}");
    }
    assert_eq!(fake.calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    let r = c
        .post(server.url("/api/chat"))
        .header(
            "authorization",
            format!("Bearer {}", sign_hs256(key, &good)),
        )
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_actions_need_the_admin_token() {
    let db = TestDb::create().await;
    let prefix = testkit::unique_prefix("admin");
    let mut cfg = config(&db, &prefix);
    // Eleven wrong tokens from one address below: more than the default throttle allows.
    cfg.auth.admin_failures_per_min = 100;
    migrate(&cfg).await;
    let fake = FakeAssistant::new(Duration::from_millis(1), 1, Mode::Answer);
    let server = Server::start(cfg, fake).await;
    let c = client();
    let url = server.url("/api/system-health");
    for action in [
        "reset-queue",
        "reset-errors",
        "force-close-circuits",
        "cleanup-sessions",
        "emergency-cleanup",
    ] {
        let body = json!({ "action": action });
        let r = c.post(&url).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 401, "{action} without token");
        assert_eq!(problem_code(r).await, "unauthorized");
        let r = c
            .post(&url)
            .bearer_auth("wrong")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{action} with a wrong token");
        assert_eq!(problem_code(r).await, "forbidden");
        // A user's valid JWT is not the admin token either.
        let r = c
            .post(&url)
            .bearer_auth(token("u"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{action} with a user token");
        let r = c
            .post(&url)
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{action} as admin");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["action"], action);
        assert_eq!(v["ok"], true);
    }
    let r = c
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"action": "reboot"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["code"], "invalid_request");
    assert!(v["detail"].as_str().unwrap().contains("reset-queue"), "{v}");
    // Unknown action without a token: auth is checked first.
    let r = c
        .post(&url)
        .json(&json!({"action": "reboot"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Health: public sees status and score only; admin sees components.
    let v: serde_json::Value = c.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["status"], "healthy", "{v}");
    assert!(v["score"].as_u64().unwrap() >= 80);
    assert!(v.get("components").is_none());
    let v: serde_json::Value = c
        .get(&url)
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v.get("components").is_none());
    let v: serde_json::Value = c
        .get(&url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let comp = &v["components"];
    assert_eq!(comp["redis"]["status"], "up", "{v}");
    assert_eq!(comp["redis"]["mode"], "shared");
    assert!(comp["redis"]["latencyMs"].as_f64().is_some());
    assert_eq!(comp["postgres"]["status"], "up");
    assert!(comp["postgres"]["poolMax"].as_u64().is_some());
    assert!(
        comp["postgres"]["load"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["metric"] == "connection_usage_percent")
    );
    assert_eq!(comp["queue"]["globalCap"], 20);
    assert!(comp["queue"]["waiting"]["chat"].as_u64().is_some());
    assert_eq!(comp["breakers"]["wired"], false);
    assert!(comp["rateLimit"]["denied"].as_u64().is_some());
    assert!(comp["errors"]["errorRate"].as_f64().is_some());
    assert!(v["recommendations"].is_array());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_forwarded_for_from_untrusted_peer_changes_nothing() {
    let db = TestDb::create().await;
    let prefix = testkit::unique_prefix("xff");
    let mut cfg = config(&db, &prefix);
    cfg.quota.free_daily_queries = 100;
    migrate(&cfg).await;
    let fake = FakeAssistant::new(Duration::from_millis(1), 1, Mode::Answer);
    let server = Server::start(cfg, fake).await;
    let c = client();
    let mut statuses = Vec::new();
    for i in 0..7 {
        let r = c
            .post(server.url("/api/chat"))
            .bearer_auth(token("u-xff"))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .header("x-real-ip", format!("203.0.113.{i}"))
            .json(&json!({"message": "hi"}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, vec![200, 200, 200, 200, 200, 429, 429]);
    // Layer-1 denials are answered from the local cache after the first one.
    let snap = server.state.ip_stats().snapshot();
    assert_eq!(snap.denied, 2);
    assert_eq!(snap.denied_locally, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxy_forwarded_for_is_used() {
    let db = TestDb::create().await;
    let prefix = testkit::unique_prefix("xfft");
    let mut cfg = config(&db, &prefix);
    cfg.quota.free_daily_queries = 100;
    cfg.limits.chat_per_ip_per_min = 1;
    cfg.trusted_proxies = vec!["127.0.0.0/8".into()];
    migrate(&cfg).await;
    let fake = FakeAssistant::new(Duration::from_millis(1), 1, Mode::Answer);
    let server = Server::start(cfg, fake).await;
    let c = client();
    let send = |xff: &'static str| {
        let c = c.clone();
        let url = server.url("/api/chat");
        async move {
            c.post(url)
                .bearer_auth(token("u-proxy"))
                .header("x-forwarded-for", xff)
                .json(&json!({"message": "hi"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(send("198.51.100.1").await, 200);
    assert_eq!(
        send("198.51.100.2").await,
        200,
        "another client behind the proxy"
    );
    // The client prepends a forged entry; the proxy's right-most entry still identifies it.
    assert_eq!(send("6.6.6.6, 198.51.100.1").await, 429);
}
