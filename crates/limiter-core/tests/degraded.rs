//! Redis unreachable: each replica admits within its share of the caps; when Redis returns, the
//! local permits are adopted and the shared caps apply again, without a restart.
#![allow(clippy::unwrap_used)]
mod common;

use std::time::Duration;

use limiter_core::{Admission, AdmissionConfig, Class, Permit, Rejection};
use tokio::time::Instant;

fn soon(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

async fn fill(adm: &Admission, users: &[&str], wait_ms: u64) -> Vec<Permit> {
    let mut tasks = Vec::new();
    for u in users {
        let (adm, u) = (adm.clone(), u.to_string());
        tasks.push(tokio::spawn(async move {
            adm.admit(u.as_bytes(), Class::Chat, soon(wait_ms)).await
        }));
    }
    let mut permits = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(p) => permits.push(p),
            Err(Rejection::Timeout { .. } | Rejection::Full) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    permits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_uses_local_shares_and_recovery_restores_shared_caps() {
    let mut server = testkit::RedisServer::start();
    let cfg = AdmissionConfig {
        global_cap: 6,
        user_cap: 2,
        heartbeat_ttl: Duration::from_millis(600),
        expected_replicas: 5, // overridden by the registry once reached
        ..AdmissionConfig::default()
    };
    let mut r = Vec::new();
    for _ in 0..3 {
        let adm = Admission::start(common::replica_at(&server.url(), "deg"), cfg.clone())
            .await
            .unwrap();
        r.push(adm);
    }
    // The registry tells each replica the fleet size.
    let deadline = Instant::now() + Duration::from_secs(5);
    while r.iter().any(|a| a.live_replicas() != 3) {
        assert!(
            Instant::now() < deadline,
            "registry never showed 3 replicas"
        );
        for a in &r {
            a.heartbeat().await.unwrap();
        }
    }

    server.stop();
    // Each replica admits at most global / replicas = 2 at once, whoever asks.
    let users = ["a", "b", "c", "d", "e"];
    let mut held = Vec::new();
    for a in &r {
        let got = fill(a, &users, 300).await;
        assert_eq!(got.len(), 2, "local share of the global cap");
        assert!(got.iter().all(Permit::is_local));
        assert!(a.degraded());
        held.push(got);
    }
    // Priority holds in the local queue too: with replica 0 full, a chat waiter that arrives
    // after an export waiter is served first.
    let (e_adm, c_adm) = (r[0].clone(), r[0].clone());
    let export = tokio::spawn(async move { e_adm.admit(b"x", Class::Export, soon(5000)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let chat = tokio::spawn(async move { c_adm.admit(b"y", Class::Chat, soon(5000)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    held[0].pop();
    let chat_permit = tokio::time::timeout(Duration::from_secs(2), chat)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!export.is_finished());
    drop(chat_permit);
    drop(export.await.unwrap().unwrap());

    // Keep two local permits on replica 1 across the recovery; let the rest go.
    let kept = std::mem::take(&mut held[1]);
    held.clear();

    server.restart();
    let back = Instant::now();
    while r.iter().any(Admission::degraded) {
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "still degraded 5 s after Redis returned"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The kept permits were adopted: Redis counts them, so only 4 more fit fleet-wide.
    assert_eq!(r[0].stats().await.unwrap().in_use, 2);
    let fresh = fill(&r[2], &["p", "q", "s", "t", "u", "v"], 300).await;
    assert_eq!(fresh.len(), 4, "shared cap minus the adopted permits");
    assert!(fresh.iter().all(|p| !p.is_local()));
    drop(kept);
    drop(fresh);
    let deadline = Instant::now() + Duration::from_secs(3);
    while r[0].stats().await.unwrap().in_use != 0 {
        assert!(
            Instant::now() < deadline,
            "adopted permits not released in Redis"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn without_fallback_an_outage_is_a_clear_refusal() {
    let mut server = testkit::RedisServer::start();
    let cfg = AdmissionConfig {
        local_fallback: false,
        ..AdmissionConfig::default()
    };
    let adm = Admission::start(common::replica_at(&server.url(), "nofb"), cfg)
        .await
        .unwrap();
    server.stop();
    assert!(matches!(
        adm.admit(b"u", Class::Chat, soon(1000)).await,
        Err(Rejection::Unavailable(_))
    ));
    assert!(!adm.degraded());
}
