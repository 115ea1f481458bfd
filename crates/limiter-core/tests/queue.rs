//! The admission queue across replicas: each replica is an `Admission` with its own connection.
#![allow(clippy::unwrap_used)]
mod common;

use common::{HIGH, LOW, MID};

use std::time::Duration;

use limiter_core::scripts::ADMISSION_ENTER;
use limiter_core::{Admission, AdmissionConfig, Class, Permit, Rejection};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

fn cfg(global: u32, user: u32) -> AdmissionConfig {
    AdmissionConfig {
        global_cap: global,
        user_cap: user,
        ..common::adm_cfg()
    }
}

async fn replicas(prefix: &str, n: usize, cfg: &AdmissionConfig) -> Vec<Admission> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(
            Admission::start(common::replica(prefix), cfg.clone())
                .await
                .unwrap(),
        );
    }
    v
}

/// Enters the queue (chat class, global cap 1, user cap 2) with the raw script, as a replica's
/// process would, with no guard behind it: a replica that dies right after never heartbeats,
/// renews or leaves.
async fn raw_enter(
    redis: &limiter_core::RedisHandle,
    lease_ttl_ms: u64,
    heartbeat_ttl_ms: u64,
    id: &str,
    user_key: &str,
    replica: &str,
) -> Vec<i64> {
    let caps = (1, 2);
    raw_enter_capped(
        redis,
        caps,
        lease_ttl_ms,
        heartbeat_ttl_ms,
        id,
        user_key,
        replica,
    )
    .await
}

/// [`raw_enter`] with caps `(global, user)`.
async fn raw_enter_capped(
    redis: &limiter_core::RedisHandle,
    (global_cap, user_cap): (u32, u32),
    lease_ttl_ms: u64,
    heartbeat_ttl_ms: u64,
    id: &str,
    user_key: &str,
    replica: &str,
) -> Vec<i64> {
    let keys = redis.keys();
    redis
        .eval(
            &ADMISSION_ENTER,
            &[&keys.lease_scope("adm", b"global")],
            &[
                &keys.group_tag("adm"),
                &user_cap,
                &global_cap,
                &lease_ttl_ms,
                &heartbeat_ttl_ms,
                &3u32,
                &id,
                &user_key,
                &replica,
                &0u32,
                &500u32,
                &10u32,
                &60_000u64,
            ],
        )
        .await
        .unwrap()
}

