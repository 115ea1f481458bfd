//! A Redis outage that begins with the shared slots spread unevenly over the replicas: the local
//! admission of the replicas that held few must leave room for the excess of the one that held
//! many, so the fleet never runs more than the global cap, at the outage's start or later.
#![allow(clippy::unwrap_used)]
mod common;

use common::HIGH;

use std::time::Duration;

use limiter_core::{Admission, AdmissionConfig, Permit, Rejection};
use tokio::time::Instant;

fn soon(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

/// Admits each of `users` (distinct users) if a slot frees within `wait_ms`.
async fn fill(adm: &Admission, users: &[String], wait_ms: u64) -> Vec<Permit> {
    let mut tasks = Vec::new();
    for u in users {
        let (adm, u) = (adm.clone(), u.clone());
        tasks.push(tokio::spawn(async move {
            adm.admit(u.as_bytes(), HIGH, soon(wait_ms)).await
        }));
    }
    let mut permits = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(p) => permits.push(p),
            Err(Rejection::Timeout { .. } | Rejection::Full | Rejection::UserQueueFull) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    permits
}

fn users(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

async fn wait_for(what: &str, secs: u64, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done().await {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Cap 12 over 3 replicas (shares of 4). When Redis dies, A runs 8 shared slots, B 1, C none
/// (9 of 12). With shares alone B would start 3 more and C 4: 15 at once. Each may add only a
/// third of the 3 free slots: B and C one each, A none (it is over its share); as A's slots end it
/// refills to its share, never beyond. The held permits are the count: every one is running work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uneven_holdings_at_the_outage_never_exceed_the_cap() {
    let mut server = testkit::RedisServer::start();
    let cap = 12;
    let cfg = AdmissionConfig {
        global_cap: cap,
        user_cap: 2,
        heartbeat_ttl: Duration::from_millis(600),
        expected_replicas: 3,
        ..common::adm_cfg()
    };
    let mut r = Vec::new();
    for _ in 0..3 {
        let adm = Admission::start(common::replica_at(&server.url(), "uneven"), cfg.clone())
            .await
            .unwrap();
        r.push(adm);
    }
    wait_for("the registry shows 3 replicas", 5, async || {
        for a in &r {
            a.heartbeat().await.unwrap();
        }
        r.iter().all(|a| a.live_replicas() == 3)
    })
    .await;
    let mut held: Vec<Vec<Permit>> = vec![
        fill(&r[0], &users("a", 8), 1000).await,
        fill(&r[1], &users("b", 1), 1000).await,
        Vec::new(),
    ];
    assert_eq!((held[0].len(), held[1].len()), (8, 1));
    assert!(held.iter().flatten().all(|p| !p.is_local()));
    // Each replica's last view of the fleet: 9 in use.
    for a in &r {
        a.heartbeat().await.unwrap();
    }

    server.stop();
    wait_for("every replica degraded", 5, async || {
        r.iter().all(Admission::degraded)
    })
    .await;
    let total = |held: &Vec<Vec<Permit>>| held.iter().map(Vec::len).sum::<usize>();
    for (i, a) in r.iter().enumerate() {
        let got = fill(a, &users(&format!("local{i}-"), 6), 300).await;
        assert!(got.iter().all(Permit::is_local));
        held[i].extend(got);
    }
    let limits: Vec<u32> = r.iter().map(Admission::local_share).collect();
    let counts: Vec<usize> = held.iter().map(Vec::len).collect();
    eprintln!("at the outage's start: limits {limits:?}, running {counts:?}");
    assert_eq!(
        counts,
        [8, 2, 1],
        "A over its share adds nothing; B and C a third of the 3 free slots each"
    );
    assert_eq!(limits, [4, 2, 1]);
    assert!(total(&held) <= cap as usize);

    // A's shared slots end one by one; A refills its share, and the fleet stays within the cap.
    let mut round = 0;
    while held[0].iter().any(|p| !p.is_local()) {
        let at = held[0].iter().position(|p| !p.is_local()).unwrap();
        drop(held[0].swap_remove(at));
        round += 1;
        for (i, a) in r.iter().enumerate() {
            let got = fill(a, &users(&format!("r{round}-{i}-"), 3), 100).await;
            held[i].extend(got);
        }
        assert!(
            total(&held) <= cap as usize,
            "{} running at once: {:?}",
            total(&held),
            held.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }
    let counts: Vec<usize> = held.iter().map(Vec::len).collect();
    assert_eq!(counts, [4, 2, 1], "A at its share, B and C at their limits");

    // Redis returns (empty): what runs is registered, and the shared cap applies again.
    server.restart();
    wait_for("every replica shared again", 15, async || {
        !r.iter().any(Admission::degraded)
    })
    .await;
    assert_eq!(r[0].stats().await.unwrap().in_use, 7);
    let more = fill(&r[2], &users("after", 8), 500).await;
    assert_eq!(more.len(), 5, "the shared cap counts the 7 running");
    assert!(more.iter().all(|p| !p.is_local()));
    assert_eq!(r[2].local_share(), 4, "the outage's limit ended with it");
    drop((held, more));
}
