//! Concurrent window checks in one process share script calls, and each caller still gets its own
//! exact decision. Each test owns a redis-server, so its command counts are its own.
#![allow(clippy::unwrap_used)]
mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use limiter_core::{SlidingWindow, WindowPolicy};
use testkit::RedisServer;

fn window(server: &RedisServer, limit: u32) -> SlidingWindow {
    SlidingWindow::new(
        common::replica_at(&server.url(), "co"),
        WindowPolicy::new("api", limit, Duration::from_secs(60)),
    )
    .unwrap()
}

/// Script calls the server ran so far (`INFO commandstats`).
fn script_calls(server: &RedisServer) -> u64 {
    let info = server.command("INFO commandstats");
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_fcall:"))
        .filter_map(|l| {
            let calls = l.split("calls=").nth(1)?.split(',').next()?;
            calls.parse::<u64>().ok()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_shares_script_calls_and_each_caller_gets_its_own_decision() {
    let server = RedisServer::start();
    let (limit, clients, per_client) = (5u32, 8usize, 50usize);
    let w = window(&server, limit);
    w.check(b"warm-up").await.unwrap();
    let before = script_calls(&server);
    // Every task starts at once, so the burst meets calls on the wire.
    let start = Arc::new(tokio::sync::Barrier::new(clients * per_client));
    let mut tasks = Vec::new();
    for i in 0..clients * per_client {
        let (w, start) = (w.clone(), Arc::clone(&start));
        tasks.push(tokio::spawn(async move {
            let client = format!("10.0.0.{}", i % clients);
            start.wait().await;
            (client.clone(), w.check(client.as_bytes()).await.unwrap())
        }));
    }
    let mut remaining: HashMap<String, Vec<u32>> = HashMap::new();
    for t in tasks {
        let (client, d) = t.await.unwrap();
        if d.allowed {
            remaining.entry(client).or_default().push(d.remaining);
        } else {
            assert_eq!(d.remaining, 0);
            assert!(d.retry_after > Duration::ZERO);
        }
    }
    // Per client: exactly the limit admitted, and each admission saw its own place in the log.
    assert_eq!(remaining.len(), clients);
    for (client, mut r) in remaining {
        r.sort_unstable();
        assert_eq!(r, (0..limit).collect::<Vec<_>>(), "client {client}");
    }
    let calls = script_calls(&server) - before;
    let checks = (clients * per_client) as u64;
    assert!(
        calls <= checks / 2,
        "{checks} concurrent checks took {calls} script calls"
    );
}

#[tokio::test]
async fn a_lone_caller_goes_at_once_in_its_own_call() {
    let server = RedisServer::start();
    let w = window(&server, 3);
    w.check(b"warm-up").await.unwrap();
    let before = script_calls(&server);
    for i in 0..5 {
        let d = w.check(b"10.0.0.1").await.unwrap();
        assert_eq!(d.allowed, i < 3);
    }
    assert_eq!(script_calls(&server) - before, 5);
}

/// Callers whose calls ride with a flight that nobody awaits any more (its callers went away)
/// still get their answers.
#[tokio::test]
async fn queued_callers_are_served_when_the_leading_callers_go_away() {
    let server = RedisServer::start();
    let w = window(&server, 100);
    w.check(b"warm-up").await.unwrap();
    server.pause();
    // Two leaders take the two flights (their calls now hang in the paused server) ...
    let mut leaders: Vec<_> = (0..2).map(|_| Box::pin(w.check(b"leader"))).collect();
    for l in &mut leaders {
        assert!(l.as_mut().now_or_never().is_none());
    }
    // ... the next callers queue behind them ...
    let mut queued: Vec<_> = (0..10).map(|_| Box::pin(w.check(b"queued"))).collect();
    for q in &mut queued {
        assert!(q.as_mut().now_or_never().is_none());
    }
    // ... and the leaders' callers give up.
    drop(leaders);
    server.resume();
    let answers = tokio::time::timeout(
        Duration::from_secs(10),
        futures_util::future::join_all(queued),
    )
    .await
    .expect("queued callers were left waiting");
    let admitted = answers
        .into_iter()
        .map(|a| a.unwrap())
        .filter(|d| d.allowed);
    assert_eq!(admitted.count(), 10);
}
