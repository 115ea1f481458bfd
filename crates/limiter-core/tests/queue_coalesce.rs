//! Concurrent admits and releases in one process share script calls (one dispatch for each
//! batch), and the caps, priority and order still hold. Each test owns a redis-server, so its
//! command counts are its own.
#![allow(clippy::unwrap_used)]
mod common;

use std::sync::Arc;

use std::time::Duration;

use common::{HIGH, Held, LOW};
use limiter_core::scripts::{ADMISSION_ENTER, ADMISSION_LEAVE, ADMISSION_RELEASE};
use limiter_core::{Admission, AdmissionConfig, ToRedisArgsDyn};
use testkit::RedisServer;
use tokio::sync::Barrier;
use tokio::time::Instant;

/// `user` 0: no per-user limits.
async fn admission(server: &RedisServer, global: u32, user: u32) -> Admission {
    let cfg = AdmissionConfig {
        global_cap: global,
        user_cap: user,
        max_queue: 10_000,
        max_queued_per_user: if user == 0 { 0 } else { 10_000 },
        ..common::adm_cfg()
    };
    Admission::start(common::replica_at(&server.url(), "qco"), cfg)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_shares_script_calls_and_holds_both_caps() {
    burst(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_without_per_user_limits_holds_the_global_cap() {
    burst(0).await;
}

/// 400 tasks of 8 users admit at once and release once the cap was full; `user_cap` 0: none.
async fn burst(user_cap: u32) {
    let server = RedisServer::start();
    let (global, users, tasks) = (5u32, 8usize, 400usize);
    let adm = admission(&server, global, user_cap).await;
    drop(
        adm.admit(b"warm-up", HIGH, Instant::now() + Duration::from_secs(5))
            .await,
    );
    let before = server.script_calls();

    let overall = Arc::new(Held::default());
    let per_user: Arc<Vec<Held>> = Arc::new((0..users).map(|_| Held::default()).collect());
    let start = Arc::new(Barrier::new(tasks));
    let mut handles = Vec::new();
    for i in 0..tasks {
        let (adm, start) = (adm.clone(), Arc::clone(&start));
        let (overall, per_user) = (Arc::clone(&overall), Arc::clone(&per_user));
        handles.push(tokio::spawn(async move {
            let u = i % users;
            start.wait().await;
            let deadline = Instant::now() + Duration::from_secs(60);
            let permit = adm
                .admit(format!("user-{u}").as_bytes(), HIGH, deadline)
                .await
                .unwrap();
            overall.granted();
            per_user[u].granted();
            // Held until the cap was full once (others wait in the queue meanwhile), so the test
            // sees the cap reached however the grants' wake-ups are scheduled; bounded, so a
            // cap never reached fails the assertion below instead of hanging.
            let held = Instant::now();
            while overall.max() < global as usize && held.elapsed() < Duration::from_secs(5) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            per_user[u].released();
            overall.released();
            permit.release().await.unwrap();
        }));
    }
    for h in handles {
        tokio::time::timeout(Duration::from_secs(60), h)
            .await
            .expect("an admit stalled")
            .unwrap();
    }
    // Counted between grant and release, so never above what Redis counted, and the burst
    // was large enough to fill the cap.
    assert_eq!(overall.max(), global as usize);
    for (u, f) in per_user.iter().enumerate().filter(|_| user_cap > 0) {
        assert!(
            f.max() <= user_cap as usize,
            "user {u} held {} at once",
            f.max()
        );
    }
    // One enter and one release each, one call per request at most without batching.
    let calls = server.script_calls() - before;
    assert!(
        calls < (2 * tasks as u64) * 3 / 4,
        "{tasks} admits and releases took {calls} script calls"
    );
}

/// Fences of the leases granted to `group` (spawned waiters, in their order of arrival).
async fn fences(
    group: Vec<tokio::task::JoinHandle<limiter_core::Permit>>,
) -> (Vec<i64>, Vec<limiter_core::Permit>) {
    let mut permits = Vec::new();
    for w in group {
        permits.push(
            tokio::time::timeout(Duration::from_secs(10), w)
                .await
                .expect("hand-off stalled")
                .unwrap(),
        );
    }
    let fences = permits.iter().map(|p| p.lease().unwrap().fence()).collect();
    (fences, permits)
}

fn increasing(v: &[i64]) -> bool {
    v.windows(2).all(|w| w[0] < w[1])
}

/// Slots freed together by batched releases go to the waiters first in line: every waiter of
/// the higher class before any of the lower, and in order of arrival within a class (grant
/// order is fence order).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_releases_hand_slots_on_in_priority_then_arrival_order() {
    hand_on_in_order(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_per_user_limits_slots_go_in_priority_then_arrival_order() {
    hand_on_in_order(false).await;
}

async fn hand_on_in_order(per_user: bool) {
    let server = RedisServer::start();
    let cap = 4usize;
    let user_cap = if per_user { cap as u32 } else { 0 };
    let adm = admission(&server, cap as u32, user_cap).await;
    let far = || Instant::now() + Duration::from_secs(30);
    let mut holders = Vec::new();
    for i in 0..cap {
        holders.push(
            adm.admit(format!("h{i}").as_bytes(), HIGH, far())
                .await
                .unwrap(),
        );
    }
    // Queued one at a time (each waits for its position), alternating low and high.
    let (mut low, mut high) = (Vec::new(), Vec::new());
    for i in 0..2 * cap {
        let class = if i % 2 == 0 { LOW } else { HIGH };
        let (ptx, mut prx) = tokio::sync::watch::channel(0u32);
        let adm = adm.clone();
        let task = tokio::spawn(async move {
            adm.admit_watched(format!("w{i}").as_bytes(), class, far(), ptx)
                .await
                .unwrap()
        });
        tokio::time::timeout(Duration::from_secs(5), prx.wait_for(|p| *p > 0))
            .await
            .expect("waiter never queued")
            .unwrap();
        if class == HIGH {
            high.push(task)
        } else {
            low.push(task)
        }
    }
    // Every holder released at once: the releases meet in batches.
    let released = futures_util::future::join_all(holders.into_iter().map(|h| h.release()));
    for r in released.await {
        assert!(r.unwrap(), "a held lease was live");
    }
    let (high_fences, high_permits) = fences(high).await;
    assert!(
        increasing(&high_fences),
        "high class served out of order: {high_fences:?}"
    );
    assert!(
        low.iter().all(|t| !t.is_finished()),
        "a low waiter overtook a high one"
    );
    let released = futures_util::future::join_all(high_permits.into_iter().map(|p| p.release()));
    for r in released.await {
        assert!(r.unwrap(), "a held lease was live");
    }
    let (low_fences, _low_permits) = fences(low).await;
    assert!(
        increasing(&low_fences),
        "low class served out of order: {low_fences:?}"
    );
    assert!(high_fences.iter().max() < low_fences.iter().min());
}

/// Runs an admission script with ARGV[1..6] for group `adm` (user cap 2, global cap 1, lease
/// TTL 15 s, heartbeat TTL 3 s, three classes) followed by `extra`.
async fn raw<T: redis::FromRedisValue>(
    redis: &limiter_core::RedisHandle,
    script: &limiter_core::scripts::LuaScript,
    extra: &[&str],
) -> T {
    raw_capped(redis, "2", script, extra).await
}

/// [`raw`] with user cap `user_cap` ("0": no per-user limits).
async fn raw_capped<T: redis::FromRedisValue>(
    redis: &limiter_core::RedisHandle,
    user_cap: &str,
    script: &limiter_core::scripts::LuaScript,
    extra: &[&str],
) -> T {
    let keys = redis.keys();
    let tag = keys.group_tag("adm");
    let mut args: Vec<&dyn ToRedisArgsDyn> = vec![&tag, &user_cap, &"1", &"15000", &"3000", &"3"];
    args.extend(extra.iter().map(|a| a as &dyn ToRedisArgsDyn));
    redis
        .eval(script, &[&keys.lease_scope("adm", b"global")], &args)
        .await
        .unwrap()
}

/// A batched enter can reach Redis after its caller gave up and its leave went out: the leave
/// leaves a mark, and the enter then neither takes a slot nor queues a waiter nobody is behind.
#[tokio::test]
async fn a_leave_that_overtakes_its_enter_keeps_the_id_out() {
    leave_overtakes_enter("2").await;
}

#[tokio::test]
async fn without_per_user_limits_a_leave_that_overtakes_its_enter_keeps_the_id_out() {
    leave_overtakes_enter("0").await;
}

async fn leave_overtakes_enter(user_cap: &'static str) {
    let server = RedisServer::start();
    let redis = common::replica_at(&server.url(), "qco");
    let keys = redis.keys().clone();
    let user_key = keys.lease_scope("adm", b"user:u");
    let leave = |id: &'static str| {
        let (redis, user_key) = (redis.clone(), user_key.clone());
        async move {
            let args = [id, &user_key, "0", "cafe"];
            raw_capped::<i64>(&redis, user_cap, &ADMISSION_LEAVE, &args).await
        }
    };
    let enter = |id: &'static str| {
        let (redis, user_key) = (redis.clone(), user_key.clone());
        async move {
            let group = [id, &user_key, "cafe", "0", "500", "10", "60000"];
            // Without per-user limits: replica and queue limit, then id and class.
            let flat = ["cafe", "500", id, "0"];
            let args: &[&str] = if user_cap == "0" { &flat } else { &group };
            raw_capped::<Vec<i64>>(&redis, user_cap, &ADMISSION_ENTER, args).await
        }
    };
    let zcard = |key: String| {
        let reply = server.command(&format!("ZCARD {key}"));
        reply.trim().trim_start_matches(':').to_string()
    };
    let global = keys.lease_scope("adm", b"global");
    let head = if user_cap == "0" { "fq" } else { "q2" };
    let queue = format!("{}:{head}:0", keys.group_tag("adm"));

    // A free slot: the overtaken enter does not take it; a fresh id does.
    // (Ids end with the waiter's budget, as a queue without per-user limits needs.)
    assert_eq!(leave("cafe.w1.60000").await, 2, "unknown when it left");
    assert_eq!(enter("cafe.w1.60000").await, [-3, 0, 0]);
    assert_eq!(zcard(global.clone()), "0");
    assert_eq!(enter("cafe.w2.60000").await[0], 1, "granted");
    // No slot free: the overtaken enter does not queue either.
    assert_eq!(leave("cafe.w3.60000").await, 2);
    assert_eq!(enter("cafe.w3.60000").await, [-3, 0, 0]);
    assert_eq!(zcard(queue), "0");
    assert_eq!(enter("cafe.w4.60000").await[0], 0, "queued");
}

/// A waiter's id carries its budget: one whose budget ran out is dropped when its turn comes, and
/// the slot goes to the next; an id without a budget is refused.
#[tokio::test]
async fn a_waiter_past_its_budget_is_dropped() {
    past_budget("2").await;
}

#[tokio::test]
async fn without_per_user_limits_a_waiter_past_its_budget_is_dropped() {
    past_budget("0").await;
}

async fn past_budget(user_cap: &'static str) {
    let server = RedisServer::start();
    let redis = common::replica_at(&server.url(), "qcb");
    let keys = redis.keys().clone();
    let user_key = |u: &str| keys.lease_scope("adm", format!("user:{u}").as_bytes());
    let enter = |id: &'static str| {
        let (redis, user_key) = (redis.clone(), user_key(id));
        async move {
            // Each waiter its own user, so only the global cap holds anyone back.
            let group = [id, &user_key, "cafe", "0", "500", "10", "60000"];
            let flat = ["cafe", "500", id, "0"];
            let args: &[&str] = if user_cap == "0" { &flat } else { &group };
            raw_capped::<Vec<i64>>(&redis, user_cap, &ADMISSION_ENTER, args).await
        }
    };
    assert_eq!(
        enter("cafe.holder.60000").await[0],
        1,
        "takes the only slot"
    );
    assert_eq!(
        enter("cafe.short.1").await[..2],
        [0, 1],
        "queued first, 1 ms budget"
    );
    // Behind the first, or first if a slow machine let its budget run out already (the class
    // queue's key lives only as long as its longest budget): either way it is not served.
    let long = enter("cafe.long.60000").await;
    assert_eq!(long[0], 0, "queued");
    assert!(matches!(long[1], 1 | 2), "position {}", long[1]);
    // Redis time passes the first one's budget (a sleep can only make it later).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let held: Vec<i64> = raw_capped(
        &redis,
        user_cap,
        &ADMISSION_RELEASE,
        &["cafe.holder.60000", &user_key("cafe.holder.60000")],
    )
    .await;
    assert_eq!(held, [1]);
    let global: Vec<String> = redis
        .cmd(
            redis::cmd("ZRANGE")
                .arg(keys.lease_scope("adm", b"global"))
                .arg(0)
                .arg(-1),
        )
        .await
        .unwrap();
    assert_eq!(global, ["cafe.long.60000"], "the expired waiter is skipped");
    let head = if user_cap == "0" { "fq" } else { "q2" };
    let queued: i64 = redis
        .cmd(redis::cmd("ZCARD").arg(keys.group_key("adm", &format!("{head}:0"))))
        .await
        .unwrap();
    assert_eq!(queued, 0, "and dropped");
    let tag = keys.group_tag("adm");
    if user_cap != "0" {
        let short = user_key("cafe.short.1");
        let user = short.strip_prefix(&format!("{tag}:lease:")).unwrap();
        let left: i64 = redis
            .cmd(redis::cmd("EXISTS").arg(format!("{tag}:uq2:0:{user}")))
            .await
            .unwrap();
        assert_eq!(left, 0, "from its user's queue too");
    }
    let nobudget = user_key("cafe.nobudget");
    let group = [
        "cafe.nobudget",
        &nobudget,
        "cafe",
        "0",
        "500",
        "10",
        "60000",
    ];
    let flat = ["cafe", "500", "cafe.nobudget", "0"];
    let extra: &[&str] = if user_cap == "0" { &flat } else { &group };
    let mut args: Vec<&dyn ToRedisArgsDyn> = vec![&tag, &user_cap, &"1", &"15000", &"3000", &"3"];
    args.extend(extra.iter().map(|a| a as &dyn ToRedisArgsDyn));
    let refused: Result<Vec<i64>, _> = redis
        .eval(
            &ADMISSION_ENTER,
            &[&keys.lease_scope("adm", b"global")],
            &args,
        )
        .await;
    assert!(format!("{:?}", refused.expect_err("refused")).contains("without its budget"));
}

