//! The scripts run as one Redis Functions library (FCALL) where the server takes it, load it
//! again when the server lost it, and run by EVALSHA where Functions are refused. Each test owns
//! its redis-server, so the command counts are its own.
#![allow(clippy::unwrap_used)]
mod common;

use std::time::Duration;

use limiter_core::{Admission, AdmissionConfig, Class, SlidingWindow, WindowPolicy};
use testkit::RedisServer;
use tokio::time::Instant;

/// Calls of `command` the server ran so far (`INFO commandstats`).
fn calls(server: &RedisServer, command: &str) -> u64 {
    let info = server.command("INFO commandstats");
    let head = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&head)?.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// A window decision and an admission (grant, queue, hand-off) give the right answers.
async fn exercise(server: &RedisServer, prefix: &str) {
    let redis = common::replica_at(&server.url(), prefix);
    let w = SlidingWindow::new(
        redis.clone(),
        WindowPolicy::new("api", 2, Duration::from_secs(60)),
    )
    .unwrap();
    let mut allowed = Vec::new();
    for _ in 0..3 {
        allowed.push(w.check(b"10.0.0.1").await.unwrap().allowed);
    }
    assert_eq!(allowed, [true, true, false]);
    let cfg = AdmissionConfig {
        group: format!("{prefix}-g"),
        global_cap: 1,
        ..AdmissionConfig::default()
    };
    let adm = Admission::start(redis, cfg).await.unwrap();
    let far = Instant::now() + Duration::from_secs(20);
    let first = adm.admit(b"a", Class::new(0), far).await.unwrap();
    let adm2 = adm.clone();
    let second = tokio::spawn(async move { adm2.admit(b"b", Class::new(0), far).await });
    // The second waits until the first is released, then gets the slot.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!second.is_finished());
    assert!(first.release().await.unwrap());
    let second = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(second.release().await.unwrap());
    adm.shutdown().await;
}

#[tokio::test]
async fn scripts_run_as_functions_and_the_library_is_loaded_again_when_lost() {
    let server = RedisServer::start();
    exercise(&server, "fn1").await;
    let (fcalls, evalshas) = (calls(&server, "fcall"), calls(&server, "evalsha"));
    assert!(fcalls > 0, "no FCALL");
    assert_eq!(evalshas, 0, "EVALSHA used beside Functions");
    let lib = &limiter_core::scripts::library().name;
    assert!(server.command("FUNCTION LIST").contains(lib.as_str()));
    // As after a restart on an empty server: the library is gone.
    assert!(server.command("FUNCTION FLUSH").starts_with("+OK"));
    exercise(&server, "fn2").await;
    assert!(calls(&server, "fcall") > fcalls);
    assert_eq!(calls(&server, "evalsha"), 0);
    assert!(server.command("FUNCTION LIST").contains(lib.as_str()));
}

#[tokio::test]
async fn without_function_load_scripts_run_by_evalsha() {
    // FCALL exists but the library cannot be loaded (an ACL or proxy refusing FUNCTION).
    let server = RedisServer::start_with_args(&["--rename-command", "FUNCTION", ""]);
    exercise(&server, "nofn").await;
    assert!(calls(&server, "evalsha") > 0);
}

#[tokio::test]
async fn without_fcall_scripts_run_by_evalsha() {
    // As on a Redis before 7: neither FCALL nor FUNCTION.
    let server = RedisServer::start_with_args(&[
        "--rename-command",
        "FUNCTION",
        "",
        "--rename-command",
        "FCALL",
        "",
    ]);
    exercise(&server, "nofcall").await;
    assert!(calls(&server, "evalsha") > 0);
    assert_eq!(calls(&server, "fcall"), 0);
}