fn soon(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

/// Starts a waiter and returns once it is queued (its position is known), so arrival order is
/// the order of calls.
async fn queue_waiter(
    adm: &Admission,
    user: &str,
    class: Class,
    name: &'static str,
    granted: mpsc::UnboundedSender<&'static str>,
) -> tokio::task::JoinHandle<Result<Permit, Rejection>> {
    let (tx, mut rx) = watch::channel(0u32);
    let adm = adm.clone();
    let user = user.as_bytes().to_vec();
    let task = tokio::spawn(async move {
        let r = adm.admit_watched(&user, class, soon(30), tx).await;
        if r.is_ok() {
            granted.send(name).unwrap();
        }
        r
    });
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|p| *p > 0))
        .await
        .expect("waiter never queued")
        .unwrap();
    task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_priority_between_classes_fifo_within() {
    let prefix = testkit::unique_prefix("qprio");
    let r = replicas(&prefix, 4, &cfg(1, 2)).await;
    let holder = r[0].admit(b"h", HIGH, soon(5)).await.unwrap();
    let (tx, mut granted) = mpsc::unbounded_channel();
    let order = [
        (1, "e1", LOW),
        (2, "r1", MID),
        (3, "e2", LOW),
        (0, "c1", HIGH),
        (1, "r2", MID),
        (2, "c2", HIGH),
    ];
    let mut tasks = Vec::new();
    for (i, (replica, name, class)) in order.iter().enumerate() {
        tasks.push(queue_waiter(&r[*replica], &format!("u{i}"), *class, name, tx.clone()).await);
    }
    holder.release().await.unwrap();
    let mut seen = Vec::new();
    // Detached: each task's permit is dropped as it finishes, handing the slot on in grant order.
    drop(tasks);
    for _ in 0..order.len() {
        let name = tokio::time::timeout(Duration::from_secs(10), granted.recv())
            .await
            .expect("hand-off stalled")
            .unwrap();
        seen.push(name);
    }
    assert_eq!(seen, ["c1", "c2", "r1", "r2", "e1", "e2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_at_its_cap_does_not_block_others() {
    let prefix = testkit::unique_prefix("qhol");
    // Heartbeats every 10 s: a grant that arrives within the 5 s waits below was pushed over
    // pub/sub, not collected by a heartbeat.
    let mut c = cfg(2, 1);
    c.heartbeat_ttl = Duration::from_secs(30);
    let r = replicas(&prefix, 4, &c).await;
    let a1 = r[0].admit(b"alice", HIGH, soon(5)).await.unwrap();
    let x = r[1].admit(b"xavier", HIGH, soon(5)).await.unwrap();
    let (tx, mut granted) = mpsc::unbounded_channel();
    // Alice's second request waits at the head (held back by her own cap once a slot frees).
    let a2 = queue_waiter(&r[2], "alice", HIGH, "a2", tx.clone()).await;
    let b1 = queue_waiter(&r[3], "bob", HIGH, "b1", tx.clone()).await;
    x.release().await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), granted.recv())
        .await
        .expect("the grant was not pushed")
        .unwrap();
    assert_eq!(first, "b1", "bob passes alice, who is at her cap");
    // Alice kept her place: her own release hands the slot to her waiter.
    a1.release().await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), granted.recv())
        .await
        .expect("the grant was not pushed")
        .unwrap();
    assert_eq!(second, "a2");
    drop(b1.await.unwrap());
    drop(a2.await.unwrap());
    // A newcomer is granted directly while alice (at cap) waits? With room and no eligible waiter
    // ahead, it is.
    let stats = r[0].stats().await.unwrap();
    assert_eq!(stats.queued, [0, 0, 0]);
}

/// A replica that dies (kill -9: no leave, no heartbeat) while holding waiters stops blocking the
/// queue once its heartbeat TTL passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_replica_waiters_stop_blocking_within_heartbeat_ttl() {
    let prefix = testkit::unique_prefix("qdead");
    let mut c = cfg(1, 2);
    c.heartbeat_ttl = Duration::from_millis(600);
    let r = replicas(&prefix, 1, &c).await;
    let live = &r[0];
    let holder = live.admit(b"h", HIGH, soon(5)).await.unwrap();

    // The dead replica's waiters, entered with the raw script (as its process would have) at the
    // front of the queue, in the highest class. It never heartbeats again.
    let redis = common::replica(&prefix);
    let keys = redis.keys().clone();
    for i in 0..3 {
        let user_key = keys.lease_scope("adm", format!("user:dead{i}").as_bytes());
        let reply = raw_enter(
            &redis,
            15_000,
            600,
            &format!("deadbeef.w{i}.60000"),
            &user_key,
            "deadbeef",
        )
        .await;
        assert_eq!(reply[0], 0, "queued");
    }
    let died_at = Instant::now();
    let (tx, mut granted) = mpsc::unbounded_channel();
    let waiter = queue_waiter(live, "alive", LOW, "alive", tx).await;
    // Keep the slot until the dead replica's heartbeat has expired, then free it.
    tokio::time::sleep_until(died_at + Duration::from_millis(700)).await;
    holder.release().await.unwrap();
    let name = tokio::time::timeout(Duration::from_secs(3), granted.recv())
        .await
        .expect("dead waiters still block the queue")
        .unwrap();
    assert_eq!(name, "alive");
    assert!(died_at.elapsed() < Duration::from_millis(600 + 1500));
    drop(waiter.await.unwrap());
    assert_eq!(live.stats().await.unwrap().queued, [0, 0, 0]);
}

