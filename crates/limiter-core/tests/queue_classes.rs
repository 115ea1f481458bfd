//! Priority classes are configuration: five of them, served in strict order across replicas,
//! FIFO within each, and the global cap held throughout (counted by the test itself).
#![allow(clippy::unwrap_used)]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Held;
use limiter_core::{Admission, AdmissionConfig, Class, LimiterError, Permit, Rejection};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

const CAP: usize = 3;

/// Counts a grant, never above the cap.
fn grant(held: &Held) {
    let n = held.granted();
    assert!(n <= CAP, "{n} slots held under a cap of {CAP}");
}

struct Granted {
    class: usize,
    arrival: usize,
    permit: Permit,
}

fn five_classes() -> AdmissionConfig {
    AdmissionConfig {
        classes: ["urgent", "high", "normal", "low", "bulk"]
            .map(String::from)
            .to_vec(),
        global_cap: CAP as u32,
        user_cap: 1,
        ..AdmissionConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_configured_classes_are_served_in_strict_order_within_the_cap() {
    let prefix = testkit::unique_prefix("q5");
    let cfg = five_classes();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(
            Admission::start(common::replica(&prefix), cfg.clone())
                .await
                .unwrap(),
        );
    }
    assert_eq!(replicas[0].classes().len(), 5);
    let held = Arc::new(Held::default());

    // Holders fill the cap.
    let mut running = Vec::new();
    for i in 0..CAP {
        let p = replicas[i % 3]
            .admit(format!("holder{i}").as_bytes(), Class::new(0), far())
            .await
            .unwrap();
        grant(&held);
        running.push(p);
    }

    // 20 waiters, 4 per class, arriving with the classes shuffled; each is queued before the next
    // arrives, so arrival order is the order of this loop.
    let classes = [4, 2, 0, 3, 1, 1, 4, 0, 2, 3, 3, 0, 4, 1, 2, 2, 1, 3, 0, 4];
    let (tx, mut grants) = mpsc::unbounded_channel::<Granted>();
    let mut tasks = Vec::new();
    for (arrival, &class) in classes.iter().enumerate() {
        let adm = replicas[arrival % 3].clone();
        let (ptx, mut prx) = watch::channel(0u32);
        let (tx, held) = (tx.clone(), Arc::clone(&held));
        tasks.push(tokio::spawn(async move {
            let user = format!("w{arrival}");
            let permit = adm
                .admit_watched(user.as_bytes(), Class::new(class), far(), ptx)
                .await
                .unwrap();
            grant(&held);
            tx.send(Granted {
                class: usize::from(class),
                arrival,
                permit,
            })
            .ok()
            .unwrap();
        }));
        tokio::time::timeout(Duration::from_secs(5), prx.wait_for(|p| *p > 0))
            .await
            .expect("waiter never queued")
            .unwrap();
    }
    let stats = replicas[1].stats().await.unwrap();
    assert_eq!(stats.queued, vec![4, 4, 4, 4, 4]);

    // One slot frees at a time; the next grant is awaited before the next release, so the order
    // of grants is the order this loop sees them in.
    let mut order = Vec::new();
    let mut running: std::collections::VecDeque<Permit> = running.into();
    while order.len() < classes.len() {
        let oldest = running.pop_front().unwrap();
        held.released();
        oldest.release().await.unwrap();
        let g = tokio::time::timeout(Duration::from_secs(5), grants.recv())
            .await
            .expect("a freed slot was not handed on")
            .unwrap();
        order.push((g.class, g.arrival));
        running.push_back(g.permit);
    }
    let mut expected = order.clone();
    expected.sort();
    assert_eq!(
        order, expected,
        "grants by class, then by arrival within a class"
    );
    assert_eq!(order.first(), Some(&(0, 2)));
    assert_eq!(order.last(), Some(&(4, 19)));
    assert_eq!(held.max(), CAP, "the cap was reached");
    for t in tasks {
        t.await.unwrap();
    }
    for p in running {
        held.released();
        p.release().await.unwrap();
    }
    let s = replicas[0].stats().await.unwrap();
    assert_eq!((s.in_use, s.total_queued()), (0, 0));
}

/// A class the queue was not configured with is refused before anything reaches Redis.
#[tokio::test]
async fn a_class_out_of_range_is_refused() {
    let prefix = testkit::unique_prefix("q5bad");
    let adm = Admission::start(common::replica(&prefix), five_classes())
        .await
        .unwrap();
    assert_eq!(adm.classes().get("bulk"), Some(Class::new(4)));
    let err = adm.admit(b"u", Class::new(5), far()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Rejection::Unavailable(LimiterError::InvalidArgument(_))
        ),
        "{err:?}"
    );
    assert_eq!(adm.stats().await.unwrap().in_use, 0);
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(30)
}
