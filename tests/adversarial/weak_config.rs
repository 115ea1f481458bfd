//! Weak configuration used to be accepted: a 1-byte JWT secret or admin token, any leeway, no way
//! to require `iss`, and unlimited guesses at the admin token.

use std::time::Duration;

use serde_json::json;
use tokio::process::Command;

use crate::harness::fleet::{ADMIN_TOKEN, JWT_SECRET};
use crate::harness::{bins, serial};
use crate::support::{Replica, ask};

/// `fleetgate serve` with `vars`: its exit code and stderr, or `None` if it was still running
/// (serving) after 15 s.
async fn serve_with(vars: &[(&str, &str)]) -> Option<(i32, String)> {
    let mut cmd = Command::new(bins::fleetgate());
    cmd.arg("serve")
        .env_clear()
        .env(
            "FLEETGATE_LISTEN",
            format!("127.0.0.1:{}", testkit::free_port()),
        )
        .env("FLEETGATE_REDIS_URL", testkit::redis_url())
        .env("FLEETGATE_REDIS_PREFIX", testkit::unique_prefix("weak"))
        .env(
            "FLEETGATE_DATABASE_URL",
            "postgres://postgres@127.0.0.1:9/none",
        )
        .envs(vars.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().unwrap();
    match tokio::time::timeout(Duration::from_secs(15), child.wait_with_output()).await {
        Ok(out) => {
            let out = out.unwrap();
            Some((
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ))
        }
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_secrets_and_a_long_leeway_stop_the_service() {
    let _s = serial().await;
    let long = "0123456789abcdef0123456789abcdef";
    // (what, variables, the variable the error must name)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: [Case<'_>; 5] = [
        (
            "1-byte JWT secret",
            vec![("FLEETGATE_JWT_SECRET", "x")],
            "FLEETGATE_JWT_SECRET",
        ),
        (
            "31-byte JWT secret",
            vec![("FLEETGATE_JWT_SECRET", &long[1..])],
            "FLEETGATE_JWT_SECRET",
        ),
        (
            "short admin token",
            vec![
                ("FLEETGATE_JWT_SECRET", long),
                ("FLEETGATE_ADMIN_TOKEN", "admin"),
            ],
            "FLEETGATE_ADMIN_TOKEN",
        ),
        (
            "short user-hash key",
            vec![
                ("FLEETGATE_JWT_SECRET", long),
                ("FLEETGATE_USER_HASH_KEY", "k"),
            ],
            "FLEETGATE_USER_HASH_KEY",
        ),
        (
            "a day of leeway",
            vec![
                ("FLEETGATE_JWT_SECRET", long),
                ("FLEETGATE_JWT_LEEWAY_SECS", "86400"),
            ],
            "FLEETGATE_JWT_LEEWAY_SECS",
        ),
    ];
    for (what, vars, var) in cases {
        let Some((code, err)) = serve_with(&vars).await else {
            panic!("{what}: the service started");
        };
        assert_eq!(code, 2, "{what}: {err}");
        assert!(err.contains(var), "{what}: {err}");
        // The message never shows the value.
        for (_, v) in &vars {
            assert!(
                v.len() < 4 || !err.contains(v),
                "{what}: value printed: {err}"
            );
        }
    }
    let (_, err) = serve_with(&[("FLEETGATE_JWT_SECRET", "x")]).await.unwrap();
    assert!(err.contains("at least 32 bytes"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_without_the_configured_issuer_are_refused() {
    let _s = serial().await;
    let iss = "https://project.supabase.example/auth/v1";
    let r = Replica::start(
        "issuer",
        &[
            ("FLEETGATE_JWT_ISSUER", iss),
            ("FLEETGATE_PIPELINE", "echo"),
        ],
    )
    .await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let mint =
        |claims: serde_json::Value| api::auth::jwt::sign_hs256(JWT_SECRET.as_bytes(), &claims);
    let cases = [
        (mint(json!({"sub": "rita", "exp": exp})), 401),
        (
            mint(json!({"sub": "rita", "exp": exp, "iss": "https://evil.example"})),
            401,
        ),
        (mint(json!({"sub": "rita", "exp": exp, "iss": iss})), 200),
    ];
    for (token, want) in cases {
        let resp = r
            .client
            .post(r.url("/api/chat"))
            .bearer_auth(token)
            .json(&ask("hello", false))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_admin_tokens_are_throttled_per_address() {
    let _s = serial().await;
    let r = Replica::start(
        "adminguess",
        &[("FLEETGATE_ADMIN_AUTH_FAILURES_PER_MIN", "3")],
    )
    .await;
    let action = |token: &'static str, ip: &'static str| {
        r.client
            .post(r.url("/api/system-health"))
            .bearer_auth(token)
            .header("x-forwarded-for", ip)
            .json(&json!({"action": "reset-errors"}))
            .send()
    };
    let attacker = "198.51.100.66";
    for i in 0..3 {
        let resp = action("guess-guess-guess-guess-guess-00", attacker)
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "guess {i}");
    }
    let resp = action("guess-guess-guess-guess-guess-01", attacker)
        .await
        .unwrap();
    assert_eq!(resp.status(), 429, "the fourth wrong token");
    assert!(resp.headers().contains_key("retry-after"));
    // Blocked: even the right token is not checked, so a guess cannot be confirmed.
    let resp = action(ADMIN_TOKEN, attacker).await.unwrap();
    assert_eq!(resp.status(), 429, "the right token from a blocked address");
    let view: serde_json::Value = r
        .client
        .get(r.url("/api/system-health"))
        .bearer_auth(ADMIN_TOKEN)
        .header("x-forwarded-for", attacker)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(view.get("components").is_none(), "{view}");
    // Other addresses are not affected.
    let resp = action(ADMIN_TOKEN, "198.51.100.67").await.unwrap();
    assert_eq!(resp.status(), 200);
    // A page sending its user's JWT with every health poll is not guessing: never blocked.
    let health = |bearer: String| {
        r.client
            .get(r.url("/api/system-health"))
            .bearer_auth(bearer)
            .header("x-forwarded-for", "198.51.100.68")
            .send()
    };
    for _ in 0..12 {
        let v: serde_json::Value = health(crate::support::token("uma"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(v.get("components").is_none());
    }
    let v: serde_json::Value = health(ADMIN_TOKEN.into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v.get("components").is_some(), "{v}");
}
