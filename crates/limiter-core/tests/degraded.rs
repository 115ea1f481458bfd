//! Redis unreachable: each replica admits within its share of the caps; when Redis returns, the
//! local permits are adopted and the shared caps apply again, without a restart.
#![allow(clippy::unwrap_used)]
mod common;

use common::{HIGH, LOW};

use std::time::Duration;

use limiter_core::{Admission, AdmissionConfig, Permit, Rejection};
use testkit::proxy::TcpProxy;
use tokio::time::Instant;

fn soon(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

async fn fill(adm: &Admission, users: &[&str], wait_ms: u64) -> Vec<Permit> {
    let mut tasks = Vec::new();
    for u in users {
        let (adm, u) = (adm.clone(), u.to_string());
        tasks.push(tokio::spawn(async move {
            adm.admit(u.as_bytes(), HIGH, soon(wait_ms)).await
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
        ..common::adm_cfg()
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
    let export = tokio::spawn(async move { e_adm.admit(b"x", LOW, soon(5000)).await });
    wait_for("the low waiter queued", 5, async || {
        r[0].local_waiters() == 1
    })
    .await;
    let chat = tokio::spawn(async move { c_adm.admit(b"y", HIGH, soon(5000)).await });
    wait_for("the high waiter queued", 5, async || {
        r[0].local_waiters() == 2
    })
    .await;
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
    wait_for("shared again within 5 s of Redis's return", 5, async || {
        !r.iter().any(Admission::degraded)
    })
    .await;
    // The kept permits were adopted: Redis counts them, so only 4 more fit fleet-wide.
    assert_eq!(r[0].stats().await.unwrap().in_use, 2);
    let fresh = fill(&r[2], &["p", "q", "s", "t", "u", "v"], 300).await;
    assert_eq!(fresh.len(), 4, "shared cap minus the adopted permits");
    assert!(fresh.iter().all(|p| !p.is_local()));
    drop(kept);
    drop(fresh);
    wait_for("adopted permits released in Redis", 3, async || {
        r[0].stats().await.unwrap().in_use == 0
    })
    .await;
}

#[tokio::test]
async fn without_fallback_an_outage_is_a_clear_refusal() {
    let mut server = testkit::RedisServer::start();
    let cfg = AdmissionConfig {
        local_fallback: false,
        ..common::adm_cfg()
    };
    let adm = Admission::start(common::replica_at(&server.url(), "nofb"), cfg)
        .await
        .unwrap();
    server.stop();
    assert!(matches!(
        adm.admit(b"u", HIGH, soon(1000)).await,
        Err(Rejection::Unavailable(_))
    ));
    assert!(!adm.degraded());
}

/// A waiter already in the shared queue when Redis goes away moves to the local queue and is
/// admitted within the local share, instead of waiting for a grant that cannot come until its
/// deadline (found by the fleet test of a Redis outage: every waiter of the moment timed out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_waiters_move_to_the_local_queue_when_redis_goes() {
    let mut server = testkit::RedisServer::start();
    let cfg = AdmissionConfig {
        global_cap: 2,
        user_cap: 1,
        heartbeat_ttl: Duration::from_millis(600),
        expected_replicas: 1,
        ..common::adm_cfg()
    };
    let adm = Admission::start(common::replica_at(&server.url(), "deg-move"), cfg)
        .await
        .unwrap();
    let a = adm.admit(b"a", HIGH, soon(1000)).await.unwrap();
    let b = adm.admit(b"b", HIGH, soon(1000)).await.unwrap();
    let waiting = {
        let adm = adm.clone();
        tokio::spawn(async move { adm.admit(b"waiter", HIGH, soon(20_000)).await })
    };
    // Queued in Redis (both slots are held).
    wait_for("the waiter queued in Redis", 5, async || {
        adm.stats().await.unwrap().queued[HIGH.index()] == 1
    })
    .await;
    server.stop();
    // Degraded (found by the heartbeat); then one of the running shared permits ends, which
    // frees room in the local share (2 of 2) for the waiter, now in the local queue.
    wait_for("degraded", 5, async || adm.degraded()).await;
    let freed = Instant::now();
    drop(a);
    let permit = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiter stayed in the dead shared queue")
        .unwrap()
        .unwrap();
    assert!(permit.is_local());
    assert!(
        freed.elapsed() < Duration::from_secs(3),
        "granted only after {:?}",
        freed.elapsed()
    );
    drop((b, permit));
}

/// Local waiters still queued when shared admission resumes go back to the shared queue: the
/// local queue granting them slots (unseen by Redis) would run beyond the shared cap (found by
/// the fleet test of a Redis outage: 36 LLM calls at once under a cap of 20 after recovery).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_waiters_requeue_in_redis_when_it_returns() {
    let mut server = testkit::RedisServer::start();
    let cfg = AdmissionConfig {
        global_cap: 2,
        user_cap: 1,
        heartbeat_ttl: Duration::from_millis(600),
        expected_replicas: 1,
        ..common::adm_cfg()
    };
    let adm = Admission::start(common::replica_at(&server.url(), "deg-requeue"), cfg)
        .await
        .unwrap();
    adm.heartbeat().await.unwrap();
    server.stop();
    // Two local slots held, three waiters in the local queue.
    let a = adm.admit(b"a", HIGH, soon(2000)).await.unwrap();
    let b = adm.admit(b"b", HIGH, soon(2000)).await.unwrap();
    assert!(a.is_local() && b.is_local());
    let waiters: Vec<_> = ["c", "d", "e"]
        .iter()
        .map(|u| {
            let adm = adm.clone();
            tokio::spawn(async move { adm.admit(u.as_bytes(), HIGH, soon(20_000)).await })
        })
        .collect();
    wait_for("three waiters in the local queue", 5, async || {
        adm.local_waiters() == 3
    })
    .await;
    assert!(waiters.iter().all(|w| !w.is_finished()));

    server.restart();
    wait_for("shared admission resumed", 10, async || !adm.degraded()).await;
    // The waiters are in Redis now, behind the two adopted slots.
    wait_for("waiters requeued in Redis", 5, async || {
        let s = adm.stats().await.unwrap();
        s.queued[HIGH.index()] == 3 && s.in_use == 2
    })
    .await;
    // One slot frees: exactly one waiter gets it, from the shared queue.
    drop(a);
    wait_for("a waiter granted the freed slot", 5, async || {
        waiters.iter().any(|w| w.is_finished())
    })
    .await;
    // Redis shows the grant done (two waiting, two running); a second grant would have to come
    // from somewhere else, so a short look for one suffices.
    wait_for("the grant counted in Redis", 5, async || {
        let s = adm.stats().await.unwrap();
        s.queued[HIGH.index()] == 2 && s.in_use == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let done: Vec<_> = waiters.iter().filter(|w| w.is_finished()).collect();
    assert_eq!(done.len(), 1, "one free slot, one grant");
    assert_eq!(adm.local_waiters(), 2, "the other two still wait");
    let mut granted = Vec::new();
    for w in waiters {
        if w.is_finished() {
            let p = w.await.unwrap().unwrap();
            assert!(!p.is_local(), "granted by Redis, counted by the shared cap");
            granted.push(p);
        } else {
            w.abort();
        }
    }
    assert_eq!(adm.stats().await.unwrap().in_use, 2);
    drop((b, granted));
}

/// Shared permits still running when Redis goes count against the local share: the local queue
/// does not start a full share next to them (found by the fleet test of a Redis outage: 26 LLM
/// calls at once under a cap of 20 at the start of the outage).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_shared_permits_count_against_the_local_share() {
    let mut server = testkit::RedisServer::start();
    let cfg = AdmissionConfig {
        global_cap: 2,
        user_cap: 2,
        heartbeat_ttl: Duration::from_millis(600),
        expected_replicas: 1,
        ..common::adm_cfg()
    };
    let adm = Admission::start(common::replica_at(&server.url(), "deg-count"), cfg)
        .await
        .unwrap();
    let a = adm.admit(b"a", HIGH, soon(1000)).await.unwrap();
    let b = adm.admit(b"b", HIGH, soon(1000)).await.unwrap();
    assert!(!a.is_local() && !b.is_local());
    server.stop();
    let refused = adm.admit(b"c", HIGH, soon(1500)).await;
    assert!(
        matches!(refused, Err(Rejection::Timeout { .. })),
        "a local slot next to 2 running shared ones: {refused:?}"
    );
    assert!(adm.degraded());
    let waiting = {
        let adm = adm.clone();
        tokio::spawn(async move { adm.admit(b"d", HIGH, soon(5000)).await })
    };
    wait_for("the waiter in the local queue", 5, async || {
        adm.local_waiters() == 1
    })
    .await;
    assert!(!waiting.is_finished());
    // One shared permit ends: its room goes to the local waiter.
    drop(a);
    let p = tokio::time::timeout(Duration::from_secs(3), waiting)
        .await
        .expect("the freed room was not handed on")
        .unwrap()
        .unwrap();
    assert!(p.is_local());
    drop((b, p));
}

async fn wait_for(what: &str, secs: u64, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done().await {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Replicas resume shared admission at different moments after an outage. One still recovering
/// (admitting on its local share) must not grant a local slot once another has filled the shared
/// cap in Redis: before the fix it did (the slot was registered in Redis after the grant, with no
/// cap check), and the fleet test of a Redis outage saw 21 LLM calls at once under a cap of 20.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovering_replica_never_runs_beyond_a_cap_another_filled() {
    let mut server = testkit::RedisServer::start();
    let cfg = AdmissionConfig {
        global_cap: 4,
        user_cap: 2,
        expected_replicas: 2,
        ..common::adm_cfg()
    };
    // A resumes shared admission one (short) heartbeat TTL after Redis returns; B, with a long
    // one, stays recovering for 8 s.
    let a = Admission::start(
        common::replica_at(&server.url(), "deg-race"),
        AdmissionConfig {
            heartbeat_ttl: Duration::from_millis(300),
            ..cfg.clone()
        },
    )
    .await
    .unwrap();
    let b = Admission::start(
        common::replica_at(&server.url(), "deg-race"),
        AdmissionConfig {
            heartbeat_ttl: Duration::from_secs(8),
            ..cfg
        },
    )
    .await
    .unwrap();
    a.heartbeat().await.unwrap();
    b.heartbeat().await.unwrap();

    server.stop();
    // B fills its local share (4 / 2 = 2) and has a local waiter.
    let mut b_held = fill(&b, &["b1", "b2"], 3000).await;
    assert_eq!(b_held.len(), 2);
    assert!(b_held.iter().all(Permit::is_local));
    let b_waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.admit(b"b3", HIGH, soon(30_000)).await })
    };
    wait_for("A degraded", 5, async || a.degraded()).await;

    server.restart();
    // B registered its two slots; A admits by Redis's counts again. B finds Redis back at one of
    // its heartbeats (every 8 s / 3), and the first call on a connection to the old server may
    // fail and wait for the next one: seconds on a busy machine, hence the generous bound. B
    // then stays recovering for 8 s, far longer than the steps below.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = a.stats().await;
        if !a.degraded() && stats.as_ref().is_ok_and(|s| s.in_use == 2) {
            break;
        }
        // What stalled, should it ever: A still degraded, or B's slots not in Redis.
        assert!(
            Instant::now() < deadline,
            "A shared, B's slots registered: not within 30 s (A degraded {}, B degraded {}, \
             A's stats {:?})",
            a.degraded(),
            b.degraded(),
            stats.map(|s| (s.in_use, s.queued)),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(b.degraded(), "B is still recovering");
    let mut a_held = fill(&a, &["a1", "a2"], 3000).await;
    assert_eq!(a_held.len(), 2, "the shared cap has room for 2 more");
    assert!(a_held.iter().all(|p| !p.is_local()));
    let a_waiter = {
        let a = a.clone();
        tokio::spawn(async move { a.admit(b"a3", HIGH, soon(30_000)).await })
    };
    wait_for("A's waiter queued in Redis", 5, async || {
        a.stats().await.is_ok_and(|s| s.queued[0] == 1)
    })
    .await;

    // One of B's slots ends. Its room in B's local share must not start B's local waiter: the
    // shared cap is full, and A's waiter takes the slot in Redis.
    drop(b_held.pop());
    let granted = tokio::time::timeout(Duration::from_secs(5), a_waiter)
        .await
        .expect("A's waiter never got the freed slot (did B take it beyond the shared cap?)")
        .unwrap()
        .unwrap();
    a_held.push(granted);
    // 3 on A + 1 on B = the cap: B's waiter must still wait (for as long as B recovers).
    let mut b_waiter = b_waiter;
    let early = tokio::time::timeout(Duration::from_secs(1), &mut b_waiter).await;
    assert!(
        early.is_err(),
        "B's local waiter ran beyond the shared cap: {early:?}"
    );
    assert!(
        b.degraded(),
        "B still recovering: the wait above proved something"
    );
    assert_eq!(a.stats().await.unwrap().in_use, 4);

    // Once B resumes shared admission its waiter queues in Redis and gets the next free slot.
    drop(a_held.pop());
    let p = tokio::time::timeout(Duration::from_secs(20), b_waiter)
        .await
        .expect("B's waiter never admitted")
        .unwrap()
        .unwrap();
    assert!(!p.is_local(), "admitted by the shared queue");
    assert_eq!(a.stats().await.unwrap().in_use, 4);
    drop((p, a_held, b_held));
}

/// Shared permits running when Redis restarts empty are registered again when it returns, so
/// the shared cap counts them, and they stay counted while they run: before, Redis forgot them
/// and admitted a full cap next to them (twice the cap of LLM calls at once), and a permit whose
/// renewal had given it up during the outage dropped out of the count again one lease TTL later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_permits_survive_a_redis_restarted_empty() {
    let mut server = testkit::RedisServer::start();
    let lease_ttl = Duration::from_millis(600);
    let cfg = AdmissionConfig {
        global_cap: 4,
        user_cap: 2,
        heartbeat_ttl: Duration::from_millis(600),
        lease_ttl,
        expected_replicas: 2,
        ..common::adm_cfg()
    };
    let a = Admission::start(common::replica_at(&server.url(), "deg-keep"), cfg.clone())
        .await
        .unwrap();
    let b = Admission::start(common::replica_at(&server.url(), "deg-keep"), cfg)
        .await
        .unwrap();
    let held = fill(&a, &["u1", "u2", "u3", "u4"], 3000).await;
    assert_eq!(held.len(), 4);
    assert!(held.iter().all(|p| !p.is_local()));

    server.stop();
    wait_for("both degraded", 5, async || a.degraded() && b.degraded()).await;
    // Longer than the lease TTL: the permits' renewals give them up as lost.
    for p in &held {
        tokio::time::timeout(Duration::from_secs(5), p.lease().unwrap().lost())
            .await
            .expect("never reported lost");
    }
    server.restart();
    wait_for("both shared again", 10, async || {
        !a.degraded() && !b.degraded()
    })
    .await;
    assert_eq!(
        b.stats().await.unwrap().in_use,
        4,
        "the running permits are counted again"
    );
    let more = fill(&b, &["v1", "v2"], 500).await;
    assert!(more.is_empty(), "admitted beyond the cap: {more:?}");
    // Still counted three lease TTLs later: their renewals found them again (waited for on the
    // expiries Redis confirms to those renewals).
    let clock = common::replica_at(&server.url(), "deg-keep");
    let (secs, micros): (i64, i64) = clock.cmd(&redis::cmd("TIME")).await.unwrap();
    // A renewal three TTLs from now confirms an expiry four TTLs from now.
    let renewed_by =
        secs * 1000 + micros / 1000 + i64::try_from(lease_ttl.as_millis() * 4).unwrap();
    wait_for("renewed for three lease TTLs", 10, async || {
        held.iter()
            .all(|p| p.lease().unwrap().expiry_ms() >= renewed_by)
    })
    .await;
    assert_eq!(
        b.stats().await.unwrap().in_use,
        4,
        "the registered permits expired while running"
    );

    // They end: released in Redis like any other.
    drop(held);
    wait_for("released", 5, async || {
        b.stats().await.is_ok_and(|s| s.in_use == 0)
    })
    .await;
}

/// After an outage, a replica resumes shared admission only once every replica of the fleet
/// has registered what it granted meanwhile (they do before rejoining the registry), not after a
/// fixed delay that a replica slow to reconnect would overrun; if one never returns, after three
/// heartbeat TTLs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_waits_for_every_replica_to_register_again() {
    let mut server = testkit::RedisServer::start();
    let proxy = TcpProxy::start(server.port()).await;
    let ttl = Duration::from_millis(600);
    let cfg = AdmissionConfig {
        global_cap: 4,
        user_cap: 2,
        heartbeat_ttl: ttl,
        expected_replicas: 2,
        ..common::adm_cfg()
    };
    let a = Admission::start(common::replica_at(&server.url(), "deg-wait"), cfg.clone())
        .await
        .unwrap();
    let b = Admission::start(common::replica_at(&proxy.url(), "deg-wait"), cfg)
        .await
        .unwrap();
    a.heartbeat().await.unwrap();
    b.heartbeat().await.unwrap();
    a.heartbeat().await.unwrap();
    assert_eq!(a.live_replicas(), 2);

    server.stop();
    let b_held = fill(&b, &["b1", "b2"], 3000).await;
    assert_eq!(b_held.len(), 2);
    assert!(b_held.iter().all(Permit::is_local));
    wait_for("A degraded", 5, async || a.degraded()).await;

    // Redis returns, but B cannot reach it.
    proxy.cut();
    server.restart();
    wait_for("Redis answering A", 10, async || a.stats().await.is_ok()).await;
    let back = Instant::now();
    // A keeps admitting on its share, registered against the caps, for more than the one
    // heartbeat TTL the fixed delay gave: B's two local slots are still unknown to Redis.
    while back.elapsed() < ttl * 2 {
        assert!(a.degraded(), "A trusted Redis's counts before B registered");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // B never returns: after three heartbeat TTLs A goes on without it.
    wait_for("A shared without B", 10, async || !a.degraded()).await;
    assert!(
        back.elapsed() >= ttl * 2,
        "shared again after {:?}",
        back.elapsed()
    );

    // B returns: it registers its running slots and resumes shared admission as well.
    proxy.restore();
    wait_for("B shared", 15, async || !b.degraded()).await;
    assert_eq!(a.stats().await.unwrap().in_use, 2);
    let more = fill(&a, &["a1", "a2", "a3"], 500).await;
    assert_eq!(more.len(), 2, "the shared cap counts B's slots");
    drop((more, b_held));
}

/// A shared permit through a Redis gap (the replica cut off, Redis itself fine): not given up
/// within half its TTL; renewed again after a gap shorter than the TTL; reported lost after a gap
/// longer than it, not before its last confirmed expiry. The permit stays usable either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permit_renewal_through_short_and_long_redis_gaps() {
    let server = testkit::RedisServer::start();
    let proxy = TcpProxy::start(server.port()).await;
    let ttl = Duration::from_secs(3);
    let cfg = AdmissionConfig {
        lease_ttl: ttl,
        heartbeat_ttl: Duration::from_millis(600),
        expected_replicas: 1,
        ..common::adm_cfg()
    };
    let cut_off = Admission::start(common::replica_at(&proxy.url(), "deg-gap"), cfg.clone())
        .await
        .unwrap();
    let outside = Admission::start(common::replica_at(&server.url(), "deg-gap"), cfg)
        .await
        .unwrap();
    let permit = cut_off.admit(b"u", HIGH, soon(1000)).await.unwrap();
    let lease = permit.lease().expect("a shared permit");

    // Shorter than the TTL.
    common::cut_and_hold_half_a_ttl(&proxy, lease, ttl).await;
    let expiry_before = lease.expiry_ms();
    proxy.restore();
    wait_for("renewed after the gap", 6, async || {
        lease.expiry_ms() > expiry_before
    })
    .await;
    assert!(!lease.is_lost());
    assert_eq!(outside.stats().await.unwrap().in_use, 1, "still counted");

    // Longer than the TTL.
    wait_for("shared admission again", 10, async || !cut_off.degraded()).await;
    let cut_at = common::cut_and_hold_half_a_ttl(&proxy, lease, ttl).await;
    common::expect_reported_lost(lease, ttl, cut_at).await;
    // Reported before its expiry in Redis, which follows within the TTL of the cut.
    wait_for("expired in Redis", 2, async || {
        outside.stats().await.unwrap().in_use == 0
    })
    .await;
    assert!(cut_at.elapsed() < ttl + Duration::from_secs(1));
    proxy.restore();
    drop(permit);
}
