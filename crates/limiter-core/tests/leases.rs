#![allow(clippy::unwrap_used)]
mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use limiter_core::{Acquire, LeaseManager, LeaseScope};
use rand::Rng;
use testkit::proxy::TcpProxy;

fn manager(prefix: &str, ttl_ms: u64) -> LeaseManager {
    LeaseManager::new(
        common::replica(prefix),
        "adm",
        Duration::from_millis(ttl_ms),
    )
    .unwrap()
}

/// Counts holders independently of Redis: what the code under test says is not trusted.
#[derive(Default)]
struct Observer {
    global: AtomicUsize,
    max_global: AtomicUsize,
    per_user: Mutex<HashMap<usize, usize>>,
    max_user: AtomicUsize,
}

impl Observer {
    fn enter(&self, user: usize) {
        let g = self.global.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_global.fetch_max(g, Ordering::SeqCst);
        let mut m = self.per_user.lock().unwrap();
        let u = m.entry(user).or_default();
        *u += 1;
        self.max_user.fetch_max(*u, Ordering::SeqCst);
    }
    fn leave(&self, user: usize) {
        *self.per_user.lock().unwrap().get_mut(&user).unwrap() -= 1;
        self.global.fetch_sub(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn caps_hold_across_four_replicas_and_saturate() {
    let prefix = testkit::unique_prefix("lease");
    let replicas: Vec<_> = (0..4).map(|_| manager(&prefix, 5_000)).collect();
    let observer = Arc::new(Observer::default());
    let mut tasks = Vec::new();
    for task in 0..200 {
        let m = replicas[task % 4].clone();
        let obs = Arc::clone(&observer);
        // 15 users: enough contention on the user cap and on the global cap.
        let user = task % 15;
        tasks.push(tokio::spawn(async move {
            let scopes = [
                LeaseScope::new(format!("user:{user}"), 2),
                LeaseScope::new("global", 20),
            ];
            let mut held = 0;
            while held < 3 {
                match m.try_acquire(&scopes).await.unwrap() {
                    Acquire::Granted(lease) => {
                        obs.enter(user);
                        // Long enough against the round trips that the observer sees the overlap Redis allows.
                        let hold = rand::rng().random_range(5..25);
                        tokio::time::sleep(Duration::from_millis(hold)).await;
                        obs.leave(user);
                        assert!(lease.release().await.unwrap());
                        held += 1;
                    }
                    Acquire::Refused { scope, .. } => {
                        assert!(scope <= 1);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(observer.max_global.load(Ordering::SeqCst) <= 20);
    assert_eq!(observer.max_global.load(Ordering::SeqCst), 20, "saturation");
    assert_eq!(observer.max_user.load(Ordering::SeqCst), 2);
    assert_eq!(replicas[0].in_use(b"global").await.unwrap(), 0);
}

#[tokio::test]
async fn refusal_names_the_full_scope_and_takes_nothing() {
    let prefix = testkit::unique_prefix("leaseref");
    let m = manager(&prefix, 5_000);
    let a = [LeaseScope::new("user:a", 1), LeaseScope::new("global", 2)];
    let b = [LeaseScope::new("user:b", 1), LeaseScope::new("global", 2)];
    let Acquire::Granted(_a1) = m.try_acquire(&a).await.unwrap() else {
        panic!("first lease refused")
    };
    match m.try_acquire(&a).await.unwrap() {
        Acquire::Refused { scope, retry_after } => {
            assert_eq!(scope, 0);
            // Until the only lease of the scope expires: granted a moment ago with a 5 s TTL.
            assert!(
                retry_after > Duration::from_secs(4) && retry_after <= Duration::from_secs(5),
                "{retry_after:?}"
            );
        }
        Acquire::Granted(_) => panic!("user cap ignored"),
    }
    // The refusal in the user scope took nothing from the global scope.
    assert_eq!(m.in_use(b"global").await.unwrap(), 1);
    let Acquire::Granted(_b1) = m.try_acquire(&b).await.unwrap() else {
        panic!("global had room")
    };
    let c = [LeaseScope::new("user:c", 1), LeaseScope::new("global", 2)];
    assert!(matches!(
        m.try_acquire(&c).await.unwrap(),
        Acquire::Refused { scope: 1, .. }
    ));
    assert_eq!(m.in_use(b"user:c").await.unwrap(), 0);
}

#[tokio::test]
async fn abandoned_lease_frees_its_slot_after_ttl() {
    let prefix = testkit::unique_prefix("leasettl");
    let m = manager(&prefix, 300);
    let scopes = [LeaseScope::new("global", 1)];
    // A holder in another process that dies right after acquiring: the raw script, no guard, so
    // nothing renews or releases it.
    let redis = common::replica(&prefix);
    let scope_key = m.scope_key(b"global");
    let fence_key = redis.keys().fence("adm");
    let reply: Vec<i64> = redis
        .eval(
            &limiter_core::scripts::LEASE_ACQUIRE,
            &[&scope_key, &fence_key],
            &[&"dead-holder", &300u64, &1u32],
        )
        .await
        .unwrap();
    assert_eq!(reply[0], 1);
    assert!(matches!(
        m.try_acquire(&scopes).await.unwrap(),
        Acquire::Refused { .. }
    ));
    let started = std::time::Instant::now();
    loop {
        if let Acquire::Granted(l) = m.try_acquire(&scopes).await.unwrap() {
            l.release().await.unwrap();
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "slot never freed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Freed at the TTL, not before (generous upper bound for a noisy machine).
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn held_guard_outlives_three_ttls() {
    let prefix = testkit::unique_prefix("leasehold");
    let m = manager(&prefix, 300);
    let scopes = [LeaseScope::new("global", 1)];
    let Acquire::Granted(lease) = m.try_acquire(&scopes).await.unwrap() else {
        panic!("refused")
    };
    let first_expiry = lease.expiry_ms();
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(!lease.is_lost());
    assert!(
        lease.expiry_ms() > first_expiry,
        "renewed in the background"
    );
    assert!(matches!(
        m.try_acquire(&scopes).await.unwrap(),
        Acquire::Refused { .. }
    ));
    assert!(lease.release().await.unwrap());
    assert!(matches!(
        m.try_acquire(&scopes).await.unwrap(),
        Acquire::Granted(_)
    ));
}

#[tokio::test]
async fn dropped_guard_releases_and_lost_lease_is_reported() {
    let prefix = testkit::unique_prefix("leasedrop");
    let m = manager(&prefix, 600);
    let scopes = [LeaseScope::new("global", 1)];
    let Acquire::Granted(lease) = m.try_acquire(&scopes).await.unwrap() else {
        panic!("refused")
    };
    drop(lease);
    // The release is spawned: wait for it as an event, bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while m.in_use(b"global").await.unwrap() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "drop did not release"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let Acquire::Granted(lease) = m.try_acquire(&scopes).await.unwrap() else {
        panic!("refused")
    };
    // Someone (an admin reset, a reclaim) removes it: the next renewal reports the loss.
    let redis = common::replica(&prefix);
    let _: i64 = redis
        .cmd(redis::cmd("DEL").arg(m.scope_key(b"global")))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(3), lease.lost())
        .await
        .expect("loss reported");
    assert!(lease.is_lost());
}

/// Fencing tokens are unique and increase fleet-wide, also when the counter key is lost: deleted,
/// or gone with a Redis that restarted empty. Tokens never fall below Redis time in µs, and a
/// Redis grants far fewer than one lease per µs, so no token issued before the loss can be reached
/// again (as long as the Redis host's clock does not step back).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fencing_tokens_stay_unique_and_increasing_when_the_counter_is_lost() {
    let mut server = testkit::RedisServer::start();
    let managers: Vec<LeaseManager> = (0..4)
        .map(|_| {
            LeaseManager::new(
                common::replica_at(&server.url(), "fence"),
                "adm",
                Duration::from_secs(5),
            )
            .unwrap()
        })
        .collect();

    // Four handles acquire at once, 25 leases each, one after another per handle.
    async fn phase(managers: &[LeaseManager]) -> Vec<Vec<i64>> {
        let mut tasks = Vec::new();
        for m in managers {
            let m = m.clone();
            tasks.push(tokio::spawn(async move {
                let scopes = [LeaseScope::new("global", 100)];
                let mut tokens = Vec::new();
                while tokens.len() < 25 {
                    match m.try_acquire(&scopes).await {
                        Ok(Acquire::Granted(l)) => {
                            tokens.push(l.fence());
                            l.release().await.unwrap();
                        }
                        Ok(Acquire::Refused { .. }) => panic!("cap 100 refused"),
                        // Redis restarting: the handle reconnects by itself.
                        Err(e) if e.is_unavailable() => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                tokens
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }

    let mut phases = vec![phase(&managers).await];
    let redis = common::replica_at(&server.url(), "fence");
    let fence_key = redis.keys().fence("adm");
    let n: i64 = redis.cmd(redis::cmd("DEL").arg(&fence_key)).await.unwrap();
    assert_eq!(n, 1, "the counter existed and is gone");
    phases.push(phase(&managers).await);
    server.restart();
    phases.push(phase(&managers).await);

    let mut all = Vec::new();
    let mut floor = 0;
    for (i, per_handle) in phases.iter().enumerate() {
        for tokens in per_handle {
            assert!(
                tokens.windows(2).all(|w| w[0] < w[1]),
                "phase {i}: one handle's tokens must increase: {tokens:?}"
            );
            assert!(
                tokens[0] > floor,
                "phase {i}: token {} not above {floor}, issued before the counter was lost",
                tokens[0]
            );
        }
        floor = per_handle.iter().flatten().copied().max().unwrap();
        all.extend(per_handle.iter().flatten().copied());
    }
    let unique: std::collections::HashSet<i64> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "every token unique");
    assert_eq!(all.len(), 300);
}

/// A lease through a proxy the test can cut, with a 3 s TTL; and a manager on the same Redis
/// that is never cut, to see the slot from outside.
async fn lease_behind_a_proxy(
    server: &testkit::RedisServer,
) -> (TcpProxy, limiter_core::Lease, LeaseManager) {
    let proxy = TcpProxy::start(server.port()).await;
    let ttl = Duration::from_secs(3);
    let cut_off = LeaseManager::new(common::replica_at(&proxy.url(), "gap"), "adm", ttl).unwrap();
    let outside = LeaseManager::new(common::replica_at(&server.url(), "gap"), "adm", ttl).unwrap();
    let Acquire::Granted(lease) = cut_off
        .try_acquire(&[LeaseScope::new("global", 1)])
        .await
        .unwrap()
    else {
        panic!("refused")
    };
    (proxy, lease, outside)
}

/// Redis unreachable for less than the TTL: the lease is not given up (its last renewal keeps it
/// in Redis until then) and renews again once Redis answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_rides_out_a_redis_gap_shorter_than_its_ttl() {
    let server = testkit::RedisServer::start();
    let (proxy, lease, outside) = lease_behind_a_proxy(&server).await;
    let ttl = Duration::from_secs(3);
    common::cut_and_hold_half_a_ttl(&proxy, &lease, ttl).await;
    let expiry_before = lease.expiry_ms();
    proxy.restore();
    // Renewed again: Redis confirms a later expiry (a renewal every TTL/3).
    let deadline = tokio::time::Instant::now() + ttl * 2;
    while lease.expiry_ms() <= expiry_before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never renewed again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!lease.is_lost());
    assert!(
        matches!(
            outside
                .try_acquire(&[LeaseScope::new("global", 1)])
                .await
                .unwrap(),
            Acquire::Refused { .. }
        ),
        "the slot is still held"
    );
    assert!(lease.release().await.unwrap());
}

/// Redis unreachable for longer than the TTL: the lease is reported lost before it can have
/// expired in Redis and not before its last confirmed lifetime (less the drift margin), and its
/// slot is free for others once it has expired there, within a TTL of the cut: nothing renews
/// a lost lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_reported_lost_after_a_redis_gap_longer_than_its_ttl() {
    let server = testkit::RedisServer::start();
    let (proxy, lease, outside) = lease_behind_a_proxy(&server).await;
    let ttl = Duration::from_secs(3);
    let cut_at = common::cut_and_hold_half_a_ttl(&proxy, &lease, ttl).await;
    common::expect_reported_lost(&lease, ttl, cut_at).await;
    proxy.restore();
    let other = loop {
        match outside
            .try_acquire(&[LeaseScope::new("global", 1)])
            .await
            .unwrap()
        {
            Acquire::Granted(other) => break other,
            Acquire::Refused { .. } => {
                assert!(
                    cut_at.elapsed() < ttl + Duration::from_secs(1),
                    "the lost lease still holds its slot {:?} after the cut",
                    cut_at.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    other.release().await.unwrap();
}

/// Redis frozen (SIGSTOP): the renewal neither succeeds nor fails, it hangs. The lease is still
/// reported lost before it can have expired in Redis: loss is a timer on this side, not the
/// outcome of a renewal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_whose_renewal_hangs_is_reported_lost_before_it_can_expire() {
    let server = testkit::RedisServer::start();
    let ttl = Duration::from_secs(3);
    let leases = LeaseManager::new(common::replica_at(&server.url(), "hang"), "adm", ttl).unwrap();
    let Acquire::Granted(lease) = leases
        .try_acquire(&[LeaseScope::new("global", 1)])
        .await
        .unwrap()
    else {
        panic!("refused")
    };
    server.pause();
    let paused_at = tokio::time::Instant::now();
    let lost = tokio::time::timeout(ttl * 2, lease.lost()).await;
    let after = paused_at.elapsed();
    server.resume();
    lost.expect("never reported lost while Redis was frozen");
    assert!(
        after < ttl,
        "reported lost {after:?} into the freeze: past the lease's lifetime in Redis"
    );
    assert!(after >= ttl / 2, "reported lost {after:?} into the freeze");
    drop(lease);
}

/// The acquire script refuses an id already held with an error, and takes back what it added to
/// the scopes before the one that held it: no scope keeps a half-made lease.
#[tokio::test]
async fn an_id_already_held_is_refused_and_leaves_no_trace() {
    let prefix = testkit::unique_prefix("leasedup");
    let m = manager(&prefix, 60_000);
    let redis = common::replica(&prefix);
    let user = m.scope_key(b"user:a");
    let global = m.scope_key(b"global");
    let fence = redis.keys().fence("adm");
    let acquire = |keys: [&String; 2], id: &'static str| {
        let redis = redis.clone();
        let (k0, k1, fence) = (keys[0].clone(), keys[1].clone(), fence.clone());
        async move {
            redis
                .eval::<Vec<i64>>(
                    &limiter_core::scripts::LEASE_ACQUIRE,
                    &[&k0, &k1, &fence],
                    &[&id, &60_000u64, &5u32, &5u32],
                )
                .await
        }
    };
    // "dup" held in the global scope only (another user's lease under the same id).
    let other = m.scope_key(b"user:b");
    assert_eq!(acquire([&other, &global], "dup").await.unwrap()[0], 1);
    // Acquiring it again for user a: added to a's scope first, then found in the global one.
    let err = acquire([&user, &global], "dup").await.unwrap_err();
    assert!(
        format!("{err:?}").contains("already held"),
        "unexpected error: {err:?}"
    );
    assert_eq!(
        m.in_use(b"user:a").await.unwrap(),
        0,
        "a's scope rolled back"
    );
    assert_eq!(m.in_use(b"global").await.unwrap(), 1);
    assert_eq!(m.in_use(b"user:b").await.unwrap(), 1);
    // A fresh id still goes through.
    assert_eq!(acquire([&user, &global], "fresh").await.unwrap()[0], 1);
    assert_eq!(m.in_use(b"user:a").await.unwrap(), 1);
}