/// One enter call carrying ten requests of ten users with three slots free: the first three in
/// the batch take them, the other seven queue in batch order, as ten calls one after another would.
#[tokio::test]
async fn an_enter_batch_takes_only_the_free_slots_then_queues_in_order() {
    let server = RedisServer::start();
    let redis = common::replica_at(&server.url(), "qco");
    let keys = redis.keys().clone();
    let ids: Vec<String> = (0..10).map(|i| format!("cafe.w{i}.60000")).collect();
    let users: Vec<String> = (0..10)
        .map(|i| keys.lease_scope("adm", format!("user:u{i}").as_bytes()))
        .collect();
    let mut group: Vec<&str> = Vec::new();
    for (id, user) in ids.iter().zip(&users) {
        group.extend([
            id.as_str(),
            user.as_str(),
            "cafe",
            "0",
            "500",
            "10",
            "60000",
        ]);
    }
    // ARGV[3] (the global cap) is 1 in `raw`: three slots need their own call.
    let tag = keys.group_tag("adm");
    let mut args: Vec<&dyn ToRedisArgsDyn> = vec![&tag, &"2", &"3", &"15000", &"3000", &"3"];
    args.extend(group.iter().map(|a| a as &dyn ToRedisArgsDyn));
    let reply: Vec<i64> = redis
        .eval(
            &ADMISSION_ENTER,
            &[&keys.lease_scope("adm", b"global")],
            &args,
        )
        .await
        .unwrap();
    let outcomes: Vec<(i64, i64)> = reply.chunks_exact(3).map(|r| (r[0], r[1])).collect();
    let granted: Vec<i64> = outcomes.iter().map(|o| o.0).collect();
    assert_eq!(granted, [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]);
    let positions: Vec<i64> = outcomes[3..].iter().map(|o| o.1).collect();
    assert_eq!(positions, [1, 2, 3, 4, 5, 6, 7]);
}