/// One live replica (caps `(global, user)`, heartbeat TTL 300 ms, lease TTL 800 ms) beside a
/// lease of user `ghost` just granted to replica `cafe`, which never heartbeats, renews or
/// releases. Also returns a connection and `ghost`'s lease scope key, for more such leases.
async fn live_beside_a_dead_replicas_lease(
    tag: &str,
    (global, user): (u32, u32),
) -> (Admission, limiter_core::RedisHandle, String) {
    let prefix = testkit::unique_prefix(tag);
    let mut c = cfg(global, user);
    c.heartbeat_ttl = Duration::from_millis(300);
    c.lease_ttl = Duration::from_millis(800);
    let live = replicas(&prefix, 1, &c).await.remove(0);
    let redis = common::replica(&prefix);
    let ghost = redis.keys().lease_scope("adm", b"user:ghost");
    let reply = raw_enter_capped(
        &redis,
        (global, user),
        800,
        300,
        "cafe.lease1.60000",
        &ghost,
        "cafe",
    )
    .await;
    assert_eq!(reply[0], 1, "granted");
    (live, redis, ghost)
}

/// The group's last lease expires unreleased (its replica died) while its user waits at its cap:
/// a heartbeat's dispatch still finds the expired lease to reclaim, so that user's waiter is
/// served then, not left out of the ready sets until its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_behind_its_users_expired_last_lease_is_served() {
    // A dead replica's grant to user `ghost` (user cap 1, global cap 2), never renewed.
    let (live, _, _) = live_beside_a_dead_replicas_lease("qlastlease", (2, 1)).await;
    let t0 = Instant::now();
    // Held back by its own cap (a slot is free): out of the ready sets until the lease goes.
    let p = tokio::time::timeout(Duration::from_secs(6), live.admit(b"ghost", HIGH, soon(20)))
        .await
        .expect("served after the lease expired, not at its deadline")
        .unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(600),
        "{:?}",
        t0.elapsed()
    );
    p.release().await.unwrap();
}

