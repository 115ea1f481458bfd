//! Layer 3 against a fresh PostgreSQL database: atomic spend under concurrency, refunds, the UTC
//! day reset, tiers and overrides, PostgreSQL down.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_concurrent_spends_with_three_left_spend_exactly_three() {
    let db = TestDb::create().await;
    let mut cfg = config(&db, "unused");
    cfg.database.max_connections = 10;
    let store = migrate(&cfg).await;
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let s = store.clone();
            tokio::spawn(async move { s.spend("u-race").await.unwrap() })
        })
        .collect();
    let mut spent = 0;
    let mut remaining_seen = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Spend::Spent(ticket) => {
                spent += 1;
                remaining_seen.push(ticket.remaining);
            }
            Spend::Exhausted { limit, retry_after } => {
                assert_eq!(limit, 3);
                assert_until_midnight(retry_after.as_secs_f64());
            }
        }
    }
    assert_eq!(spent, 3);
    remaining_seen.sort_unstable();
    assert_eq!(remaining_seen, vec![0, 1, 2]);
    assert_eq!(used(&store, "u-race").await, 3);
    assert_eq!(store.remaining("u-race").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_utc_day_resets_and_refunds_stay_on_their_day() {
    let db = TestDb::create().await;
    let cfg = config(&db, "unused");
    let store = migrate(&cfg).await;
    let mut tickets = Vec::new();
    for _ in 0..3 {
        match store.spend("u-day").await.unwrap() {
            Spend::Spent(t) => tickets.push(t),
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        store.spend("u-day").await.unwrap(),
        Spend::Exhausted { .. }
    ));
    // Yesterday, by SQL: the row's day moves back one day.
    sqlx::query("UPDATE user_profiles SET usage_day = usage_day - 1 WHERE user_id = 'u-day'")
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(
        store.remaining("u-day").await.unwrap(),
        3,
        "a new day starts full"
    );
    let today = match store.spend("u-day").await.unwrap() {
        Spend::Spent(t) => t,
        other => panic!("{other:?}"),
    };
    assert_eq!(today.remaining, 2);
    assert_eq!(used(&store, "u-day").await, 1, "the counter restarted at 1");
    // A refund of yesterday's spend (its ticket carries yesterday's date, like the row did before
    // the shift) arriving now must not touch today's count.
    let mut yesterdays = tickets[0].clone();
    yesterdays.day = yesterdays.day.pred_opt().unwrap();
    assert!(!store.refund(&yesterdays).await.unwrap());
    assert_eq!(used(&store, "u-day").await, 1);
    // Today's refund works once and never goes below zero.
    assert!(store.refund(&today).await.unwrap());
    assert!(!store.refund(&today).await.unwrap());
    assert_eq!(used(&store, "u-day").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_and_overrides() {
    let db = TestDb::create().await;
    let mut cfg = config(&db, "unused");
    cfg.quota.tiers.insert("pro".into(), 5);
    let store = migrate(&cfg).await;
    store.set_tier("u-pro", "pro").await.unwrap();
    assert_eq!(store.limit("u-pro").await.unwrap(), 5);
    for _ in 0..5 {
        assert!(matches!(
            store.spend("u-pro").await.unwrap(),
            Spend::Spent(_)
        ));
    }
    assert!(matches!(
        store.spend("u-pro").await.unwrap(),
        Spend::Exhausted { limit: 5, .. }
    ));
    store.set_override("u-pro", Some(6)).await.unwrap();
    assert!(matches!(
        store.spend("u-pro").await.unwrap(),
        Spend::Spent(_)
    ));
    store.set_override("u-zero", Some(0)).await.unwrap();
    assert!(matches!(
        store.spend("u-zero").await.unwrap(),
        Spend::Exhausted { limit: 0, .. }
    ));
    // An unknown tier falls back to the free limit.
    store.set_tier("u-odd", "legacy").await.unwrap();
    assert_eq!(store.limit("u-odd").await.unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_upstream_call_is_refunded() {
    let db = TestDb::create().await;
    let prefix = testkit::unique_prefix("refund");
    let cfg = config(&db, &prefix);
    let store = migrate(&cfg).await;
    let fake = FakeAssistant::new(Duration::from_millis(1), 1, Mode::UpstreamDown);
    let server = Server::start(cfg, fake.clone()).await;
    let c = client();
    let r = chat(&c, &server, "u-refund", "hello").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "7");
    let body = r.text().await.unwrap();
    assert!(body.contains("upstream_unavailable"), "{body}");
    assert!(!body.contains("secret internal detail"), "{body}");
    assert_eq!(
        store.remaining("u-refund").await.unwrap(),
        3,
        "the query was given back"
    );
    assert_eq!(used(&store, "u-refund").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_panic_is_a_500_without_internals_and_refunds() {
    let db = TestDb::create().await;
    let prefix = testkit::unique_prefix("panic");
    let cfg = config(&db, &prefix);
    let store = migrate(&cfg).await;
    let fake = FakeAssistant::new(Duration::from_millis(1), 1, Mode::Panic);
    let server = Server::start(cfg, fake.clone()).await;
    let c = client();
    let r = chat(&c, &server, "u-panic", "hello").await;
    assert_eq!(r.status(), 500);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body = r.text().await.unwrap();
    assert!(!body.contains("secret"), "{body}");
    // The refund runs in a task spawned during unwinding; wait for it (bounded).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while used(&store, "u-panic").await != 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(used(&store, "u-panic").await, 0);
    // The slot was released too: the same user can run 2 at once again.
    let r = server.state.gate().stats().await.unwrap();
    assert_eq!(r.slots_in_use, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_is_503_and_spends_nothing() {
    let db = TestDb::create().await;
    let prefix = testkit::unique_prefix("pgdown");
    let mut cfg = config(&db, &prefix);
    // Nothing listens there.
    cfg.database.url = api::config::secret::Secret::new(format!(
        "postgres://postgres@127.0.0.1:{}/none",
        testkit::free_port()
    ));
    cfg.database.acquire_timeout_ms = 500;
    let fake = FakeAssistant::new(Duration::from_millis(1), 1, Mode::Answer);
    let server = Server::start(cfg, fake.clone() as Arc<dyn chat::Assistant>).await;
    let c = client();
    let r = chat(&c, &server, "u-pg", "hello").await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(problem_code(r).await, "service_unavailable");
    assert_eq!(fake.calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    let r = c.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let r = c
        .get(server.url("/api/system-health"))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], "unhealthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_spends_of_a_new_user_all_count() {
    let db = TestDb::create().await;
    let mut cfg = config(&db, "unused");
    cfg.database.max_connections = 10;
    let store = migrate(&cfg).await;
    for round in 0..5 {
        let user = format!("new-user-{round}");
        let tasks: Vec<_> = (0..3)
            .map(|_| {
                let s = store.clone();
                let u = user.clone();
                tokio::spawn(async move { s.spend(&u).await.unwrap() })
            })
            .collect();
        for t in tasks {
            assert!(matches!(t.await.unwrap(), Spend::Spent(_)), "round {round}");
        }
        assert_eq!(used(&store, &user).await, 3);
    }
}

/// The quota day is the UTC day whatever the database session's time zone: sessions 14 hours
/// ahead of UTC and 12 hours behind (at any instant, the local date of one of them is not the UTC
/// date) count on, refund on and reset at the UTC day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quota_day_is_utc_in_any_session_time_zone() {
    use sqlx::Executor;
    let db = TestDb::create().await;
    let cfg = config(&db, "unused");
    migrate(&cfg).await;
    let mut local_day_differed = false;
    for zone in ["Pacific/Kiritimati", "Etc/GMT+12"] {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    conn.execute(sqlx::AssertSqlSafe(format!("SET TIME ZONE '{zone}'")))
                        .await?;
                    Ok(())
                })
            })
            .connect(&db.url)
            .await
            .unwrap();
        let store = QuotaStore::with_pool(pool, &cfg);
        let session_day: chrono::NaiveDate = sqlx::query_scalar("SELECT CURRENT_DATE")
            .fetch_one(store.pool())
            .await
            .unwrap();
        let user = format!("tz-{zone}");
        let ticket = match store.spend(&user).await.unwrap() {
            Spend::Spent(t) => t,
            other => panic!("{other:?}"),
        };
        let utc_day = chrono::Utc::now().date_naive();
        local_day_differed |= session_day != utc_day;
        assert_eq!(ticket.day, utc_day, "{zone}: the spend's day");
        let row_day: chrono::NaiveDate =
            sqlx::query_scalar("SELECT usage_day FROM user_profiles WHERE user_id = $1")
                .bind(&user)
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!(row_day, utc_day, "{zone}: the row's day");
        assert_eq!(store.remaining(&user).await.unwrap(), 2, "{zone}");
        // A count of the previous UTC day does not count today ...
        sqlx::query("UPDATE user_profiles SET usage_day = usage_day - 1 WHERE user_id = $1")
            .bind(&user)
            .execute(store.pool())
            .await
            .unwrap();
        assert_eq!(
            store.remaining(&user).await.unwrap(),
            3,
            "{zone}: a new day"
        );
        // ... and today's spend starts it again at one, refundable on today.
        let today = match store.spend(&user).await.unwrap() {
            Spend::Spent(t) => t,
            other => panic!("{other:?}"),
        };
        assert_eq!((today.day, today.remaining), (utc_day, 2), "{zone}");
        assert!(store.refund(&today).await.unwrap(), "{zone}");
        assert_eq!(used(&store, &user).await, 0, "{zone}");
    }
    assert!(
        local_day_differed,
        "one of the two zones was on another date than UTC"
    );
}
