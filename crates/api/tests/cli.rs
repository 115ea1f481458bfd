//! The `fleetgate` binary: configuration errors name the variable and exit non-zero; `migrate`
//! applies the migrations; `serve` stops cleanly on SIGTERM.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn fleetgate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fleetgate"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

#[test]
fn missing_secret_and_bad_values_name_the_variable() {
    let out = fleetgate().arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("FLEETGATE_JWT_SECRET"), "{err}");

    let out = fleetgate()
        .arg("serve")
        .env("FLEETGATE_JWT_SECRET", "s3cret-value-never-printed")
        .env("FLEETGATE_QUEUE_TIMEOUT_MS", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("FLEETGATE_QUEUE_TIMEOUT_MS"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");

    let out = fleetgate()
        .arg("serve")
        .env("FLEETGATE_CONFIG", "/nonexistent/fleetgate.toml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FLEETGATE_CONFIG"));

    let out = fleetgate().arg("bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_then_serve_then_sigterm() {
    let db = TestDb::create().await;
    let prefix = testkit::unique_prefix("cli");
    let out = fleetgate()
        .arg("migrate")
        .env("FLEETGATE_DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = testkit::free_port();
    let mut child = fleetgate()
        .arg("serve")
        .env("FLEETGATE_DATABASE_URL", &db.url)
        .env("FLEETGATE_REDIS_URL", testkit::redis_url())
        .env("FLEETGATE_REDIS_PREFIX", &prefix)
        .env("FLEETGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("FLEETGATE_JWT_SECRET", JWT_SECRET)
        .env("FLEETGATE_PIPELINE", "echo")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let c = client();
    let url = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..100 {
        if c.get(format!("{url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "server came up");
    let r = c
        .post(format!("{url}/api/chat"))
        .bearer_auth(token("cli-user"))
        .json(&serde_json::json!({"message": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["queriesRemaining"], 2);
    // SIGTERM: the process drains and exits 0.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "exited after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
}
