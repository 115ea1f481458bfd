//! Group commit of quota spends against a fresh PostgreSQL database: concurrent spends of one
//! user and of many users end exactly at their limits, a batch that holds one user several times
//! grants them in order, two replicas sharing users neither deadlock nor over-spend, the
//! asynchronous-commit mode counts the same, and a failing statement answers every spend (only
//! the spends of the failing row fail).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use api::limits::quota::{QuotaStore, Spend};
use common::*;

async fn used(store: &QuotaStore, user: &str) -> i32 {
    sqlx::query_scalar("SELECT queries_used FROM user_profiles WHERE user_id = $1")
        .bind(user)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// Spawns `per_user` concurrent spends for each of `users` users (`{name}-{i}`) on `stores`
/// (round robin);
/// returns the outcomes per user.
async fn hammer(
    stores: &[QuotaStore],
    name: &str,
    users: usize,
    per_user: usize,
) -> HashMap<String, Vec<Spend>> {
    let mut tasks = Vec::new();
    for i in 0..per_user {
        for u in 0..users {
            let s = stores[(i + u) % stores.len()].clone();
            let user = format!("{name}-{u}");
            tasks.push(tokio::spawn(async move {
                let out = tokio::time::timeout(Duration::from_secs(30), s.spend(&user))
                    .await
                    .expect("a spend hung")
                    .unwrap();
                (user, out)
            }));
        }
    }
    let mut by_user: HashMap<String, Vec<Spend>> = HashMap::new();
    for t in tasks {
        let (u, out) = t.await.unwrap();
        by_user.entry(u).or_default().push(out);
    }
    by_user
}

/// Every user got exactly `limit` grants with remaining `limit-1 .. 0`, and the rows say `limit`.
async fn assert_exact(store: &QuotaStore, by_user: &HashMap<String, Vec<Spend>>, limit: u32) {
    for (user, outs) in by_user {
        let mut remaining: Vec<u32> = outs
            .iter()
            .filter_map(|o| match o {
                Spend::Spent(t) => Some(t.remaining),
                Spend::Exhausted { limit: l, .. } => {
                    assert_eq!(*l, limit, "{user}");
                    None
                }
            })
            .collect();
        remaining.sort_unstable();
        assert_eq!(
            remaining,
            (0..limit).collect::<Vec<_>>(),
            "{user}: one grant per remaining count"
        );
        assert_eq!(
            used(store, user).await,
            i32::try_from(limit).unwrap(),
            "{user}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_spends_of_one_and_of_many_users_stop_exactly_at_the_limit() {
    let db = TestDb::create().await;
    let mut cfg = config(&db, "unused");
    cfg.database.max_connections = 8;
    cfg.quota.free_daily_queries = 20;
    let store = migrate(&cfg).await;
    // One user, 200 concurrent spends: batches hold the user many times over.
    let hot = hammer(std::slice::from_ref(&store), "hot", 1, 200).await;
    assert_exact(&store, &hot, 20).await;
    // 60 users, 30 spends each, all at once (new users: their profiles are created in batches).
    let many = hammer(std::slice::from_ref(&store), "many", 60, 30).await;
    assert_eq!(many.len(), 60);
    assert_exact(&store, &many, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_one_user_several_times_grants_in_arrival_order() {
    let db = TestDb::create().await;
    let mut cfg = config(&db, "unused");
    cfg.quota.tiers.insert("pro".into(), 5);
    let store = migrate(&cfg).await;
    store.set_tier("pro-1", "pro").await.unwrap();
    // pro-1 has 5 with 1 used; a and b are new (free tier: 3).
    assert!(matches!(
        store.spend("pro-1").await.unwrap(),
        Spend::Spent(_)
    ));
    let batch = [
        "a", "pro-1", "a", "b", "pro-1", "a", "pro-1", "a", "pro-1", "pro-1",
    ];
    let out: Vec<Spend> = store
        .spend_batch(&batch)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let got: Vec<Option<u32>> = out
        .iter()
        .map(|o| match o {
            Spend::Spent(t) => Some(t.remaining),
            Spend::Exhausted { .. } => None,
        })
        .collect();
    assert_eq!(
        got,
        vec![
            Some(2), // a 1/3
            Some(3), // pro-1 2/5
            Some(1), // a 2/3
            Some(2), // b 1/3
            Some(2), // pro-1 3/5
            Some(0), // a 3/3
            Some(1), // pro-1 4/5
            None,    // a over
            Some(0), // pro-1 5/5
            None,    // pro-1 over
        ]
    );
    assert!(matches!(out[7], Spend::Exhausted { limit: 3, .. }));
    assert!(matches!(out[9], Spend::Exhausted { limit: 5, .. }));
    assert_eq!(used(&store, "a").await, 3);
    assert_eq!(used(&store, "b").await, 1);
    assert_eq!(used(&store, "pro-1").await, 5);
}

/// Two replicas (two stores, two pools, two batchers) spending for the same users at once: their
/// batches lock rows in one order, so none waits on the other in a cycle (a deadlock would fail a
/// batch, or stall it for PostgreSQL's deadlock timeout), and the counts stay exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_sharing_users_neither_deadlock_nor_over_spend() {
    let db = TestDb::create().await;
    let mut cfg = config(&db, "unused");
    cfg.database.max_connections = 4;
    cfg.quota.free_daily_queries = 15;
    let a = migrate(&cfg).await;
    let b = migrate(&cfg).await;
    let by_user = hammer(&[a.clone(), b.clone()], "shared", 40, 25).await;
    assert_exact(&a, &by_user, 15).await;
    // PostgreSQL's own count of deadlocks in this database (its backends report it by the time
    // they exit).
    a.pool().close().await;
    b.pool().close().await;
    let observer = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .unwrap();
    let deadlocks: i64 = sqlx::query_scalar(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&observer)
    .await
    .unwrap();
    assert_eq!(deadlocks, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_commit_mode_counts_the_same() {
    let db = TestDb::create().await;
    let mut cfg = config(&db, "unused");
    cfg.database.max_connections = 8;
    cfg.quota.free_daily_queries = 10;
    cfg.quota.async_commit = true;
    let store = migrate(&cfg).await;
    let by_user = hammer(std::slice::from_ref(&store), "async", 30, 20).await;
    assert_exact(&store, &by_user, 10).await;
    // The setting is local to the batch's transaction: the pool's sessions keep the default.
    let mode: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(mode, "on");
}

/// A statement that fails on one user's row fails only that user's spends: the others in the
/// batch are counted, every caller gets an answer, and the batcher keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_row_fails_only_its_own_spends() {
    let db = TestDb::create().await;
    let mut cfg = config(&db, "unused");
    cfg.database.max_connections = 8;
    cfg.quota.free_daily_queries = 1000;
    let store = migrate(&cfg).await;
    // A row that cannot be spent on: any update of its usage violates a constraint.
    store.set_tier("poison", "free").await.unwrap();
    sqlx::query(
        "ALTER TABLE user_profiles ADD CONSTRAINT no_poison \
         CHECK (user_id <> 'poison' OR queries_used = 0)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    // One explicit batch ...
    let out = store.spend_batch(&["x", "poison", "y", "x"]).await;
    assert!(matches!(out[0], Ok(Spend::Spent(_))));
    assert!(out[1].is_err(), "the poisoned row's spend fails");
    assert!(matches!(out[2], Ok(Spend::Spent(_))));
    assert!(matches!(out[3], Ok(Spend::Spent(_))));
    assert_eq!((used(&store, "x").await, used(&store, "y").await), (2, 1));
    // ... and the batcher under load: every spend answered, every success counted.
    let mut tasks = Vec::new();
    for i in 0..300 {
        let s = store.clone();
        let user = if i % 10 == 0 {
            "poison".to_string()
        } else {
            format!("ok-{}", i % 7)
        };
        tasks.push(tokio::spawn(async move {
            let r = tokio::time::timeout(Duration::from_secs(30), s.spend(&user))
                .await
                .expect("a spend hung");
            (user, r)
        }));
    }
    let mut spent: HashMap<String, i32> = HashMap::new();
    for t in tasks {
        let (user, r) = t.await.unwrap();
        match r {
            Ok(Spend::Spent(_)) => *spent.entry(user).or_default() += 1,
            Ok(other) => panic!("{user}: {other:?}"),
            Err(_) => assert_eq!(user, "poison", "only the poisoned row fails"),
        }
    }
    assert!(!spent.contains_key("poison"));
    for (user, n) in &spent {
        assert_eq!(used(&store, user).await, *n, "{user}");
    }
    assert_eq!(spent.values().sum::<i32>(), 270);
    assert_eq!(used(&store, "poison").await, 0);
}

/// With the database gone (here: the pool closed), every queued spend is answered with an error,
/// none hangs and none is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pool_answers_every_spend_with_an_error() {
    let db = TestDb::create().await;
    let cfg = config(&db, "unused");
    let store = migrate(&cfg).await;
    assert!(matches!(store.spend("u").await.unwrap(), Spend::Spent(_)));
    let observer = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .unwrap();
    store.pool().close().await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let s = store.clone();
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(30), s.spend("u"))
                    .await
                    .expect("a spend hung")
            })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().is_err());
    }
    let n: i32 = sqlx::query_scalar("SELECT queries_used FROM user_profiles WHERE user_id = 'u'")
        .fetch_one(&observer)
        .await
        .unwrap();
    assert_eq!(n, 1);
}
