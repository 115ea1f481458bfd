//! One user cannot take the queue from everyone else: a per-user cap on queued waiters, and a
//! dispatch that reaches an eligible waiter however many waiters of a user at its cap are ahead.
#![allow(clippy::unwrap_used)]
mod common;

use std::time::Duration;

use limiter_core::{Admission, AdmissionConfig, Class, Permit, Rejection};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

fn soon(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

async fn start(prefix: &str, cfg: &AdmissionConfig) -> Admission {
    Admission::start(common::replica(prefix), cfg.clone())
        .await
        .unwrap()
}

/// A waiter that reports its queue position; `queued` resolves once it is in the queue (position
/// > 0) and yields `None` if the admit ended first (refused).
fn spawn_waiter(
    adm: &Admission,
    user: &'static str,
    deadline: Instant,
) -> (JoinHandle<Result<Permit, Rejection>>, watch::Receiver<u32>) {
    let (tx, rx) = watch::channel(0u32);
    let adm = adm.clone();
    let task = tokio::spawn(async move {
        adm.admit_watched(user.as_bytes(), Class::new(0), deadline, tx)
            .await
    });
    (task, rx)
}

/// Waits until the waiter is queued (`true`) or its admit ended without queueing (`false`).
async fn queued(rx: &mut watch::Receiver<u32>) -> bool {
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|p| *p > 0))
        .await
        .expect("waiter neither queued nor refused")
        .is_ok()
}

/// One user sends many requests while the fleet is busy: they fill the queue up to the queue's
/// length, and then every other user is turned away with `queue_full`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_cannot_fill_the_queue_for_everyone() {
    let prefix = testkit::unique_prefix("qfair");
    let cfg = AdmissionConfig {
        global_cap: 1,
        user_cap: 1,
        max_queue: 20,
        max_queued_per_user: 5,
        ..AdmissionConfig::default()
    };
    let a = start(&prefix, &cfg).await;
    let b = start(&prefix, &cfg).await;
    let holder = a.admit(b"holder", Class::new(0), soon(5)).await.unwrap();

    // Mallory: 30 requests, more than the whole queue, from both replicas.
    let mut mallory = Vec::new();
    let mut mallory_queued = 0;
    let mut mallory_refused = 0;
    for i in 0..30 {
        let replica = if i % 2 == 0 { &a } else { &b };
        let (task, mut rx) = spawn_waiter(replica, "mallory", soon(30));
        if queued(&mut rx).await {
            mallory_queued += 1;
            mallory.push(task);
        } else {
            let refusal = task.await.unwrap().unwrap_err();
            assert!(
                matches!(refusal, Rejection::UserQueueFull),
                "mallory's request {i}: {refusal:?}"
            );
            mallory_refused += 1;
        }
    }
    assert_eq!((mallory_queued, mallory_refused), (5, 25));
    // Another user is still queued, not refused.
    let (bob, mut bob_rx) = spawn_waiter(&b, "bob", soon(30));
    let bob_queued = queued(&mut bob_rx).await;
    let bob_refusal = if bob_queued {
        None
    } else {
        Some(format!("{:?}", bob.await.unwrap().unwrap_err()))
    };
    assert!(
        bob_queued,
        "bob was refused ({bob_refusal:?}) after mallory queued {mallory_queued} waiters"
    );
    drop(holder);
    for t in mallory {
        t.abort();
    }
}

/// A slot frees while 250 waiters of a user at its cap are queued ahead of bob: bob is granted
/// at once, not after the dispatch has walked past all of them (or never).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eligible_waiter_behind_many_blocked_ones_is_granted_promptly() {
    let prefix = testkit::unique_prefix("qblocked");
    let cfg = AdmissionConfig {
        global_cap: 2,
        user_cap: 1,
        max_queue: 1000,
        max_queued_per_user: 1000,
        ..AdmissionConfig::default()
    };
    let a = start(&prefix, &cfg).await;
    let b = start(&prefix, &cfg).await;
    // Alice holds her one slot; carol the other: the fleet is full.
    let alice = a.admit(b"alice", Class::new(0), soon(5)).await.unwrap();
    let carol = b.admit(b"carol", Class::new(0), soon(5)).await.unwrap();
    let mut blocked = Vec::new();
    for i in 0..250 {
        let replica = if i % 2 == 0 { &a } else { &b };
        let (task, mut rx) = spawn_waiter(replica, "alice", soon(60));
        assert!(queued(&mut rx).await, "alice's waiter {i} was refused");
        blocked.push(task);
    }
    let (bob, mut bob_rx) = spawn_waiter(&a, "bob", soon(8));
    assert!(queued(&mut bob_rx).await, "bob was refused");
    assert_eq!(*bob_rx.borrow(), 251, "bob is behind alice's waiters");

    // Carol's slot frees: alice is at her cap, so bob is the first eligible waiter.
    let freed = Instant::now();
    carol.release().await.unwrap();
    let granted = bob.await.unwrap();
    let waited = freed.elapsed();
    let permit = granted.unwrap_or_else(|e| {
        panic!("bob was not granted while a slot was free: {e:?} after {waited:?}")
    });
    assert!(
        waited < Duration::from_secs(2),
        "bob waited {waited:?} with a free slot"
    );
    drop(permit);
    drop(alice);
    for t in blocked {
        t.abort();
    }
}