/// A batch that queues into two classes: each waiter's position counts everyone of the class
/// before its own and those ahead in its own, as of its place in the batch (what separate calls
/// one after another would answer).
#[tokio::test]
async fn an_enter_batch_counts_positions_across_classes() {
    positions_across_classes(true).await;
}

#[tokio::test]
async fn without_per_user_limits_an_enter_batch_counts_positions_across_classes() {
    positions_across_classes(false).await;
}

async fn positions_across_classes(per_user: bool) {
    let server = RedisServer::start();
    let redis = common::replica_at(&server.url(), "qcp");
    let keys = redis.keys().clone();
    // The first takes the only slot; then classes 1, 0, 1, 0, 1.
    let classes = ["0", "1", "0", "1", "0", "1"];
    let ids: Vec<String> = (0..classes.len())
        .map(|i| format!("cafe.w{i}.60000"))
        .collect();
    let users: Vec<String> = (0..classes.len())
        .map(|i| keys.lease_scope("adm", format!("user:u{i}").as_bytes()))
        .collect();
    let mut group: Vec<&str> = Vec::new();
    if !per_user {
        group.extend(["cafe", "500"]);
    }
    for ((id, user), class) in ids.iter().zip(&users).zip(classes) {
        if per_user {
            group.extend([
                id.as_str(),
                user.as_str(),
                "cafe",
                class,
                "500",
                "10",
                "60000",
            ]);
        } else {
            group.extend([id.as_str(), class]);
        }
    }
    let tag = keys.group_tag("adm");
    let user_cap = if per_user { "2" } else { "0" };
    let mut args: Vec<&dyn ToRedisArgsDyn> = vec![&tag, &user_cap, &"1", &"15000", &"3000", &"2"];
    args.extend(group.iter().map(|a| a as &dyn ToRedisArgsDyn));
    let reply: Vec<i64> = redis
        .eval(
            &ADMISSION_ENTER,
            &[&keys.lease_scope("adm", b"global")],
            &args,
        )
        .await
        .unwrap();
    let outcomes: Vec<(i64, i64)> = reply.chunks_exact(3).map(|r| (r[0], r[1])).collect();
    assert_eq!(outcomes[0].0, 1, "the first takes the slot");
    let positions: Vec<i64> = outcomes[1..].iter().map(|o| o.1).collect();
    // w1 (class 1): alone. w2 (class 0): first. w3 (class 1): w2, then w1. w4 (class 0): after
    // w2. w5 (class 1): w2, w4, then w1, w3.
    assert_eq!(positions, [1, 1, 3, 2, 5]);
    // The queue as Redis holds it now (every class-0 waiter ahead of every class-1 one).
    let queue = if per_user { "q2" } else { "fq" };
    for (i, want) in [(1usize, 3i64), (2, 1), (3, 4), (4, 2), (5, 5)] {
        let rank: Option<i64> = redis
            .cmd(
                redis::cmd("ZRANK")
                    .arg(keys.group_key("adm", &format!("{queue}:{}", classes[i])))
                    .arg(&ids[i]),
            )
            .await
            .unwrap();
        let ahead = if classes[i] == "1" { 2 } else { 0 };
        assert_eq!(rank.map(|r| r + 1 + ahead), Some(want), "w{i} now");
    }
}

