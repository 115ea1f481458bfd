//! The store against a fresh PostgreSQL database, on a table of its own: quotas of different
//! scopes count apart, concurrent spends from two stores (two replicas) stop exactly at the
//! limit, a batch grants each key in arrival order, refunds stay on their day, stale rows are
//! purged, and the hook behind limiter-tower's `QuotaLayer` keeps, refunds and refuses.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use daily_quota::{DailyQuota, QuotaStore, Spend, StoreOptions, Table};
use http_body_util::BodyExt;
use limiter_tower::{ConstantKey, QuotaLayer};
use sqlx::postgres::PgPoolOptions;
use testkit::postgres::TestDb;
use tower::{Layer, Service, ServiceExt};

async fn store(db: &TestDb, connections: u32) -> QuotaStore {
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .connect(&db.url)
        .await
        .unwrap();
    let s = QuotaStore::new(pool, &Table::own("usage").unwrap(), StoreOptions::default());
    s.create_table().await.unwrap();
    s
}

async fn used(s: &QuotaStore, scope: &str, subject: &str) -> u32 {
    s.usage(scope, subject, 0).await.unwrap().used
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_spending_two_scopes_stop_exactly_at_each_limit() {
    let db = TestDb::create().await;
    let stores = [store(&db, 4).await, store(&db, 4).await];
    let mut tasks = Vec::new();
    for i in 0..15 {
        for u in 0..20 {
            for scope in ["GET /a", "GET /b"] {
                let s = stores[(i + u) % 2].clone();
                let subject = format!("user-{u}");
                tasks.push(tokio::spawn(async move {
                    let out =
                        tokio::time::timeout(Duration::from_secs(30), s.spend(scope, &subject, 7))
                            .await
                            .expect("a spend hung")
                            .unwrap();
                    ((scope, subject), out)
                }));
            }
        }
    }
    let mut by_key: HashMap<(&str, String), Vec<u32>> = HashMap::new();
    for t in tasks {
        let (key, out) = t.await.unwrap();
        let left = by_key.entry(key).or_default();
        if let Spend::Spent(t) = out {
            left.push(t.remaining);
        }
    }
    assert_eq!(by_key.len(), 40);
    for ((scope, subject), mut left) in by_key {
        left.sort_unstable();
        assert_eq!(left, (0..7).collect::<Vec<_>>(), "{scope} {subject}");
        assert_eq!(used(&stores[0], scope, &subject).await, 7);
    }
}

#[tokio::test]
async fn a_batch_grants_each_key_in_arrival_order() {
    let db = TestDb::create().await;
    let s = store(&db, 2).await;
    let out: Vec<Option<u32>> = s
        .spend_batch(
            &[("a", "u"), ("b", "u"), ("a", "u"), ("a", "u"), ("b", "v")],
            2,
        )
        .await
        .into_iter()
        .map(|r| match r.unwrap() {
            Spend::Spent(t) => Some(t.remaining),
            Spend::Exhausted { limit, .. } => {
                assert_eq!(limit, 2);
                None
            }
        })
        .collect();
    assert_eq!(out, vec![Some(1), Some(1), Some(0), None, Some(1)]);
    assert_eq!((used(&s, "a", "u").await, used(&s, "b", "u").await), (2, 1));
}

#[tokio::test]
async fn a_refund_gives_back_on_the_day_spent_only_and_never_below_zero() {
    let db = TestDb::create().await;
    let s = store(&db, 2).await;
    let Spend::Spent(t) = s.spend("q", "u", 3).await.unwrap() else {
        panic!("spent")
    };
    assert!(s.refund(&t).await.unwrap());
    assert!(!s.refund(&t).await.unwrap(), "never below zero");
    assert_eq!(used(&s, "q", "u").await, 0);
    let Spend::Spent(mut t) = s.spend("q", "u", 3).await.unwrap() else {
        panic!("spent")
    };
    // A ticket of yesterday (a refund arriving after midnight) leaves today's count alone.
    t.day = t.day.pred_opt().unwrap();
    assert!(!s.refund(&t).await.unwrap());
    assert_eq!(used(&s, "q", "u").await, 1);
    // A count of an earlier day is no count today, and the next spend starts the day at one.
    sqlx::query("UPDATE usage SET day = day - 1")
        .execute(s.pool())
        .await
        .unwrap();
    assert_eq!(used(&s, "q", "u").await, 0);
    let Spend::Spent(t) = s.spend("q", "u", 3).await.unwrap() else {
        panic!("spent")
    };
    assert_eq!(t.remaining, 2);
}

#[tokio::test]
async fn stale_rows_are_purged_and_creating_the_table_twice_is_harmless() {
    let db = TestDb::create().await;
    let s = store(&db, 2).await;
    s.create_table().await.unwrap();
    for u in ["old", "yesterday", "today"] {
        s.spend("q", u, 3).await.unwrap();
    }
    sqlx::query("UPDATE usage SET day = day - 2 WHERE subject = 'old'")
        .execute(s.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE usage SET day = day - 1 WHERE subject = 'yesterday'")
        .execute(s.pool())
        .await
        .unwrap();
    assert_eq!(s.purge_stale().await.unwrap(), 1);
    let left: Vec<String> = sqlx::query_scalar("SELECT subject FROM usage ORDER BY subject")
        .fetch_all(s.pool())
        .await
        .unwrap();
    assert_eq!(left, ["today", "yesterday"]);
}

/// Answers 500 for `/fail`, else 200 with a body.
async fn app(
    req: http::Request<String>,
) -> Result<http::Response<String>, std::convert::Infallible> {
    let status = if req.uri().path() == "/fail" {
        500
    } else {
        200
    };
    let mut resp = http::Response::new("answer".to_string());
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
    Ok(resp)
}

async fn wait_used(s: &QuotaStore, n: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while used(s, "route", "all").await != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "used never reached {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hook_behind_a_quota_layer_keeps_refunds_and_refuses() {
    let db = TestDb::create().await;
    let s = store(&db, 2).await;
    let quota = DailyQuota::new(s.clone(), "route", 2);
    let limit = quota.limit_cell();
    let mut svc = QuotaLayer::new(quota, ConstantKey::new("all")).layer(tower::service_fn(app));
    let mut call = async |path: &str| {
        let req = http::Request::builder()
            .uri(path)
            .body(String::new())
            .unwrap();
        let resp = svc.ready().await.unwrap().call(req).await.unwrap();
        let status = resp.status().as_u16();
        let retry = resp.headers().get("retry-after").cloned();
        resp.into_body().collect().await.unwrap();
        (status, retry)
    };
    assert_eq!(call("/ok").await.0, 200);
    wait_used(&s, 1).await;
    // The app's 5xx gives the unit back.
    assert_eq!(call("/fail").await.0, 500);
    wait_used(&s, 1).await;
    assert_eq!(call("/ok").await.0, 200);
    wait_used(&s, 2).await;
    let (status, retry) = call("/ok").await;
    assert_eq!(status, 429);
    let secs: u64 = retry.unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&secs), "{secs}");
    // A raised limit applies to the next request.
    limit.store(3, Ordering::Relaxed);
    assert_eq!(call("/ok").await.0, 200);
    wait_used(&s, 3).await;
}

