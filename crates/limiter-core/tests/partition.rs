//! One replica cut off from Redis while the others reach it (a partition): its leases expire in
//! Redis unrenewed and the others hand its slots on. Under the safety outage policy it stops
//! admitting on its local limit before that happens and refuses until Redis answers it again;
//! under the availability policy it goes on admitting, beside a fleet that already uses its
//! slots.
#![allow(clippy::unwrap_used)]
mod common;

use common::HIGH;

use std::time::Duration;

use limiter_core::{Admission, AdmissionConfig, OutagePolicy, Permit, Rejection};
use testkit::proxy::TcpProxy;
use tokio::time::Instant;

fn soon(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

async fn wait_for(what: &str, secs: u64, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done().await {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn admit(adm: &Admission, user: &str) -> Permit {
    adm.admit(user.as_bytes(), HIGH, soon(1000)).await.unwrap()
}

/// Cap 4 over A (through a proxy the test cuts) and B, each holding 2. A is cut off; within the
/// time its leases surely live it may replace a finished slot locally. Once they have expired
/// and B has taken the freed room in Redis, A must not admit: that would be a fifth slot.
/// Returns what A's admission gave then.
async fn cut_off_replica_after_its_leases_expired(
    policy: OutagePolicy,
) -> Result<Permit, Rejection> {
    let server = testkit::RedisServer::start();
    let proxy = TcpProxy::start(server.port()).await;
    let lease_ttl = Duration::from_millis(1500);
    let cfg = AdmissionConfig {
        global_cap: 4,
        user_cap: 2,
        lease_ttl,
        heartbeat_ttl: Duration::from_millis(600),
        expected_replicas: 2,
        outage_policy: policy,
        ..common::adm_cfg()
    };
    let prefix = format!("part-{policy:?}");
    let a = Admission::start(common::replica_at(&proxy.url(), &prefix), cfg.clone())
        .await
        .unwrap();
    let b = Admission::start(common::replica_at(&server.url(), &prefix), cfg)
        .await
        .unwrap();
    wait_for("the registry shows 2 replicas", 5, async || {
        a.heartbeat().await.unwrap();
        b.heartbeat().await.unwrap();
        a.live_replicas() == 2 && b.live_replicas() == 2
    })
    .await;
    let mut a_held = vec![admit(&a, "a1").await, admit(&a, "a2").await];
    let mut b_held = vec![admit(&b, "b1").await, admit(&b, "b2").await];
    a.heartbeat().await.unwrap();

    proxy.cut();
    wait_for("A degraded", 5, async || a.degraded()).await;
    // Within the time its leases surely live: one of A's slots ends (its lease is left counted
    // in Redis) and a local one of the same user takes its place; another user's is refused
    // under safety (nothing of its is counted in Redis), admitted under availability.
    drop(a_held.pop());
    let other = a.admit(b"a9", HIGH, soon(300)).await;
    assert_eq!(other.is_err(), policy == OutagePolicy::Safety, "{other:?}");
    drop(other);
    let local = a.admit(b"a2", HIGH, soon(300)).await.unwrap();
    assert!(local.is_local());
    // A's work ends; its leases expire in Redis, unrenewed.
    drop((a_held, local));
    wait_for("A's leases expired in Redis", 10, async || {
        b.stats().await.is_ok_and(|s| s.in_use == 2)
    })
    .await;
    // B hands the freed room on: the shared cap is full again, all of it on B.
    b_held.push(admit(&b, "b3").await);
    b_held.push(admit(&b, "b4").await);
    assert_eq!(b.stats().await.unwrap().in_use, 4);

    let refused_at = Instant::now();
    let answer = a.admit(b"a4", HIGH, soon(3000)).await;
    if let Err(Rejection::OutageTooLong) = &answer {
        assert!(
            refused_at.elapsed() < Duration::from_millis(100),
            "refused only after {:?}",
            refused_at.elapsed()
        );
        // And once Redis answers A again, A admits by Redis's counts: a slot B frees.
        proxy.restore();
        wait_for("A shared again", 15, async || !a.degraded()).await;
        let waiting = {
            let a = a.clone();
            tokio::spawn(async move { a.admit(b"a5", HIGH, soon(10_000)).await })
        };
        wait_for("A's waiter queued in Redis (or admitted)", 5, async || {
            waiting.is_finished() || a.stats().await.is_ok_and(|s| s.queued[HIGH.index()] == 1)
        })
        .await;
        assert!(!waiting.is_finished(), "admitted beyond the cap");
        drop(b_held.pop());
        let p = waiting.await.unwrap().unwrap();
        assert!(!p.is_local());
        assert_eq!(b.stats().await.unwrap().in_use, 4);
    }
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_refuses_once_the_cut_off_replicas_leases_may_have_expired() {
    let answer = cut_off_replica_after_its_leases_expired(OutagePolicy::Safety).await;
    assert!(
        matches!(answer, Err(Rejection::OutageTooLong)),
        "a fifth slot beside a cap of 4 full in Redis: {answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_keeps_admitting_beyond_the_cap() {
    let answer = cut_off_replica_after_its_leases_expired(OutagePolicy::Availability).await;
    let permit = answer.expect("availability admits on the local limit for the whole outage");
    assert!(permit.is_local());
}

/// When each of a cut-off replica's running permits is revoked, measured from the cut (`None`:
/// not within 1.5 TTL): one granted by Redis before the cut, one granted locally after it.
async fn revocations_of_running_permits(policy: OutagePolicy) -> [Option<Duration>; 2] {
    let server = testkit::RedisServer::start();
    let proxy = TcpProxy::start(server.port()).await;
    let ttl = Duration::from_secs(4);
    let cfg = AdmissionConfig {
        global_cap: 4,
        user_cap: 2,
        lease_ttl: ttl,
        heartbeat_ttl: Duration::from_millis(600),
        expected_replicas: 1,
        outage_policy: policy,
        ..common::adm_cfg()
    };
    let prefix = format!("revoke-{policy:?}");
    let a = Admission::start(common::replica_at(&proxy.url(), &prefix), cfg)
        .await
        .unwrap();
    let shared = admit(&a, "u1").await;
    let ends = admit(&a, "u1").await;
    assert!(!shared.is_local());
    a.heartbeat().await.unwrap();
    proxy.cut();
    let cut_at = Instant::now();
    wait_for("A degraded", 5, async || {
        let _ = a.heartbeat().await;
        a.degraded()
    })
    .await;
    // One of u1's requests ends: its slot, still counted in Redis, is reused locally.
    drop(ends);
    let local = a.admit(b"u1", HIGH, soon(300)).await.unwrap();
    assert!(local.is_local());
    let when = |p: &Permit| {
        let r = p.revocation();
        tokio::spawn(async move {
            tokio::time::timeout(ttl * 3 / 2, r.revoked())
                .await
                .ok()
                .map(|()| cut_at.elapsed())
        })
    };
    let (s, l) = (when(&shared), when(&local));
    let out = [s.await.unwrap(), l.await.unwrap()];
    proxy.restore();
    drop((shared, local));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safety_revokes_running_permits_before_their_slots_can_be_handed_on() {
    let ttl = Duration::from_secs(4);
    let [shared, local] = revocations_of_running_permits(OutagePolicy::Safety).await;
    let shared = shared.expect("the shared permit was never revoked");
    let local = local.expect("the local permit was never revoked");
    // The lease was last renewed before the cut: it expires in Redis a TTL after it at the
    // latest, and not before 2/3 of it (renewals every third) less the drift margin.
    assert!(
        shared < ttl,
        "shared permit revoked {shared:?} after the cut"
    );
    assert!(
        shared >= ttl * 2 / 3 - ttl / 10,
        "revoked early: {shared:?}"
    );
    // The local one runs on room the replica's slots in Redis vouch for: until they may expire.
    assert!(local < ttl, "local permit revoked {local:?} after the cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_lets_running_permits_run_on() {
    let [shared, local] = revocations_of_running_permits(OutagePolicy::Availability).await;
    assert_eq!((shared, local), (None, None));
}