/// A release batch answers per lease whether it was live, as one call per lease would: a lease
/// named twice in one batch counts once, an unknown one not at all.
#[tokio::test]
async fn a_release_batch_counts_each_live_lease_once() {
    let server = RedisServer::start();
    let redis = common::replica_at(&server.url(), "qcr");
    let keys = redis.keys().clone();
    let user_key = keys.lease_scope("adm", b"user:u");
    let group = [
        "cafe.w1.60000",
        &user_key,
        "cafe",
        "0",
        "500",
        "10",
        "60000",
    ];
    let entered: Vec<i64> = raw(&redis, &ADMISSION_ENTER, &group).await;
    assert_eq!(entered[0], 1, "granted");
    // A malformed pair fails the batch before anything is written: the lease stays held.
    let tag = keys.group_tag("adm");
    let bad: Vec<&dyn ToRedisArgsDyn> = vec![
        &tag,
        &"2",
        &"1",
        &"15000",
        &"3000",
        &"3",
        &"cafe.w1.60000",
        &user_key,
        &"cafe.w1.60000",
        &"elsewhere",
    ];
    let global_key = keys.lease_scope("adm", b"global");
    let refused: Result<Vec<i64>, _> = redis.eval(&ADMISSION_RELEASE, &[&global_key], &bad).await;
    assert!(format!("{:?}", refused.expect_err("refused")).contains("user key outside T"));
    let still: i64 = redis
        .cmd(redis::cmd("ZCARD").arg(&global_key))
        .await
        .unwrap();
    assert_eq!(still, 1, "nothing released by a refused batch");
    let batch = [
        "cafe.w1.60000",
        &user_key,
        "cafe.w1.60000",
        &user_key,
        "cafe.w9.60000",
        &user_key,
    ];
    let held: Vec<i64> = raw(&redis, &ADMISSION_RELEASE, &batch).await;
    assert_eq!(held, [1, 0, 0]);
    let global: i64 = redis
        .cmd(redis::cmd("ZCARD").arg(keys.lease_scope("adm", b"global")))
        .await
        .unwrap();
    assert_eq!(global, 0);
}