/// One connection from `daily_quota::pool_options()`, so a test can look at the session a
/// spend ran on.
async fn one_connection_store(db: &TestDb, async_commit: bool) -> QuotaStore {
    let pool = daily_quota::pool_options()
        .max_connections(1)
        .connect(&db.url)
        .await
        .unwrap();
    let options = StoreOptions {
        async_commit,
        ..StoreOptions::default()
    };
    let s = QuotaStore::new(pool, &Table::own("usage").unwrap(), options);
    s.create_table().await.unwrap();
    s
}

#[tokio::test]
async fn asynchronous_commit_counts_exactly_and_leaves_the_session_durable() {
    let db = TestDb::create().await;
    let s = one_connection_store(&db, true).await;
    let outcomes = s.spend_batch(&[("q", "u"); 5], 3).await;
    let spent = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(Spend::Spent(_))))
        .count();
    assert_eq!(spent, 3, "{outcomes:?}");
    assert!(matches!(
        s.spend("q", "u", 3).await,
        Ok(Spend::Exhausted { .. })
    ));
    assert_eq!(used(&s, "q", "u").await, 3);
    // The setting lasts for the spend's own transaction only: anything else later run on this
    // connection commits durably.
    let setting: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert_eq!(setting, "on");
}

#[tokio::test]
async fn a_connection_lost_while_idle_is_replaced_before_a_spend() {
    let db = TestDb::create().await;
    let s = one_connection_store(&db, false).await;
    assert!(matches!(s.spend("q", "u", 10).await, Ok(Spend::Spent(_))));
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(s.pool())
        .await
        .unwrap();
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .unwrap();
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&admin)
        .await
        .unwrap();
    assert!(killed);
    // Idle past the threshold, the pooled connection is pinged, found dead and replaced, so
    // the spend succeeds instead of failing on the dead one.
    tokio::time::sleep(daily_quota::PING_WHEN_IDLE_FOR + Duration::from_millis(200)).await;
    assert!(matches!(s.spend("q", "u", 10).await, Ok(Spend::Spent(_))));
    assert_eq!(used(&s, "q", "u").await, 2);
}