/// A slot held by a replica that died returns at the lease TTL (or at once by admin reclaim).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_replica_slots_return() {
    // Dead replica takes the only slot through the raw script, then vanishes.
    let (live, redis, ghost) = live_beside_a_dead_replicas_lease("qdeadlease", (1, 2)).await;
    let t0 = Instant::now();
    let p = live.admit(b"u", HIGH, soon(5)).await.unwrap();
    // Freed by expiry: handed on by a heartbeat's dispatch, within TTL + a heartbeat period.
    assert!(
        t0.elapsed() >= Duration::from_millis(600),
        "{:?}",
        t0.elapsed()
    );
    assert!(
        t0.elapsed() < Duration::from_millis(800 + 1000),
        "{:?}",
        t0.elapsed()
    );
    p.release().await.unwrap();

    // Same again, but an admin reclaims the dead replica's lease before its TTL.
    let reply = raw_enter(&redis, 60_000, 300, "cafe.lease2.60000", &ghost, "cafe").await;
    assert_eq!(reply[0], 1);
    // Reclaimable once its heartbeat (300 ms) lapses in Redis, long before the lease's TTL.
    let deadline = Instant::now() + Duration::from_secs(5);
    let reclaimed = loop {
        let n = live.reclaim_dead_replicas().await.unwrap();
        if n > 0 || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(reclaimed, 1);
    let p = tokio::time::timeout(Duration::from_secs(1), live.admit(b"u", HIGH, soon(5)))
        .await
        .unwrap()
        .unwrap();
    p.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_full_reset_and_cancel() {
    let prefix = testkit::unique_prefix("qlimits");
    let mut c = cfg(1, 2);
    c.max_queue = 3;
    let r = replicas(&prefix, 2, &c).await;
    let holder = r[0].admit(b"h", HIGH, soon(5)).await.unwrap();

    // Timeout: answered after the deadline, and out of the queue.
    let t0 = Instant::now();
    let err = r[1]
        .admit(b"t", HIGH, Instant::now() + Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, Rejection::Timeout { .. }), "{err:?}");
    assert!(t0.elapsed() >= Duration::from_millis(200));
    assert_eq!(r[0].stats().await.unwrap().queued, [0, 0, 0]);

    // Full: three waiters fill the queue, the fourth is refused at once.
    let (tx, _granted) = mpsc::unbounded_channel();
    let w1 = queue_waiter(&r[1], "a", HIGH, "w1", tx.clone()).await;
    let w2 = queue_waiter(&r[0], "b", MID, "w2", tx.clone()).await;
    let w3 = queue_waiter(&r[1], "c", LOW, "w3", tx.clone()).await;
    let t0 = Instant::now();
    assert!(matches!(
        r[0].admit(b"d", HIGH, soon(5)).await,
        Err(Rejection::Full)
    ));
    assert!(t0.elapsed() < Duration::from_millis(500));
    assert_eq!(r[0].stats().await.unwrap().queued, [1, 1, 1]);

    // Cancel: a dropped waiter future (client gone) leaves the queue.
    w2.abort();
    let deadline = Instant::now() + Duration::from_secs(2);
    while r[0].stats().await.unwrap().queued != [1, 0, 1] {
        assert!(Instant::now() < deadline, "cancelled waiter still queued");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Reset: every waiter, on every replica, is answered with Reset.
    assert_eq!(r[0].reset_queue().await.unwrap(), 2);
    assert!(matches!(w1.await.unwrap(), Err(Rejection::Reset)));
    assert!(matches!(w3.await.unwrap(), Err(Rejection::Reset)));
    assert_eq!(r[1].stats().await.unwrap().queued, [0, 0, 0]);
    drop(holder);
}

/// A grant that races with the waiter leaving is never lost: the slot goes to the next waiter.
/// The cancel comes later and later after the release, so some rounds cancel before the grant
/// reaches the racer and others after: both outcomes are counted, and each must occur.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_racing_a_cancel_is_handed_on() {
    let prefix = testkit::unique_prefix("qrace");
    let r = replicas(&prefix, 2, &cfg(1, 2)).await;
    let (mut racer_first, mut cancel_first) = (0, 0);
    for round in 0..50 {
        let holder = r[0].admit(b"h", HIGH, soon(5)).await.unwrap();
        let (tx, mut granted) = mpsc::unbounded_channel();
        let racer = queue_waiter(&r[1], "racer", HIGH, "racer", tx.clone()).await;
        let next = queue_waiter(&r[0], "next", MID, "next", tx.clone()).await;
        // Release, and cancel the racer (first in line) 10 µs to 75 ms later, each round 20%
        // later than the one before: a grant reaches it in about a millisecond on an idle
        // machine (several on a busy one), finer than a timer, so the wait spins.
        let release = tokio::spawn(holder.release());
        let spin = std::time::Instant::now();
        let delay = Duration::from_secs_f64(10e-6 * 1.2f64.powi(round));
        while spin.elapsed() < delay {
            std::hint::spin_loop();
        }
        racer.abort();
        drop(racer); // a permit it may already hold is dropped with it
        release.await.unwrap().unwrap();
        // Whoever got it, the slot must end with "next" (or with racer, then handed on).
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut racer_got_it = false;
        loop {
            let got = tokio::time::timeout_at(deadline, granted.recv())
                .await
                .expect("slot lost in a grant/cancel race")
                .unwrap();
            if got == "next" {
                break;
            }
            racer_got_it = true;
        }
        if racer_got_it {
            racer_first += 1;
        } else {
            cancel_first += 1;
        }
        drop(next.await.unwrap());
        let deadline = Instant::now() + Duration::from_secs(2);
        while r[0].stats().await.unwrap().in_use != 0 {
            assert!(Instant::now() < deadline, "slot leaked in round {round}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    eprintln!("racer granted first: {racer_first}, cancelled first: {cancel_first}");
    assert!(
        racer_first > 0 && cancel_first > 0,
        "the race was not crossed: racer granted first {racer_first} times, cancelled first \
         {cancel_first} times"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_count_only_those_served_first_and_stream_changes() {
    let prefix = testkit::unique_prefix("qpos");
    let r = replicas(&prefix, 2, &cfg(1, 2)).await;
    let holder = r[0].admit(b"h", HIGH, soon(10)).await.unwrap();
    let (tx, _g) = mpsc::unbounded_channel();
    let _e = queue_waiter(&r[0], "e", LOW, "e", tx.clone()).await;
    let _r1 = queue_waiter(&r[1], "r1", MID, "r1", tx.clone()).await;
    // A research waiter arriving after an export waiter is served before it.
    let (ptx, mut prx) = watch::channel(0u32);
    let adm = r[1].clone();
    let watched = tokio::spawn(async move { adm.admit_watched(b"r2", MID, soon(10), ptx).await });
    prx.wait_for(|p| *p > 0).await.unwrap();
    assert_eq!(
        *prx.borrow(),
        2,
        "behind r1 only; the export waiter comes after"
    );
    // A chat arrival moves it back to 3 (seen at the next heartbeat).
    let _c = queue_waiter(&r[0], "c", HIGH, "c", tx.clone()).await;
    tokio::time::timeout(Duration::from_secs(3), prx.wait_for(|p| *p == 3))
        .await
        .expect("position change not streamed")
        .unwrap();
    drop(holder);
    drop(watched);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_waiters_and_leaves_nothing() {
    let prefix = testkit::unique_prefix("qshut");
    let r = replicas(&prefix, 2, &cfg(1, 2)).await;
    let holder = r[0].admit(b"h", HIGH, soon(10)).await.unwrap();
    let (tx, _g) = mpsc::unbounded_channel();
    let w = queue_waiter(&r[1], "w", HIGH, "w", tx).await;
    r[1].shutdown().await;
    assert!(matches!(w.await.unwrap(), Err(Rejection::ShuttingDown)));
    assert!(matches!(
        r[1].admit(b"x", HIGH, soon(1)).await,
        Err(Rejection::ShuttingDown)
    ));
    let s = r[0].stats().await.unwrap();
    assert_eq!(s.queued, [0, 0, 0]);
    assert_eq!(s.live_replicas, 1);
    holder.release().await.unwrap();
    assert_eq!(r[0].stats().await.unwrap().in_use, 0);
}

/// Caps changed at runtime on every replica: slots running are kept, a lowered cap grants
/// nothing until enough of them end (including releases of leases granted under the old cap),
/// and a raised cap hands its room to a waiter at once.
#[tokio::test]
async fn caps_change_at_runtime_keeping_what_runs() {
    let prefix = testkit::unique_prefix("caps-rt");
    let r = replicas(&prefix, 2, &cfg(3, 3)).await;
    let p1 = r[0].admit(b"a", HIGH, soon(5)).await.unwrap();
    let p2 = r[1].admit(b"b", HIGH, soon(5)).await.unwrap();
    let p3 = r[0].admit(b"c", HIGH, soon(5)).await.unwrap();
    for a in &r {
        a.set_caps(None, Some(1));
        assert_eq!(a.caps(), (3, 1));
    }
    // Three run under a cap of one: nobody is revoked, a newcomer waits.
    let waiter = {
        let a = r[1].clone();
        tokio::spawn(async move { a.admit(b"d", HIGH, soon(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished());
    assert_eq!(r[0].stats().await.unwrap().in_use, 3);
    // Two releases (one lease per replica, granted under the old cap) leave one running: still
    // at the cap, so nothing is handed on.
    drop(p1);
    drop(p2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "granted above the lowered cap");
    // Raising the cap hands the room to the waiter without any release.
    for a in &r {
        a.set_caps(None, Some(2));
    }
    let granted = tokio::time::timeout(Duration::from_secs(3), waiter)
        .await
        .expect("a raised cap grants at once")
        .unwrap()
        .unwrap();
    assert_eq!(r[0].stats().await.unwrap().in_use, 2);
    drop((granted, p3));
}

/// A grant is recorded for its replica's heartbeat (a backup for a lost push) only until the
/// lease is released: heartbeats carry the grants still held, not every grant of their period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_grant_is_not_left_for_the_heartbeat() {
    let prefix = testkit::unique_prefix("qgrec");
    // Heartbeats every 20 s: none collects the record while the test looks at it.
    let mut c = cfg(1, 2);
    c.heartbeat_ttl = Duration::from_secs(60);
    let r = replicas(&prefix, 1, &c).await;
    let redis = common::replica(&prefix);
    let grants = format!(
        "{}:grants:{}",
        redis.keys().group_tag(&c.group),
        r[0].replica_id()
    );
    let hlen = |redis: limiter_core::RedisHandle, key: String| async move {
        redis
            .cmd::<u64>(redis::cmd("HLEN").arg(&key))
            .await
            .unwrap()
    };
    let holder = r[0].admit(b"h", HIGH, soon(5)).await.unwrap();
    let (tx, mut granted) = mpsc::unbounded_channel();
    let waiter = queue_waiter(&r[0], "w", HIGH, "w", tx).await;
    holder.release().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), granted.recv())
        .await
        .expect("hand-off stalled")
        .unwrap();
    let permit = waiter.await.unwrap().unwrap();
    assert_eq!(
        hlen(redis.clone(), grants.clone()).await,
        1,
        "held: recorded"
    );
    permit.release().await.unwrap();
    assert_eq!(
        hlen(redis, grants).await,
        0,
        "released: nothing left to collect"
    );
}

/// A permit's lease starts renewing only if the permit is still held a tick (TTL/6) after its
/// grant; from then on it renews on the grant's schedule. Held for several TTLs, it keeps its
/// slot and is never reported lost; released, its renewal task ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permit_held_for_several_lease_ttls_keeps_its_slot() {
    let prefix = testkit::unique_prefix("qrenew");
    let mut c = cfg(1, 1);
    // Renewed every 400 ms, each renewal with ~1 s to land: room for a busy machine.
    c.lease_ttl = Duration::from_millis(1200);
    let adm = &replicas(&prefix, 1, &c).await[0];
    // Tasks alive with nothing held, once the connections exist.
    adm.admit(b"warm", HIGH, soon(5))
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let idle_tasks = metrics.num_alive_tasks();
    let p = adm.admit(b"holder", HIGH, soon(5)).await.unwrap();
    let first_expiry = p.lease().unwrap().expiry_ms();

    // Nobody else gets the slot in two lease TTLs.
    let other = adm
        .admit(b"other", HIGH, Instant::now() + Duration::from_millis(2500))
        .await;
    assert!(
        matches!(other, Err(Rejection::Timeout { .. })),
        "the slot was handed on: {other:?}"
    );
    let lease = p.lease().unwrap();
    assert!(!lease.is_lost());
    assert!(
        lease.expiry_ms() >= first_expiry + 1000,
        "renewed: {} -> {}",
        first_expiry,
        lease.expiry_ms()
    );
    // Other tasks (the refused waiter's leave) end soon; the renewer runs on.
    let alive_is = async |n: usize, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while metrics.num_alive_tasks() != n {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    alive_is(idle_tasks + 1, "one renewer runs").await;
    assert!(p.release().await.unwrap(), "still held when released");
    alive_is(idle_tasks, "the renewer ended").await;
}