/// Two waiters of one user and one of another queued by one enter call: the first user's turn is
/// its first waiter's, so a freed slot goes to it before the other user's later waiter.
#[tokio::test]
async fn an_enter_batch_keeps_each_user_in_line_by_its_first_waiter() {
    let server = RedisServer::start();
    let redis = common::replica_at(&server.url(), "qcl");
    let keys = redis.keys().clone();
    let (x, a, b) = (
        keys.lease_scope("adm", b"user:x"),
        keys.lease_scope("adm", b"user:a"),
        keys.lease_scope("adm", b"user:b"),
    );
    let mut batch: Vec<&str> = Vec::new();
    for (id, user) in [
        ("cafe.x.60000", &x),
        ("cafe.a1.60000", &a),
        ("cafe.b1.60000", &b),
        ("cafe.a2.60000", &a),
    ] {
        batch.extend([id, user.as_str(), "cafe", "0", "500", "10", "60000"]);
    }
    let entered: Vec<i64> = raw(&redis, &ADMISSION_ENTER, &batch).await;
    let outcomes: Vec<i64> = entered.chunks_exact(3).map(|r| r[0]).collect();
    assert_eq!(
        outcomes,
        [1, 0, 0, 0],
        "x holds the only slot, the rest queue"
    );
    let held: Vec<i64> = raw(&redis, &ADMISSION_RELEASE, &["cafe.x.60000", &x]).await;
    assert_eq!(held, [1]);
    let global: Vec<String> = redis
        .cmd(
            redis::cmd("ZRANGE")
                .arg(keys.lease_scope("adm", b"global"))
                .arg(0)
                .arg(-1),
        )
        .await
        .unwrap();
    assert_eq!(global, ["cafe.a1.60000"], "the first in line is served");
}