/// Whether every connection of the pool is idle in it, waiting up to `within` for it.
async fn all_idle(s: &QuotaStore, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let p = s.pool();
        if p.size() > 0 && p.num_idle() == p.size() as usize {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_batcher_keeps_its_connection_while_busy_and_gives_it_back_when_idle() {
    let db = TestDb::create().await;
    let open = |keep: Duration| {
        let url = db.url.clone();
        async move {
            let pool = daily_quota::pool_options()
                .max_connections(4)
                .connect(&url)
                .await
                .unwrap();
            let options = StoreOptions {
                keep_connection: keep,
                ..StoreOptions::default()
            };
            let s = QuotaStore::new(pool, &Table::own("usage").unwrap(), options);
            s.create_table().await.unwrap();
            s
        }
    };
    // Kept for a minute: after a spend the batcher still holds one connection (no return to
    // the pool, and so no ping, per statement).
    let s = open(Duration::from_secs(60)).await;
    for _ in 0..3 {
        assert!(matches!(s.spend("q", "u", 10).await, Ok(Spend::Spent(_))));
    }
    assert!(
        !all_idle(&s, Duration::from_secs(1)).await,
        "held by the batcher"
    );
    assert_eq!(s.pool().size() as usize - s.pool().num_idle(), 1);
    // Other statements use the rest of the pool meanwhile.
    assert_eq!(used(&s, "q", "u").await, 3);
    // Kept briefly: given back once no spend comes.
    let s = open(Duration::from_millis(100)).await;
    assert!(matches!(s.spend("q", "v", 10).await, Ok(Spend::Spent(_))));
    assert!(all_idle(&s, Duration::from_secs(10)).await, "given back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spend_whose_caller_went_away_while_its_batch_ran_is_given_back() {
    let db = TestDb::create().await;
    let s = store(&db, 3).await;
    assert!(matches!(
        s.spend("s", "u", 5).await.unwrap(),
        Spend::Spent(_)
    ));
    // Another transaction holds the row: the next batch waits on its lock.
    let mut locker = db.connect().await;
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("SELECT used FROM usage WHERE scope = 's' AND subject = 'u' FOR UPDATE")
        .execute(&mut locker)
        .await
        .unwrap();
    let spender = s.clone();
    let caller = tokio::spawn(async move { spender.spend("s", "u", 5).await });
    let mut watcher = db.connect().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut watcher)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the batch never ran"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The caller goes away while its spend is in the database; then the spend commits.
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while used(&s, "s", "u").await != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the orphaned spend stayed counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