/// A batch with one malformed request fails as a whole before writing anything: the well-formed
/// request before it neither holds a slot nor waits.
#[tokio::test]
async fn an_enter_batch_with_a_bad_request_writes_nothing() {
    let server = RedisServer::start();
    let redis = common::replica_at(&server.url(), "qcb");
    let keys = redis.keys().clone();
    let user_key = keys.lease_scope("adm", b"user:u");
    let mut batch: Vec<&str> = Vec::new();
    batch.extend([
        "cafe.w1.60000",
        &user_key,
        "cafe",
        "0",
        "500",
        "10",
        "60000",
    ]);
    batch.extend([
        "cafe.w2.60000",
        &user_key,
        "cafe",
        "7",
        "500",
        "10",
        "60000",
    ]);
    let tag = keys.group_tag("adm");
    let mut args: Vec<&dyn ToRedisArgsDyn> = vec![&tag, &"2", &"1", &"15000", &"3000", &"3"];
    args.extend(batch.iter().map(|a| a as &dyn ToRedisArgsDyn));
    let reply: Result<Vec<i64>, _> = redis
        .eval(
            &ADMISSION_ENTER,
            &[&keys.lease_scope("adm", b"global")],
            &args,
        )
        .await;
    let err = reply.expect_err("class 7 of 3 is refused");
    assert!(format!("{err:?}").contains("class out of range"), "{err:?}");
    let written: Vec<String> = redis
        .cmd(redis::cmd("KEYS").arg(format!("{tag}*")))
        .await
        .unwrap();
    assert!(written.is_empty(), "nothing written: {written:?}");
}
