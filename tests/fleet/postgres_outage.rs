//! PostgreSQL unreachable mid-load (a cluster the test owns, stopped at once and started again
//! 6 s later): chats answer 503 `service_unavailable` with `Retry-After`, no quota is spent or
//! lost (each user's `queries_used` equals the answers they got), no replica exits, and every
//! replica serves again by itself once PostgreSQL is back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::harness::load::summary;
use crate::harness::{
    Fleet, FleetOptions, Load, LoadOptions, PgCluster, RedisTarget, TestDb, client, serial,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_down_for_6_seconds() {
    let _one = serial().await;
    let pg = tokio::task::spawn_blocking(PgCluster::start).await.unwrap();
    let db = TestDb::create_on(&pg.url()).await;
    let redis = testkit::RedisServer::start();
    let opts = FleetOptions {
        llm_latency_ms: 300,
        ..FleetOptions::new(RedisTarget::Standalone(redis.url()), &db.url)
    }
    // A request waits at most 1.5 s for a connection before it is refused.
    .env("FLEETGATE_DATABASE_ACQUIRE_TIMEOUT_MS", 1500);
    let mut fleet = Fleet::start("pg-down", opts).await;
    let users: Vec<String> = (0..30).map(|n| format!("pg-user-{n}")).collect();
    let load = Load::start(
        &client(),
        LoadOptions {
            bases: fleet.bases(),
            users: users.clone(),
            ip_offset: 0,
            failover: false,
        },
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let down = Instant::now();
    let pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let pg = tokio::task::spawn_blocking(move || {
        pg.start_again();
        pg
    })
    .await
    .unwrap();
    let up = Instant::now();
    // Back by itself: run until every replica has answered chats started after the restart.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let outcomes = load.stop().await;
    eprintln!("postgres outage: {:?}", summary(&outcomes));

    fleet.assert_all_running();
    let during: Vec<_> = outcomes
        .iter()
        .filter(|o| o.started >= down + Duration::from_millis(500) && o.finished <= up)
        .collect();
    assert!(
        during.iter().any(|o| o.status == 503),
        "no refusal during the outage: {:?}",
        summary(&outcomes)
    );
    for o in outcomes.iter().filter(|o| !o.ok()) {
        assert!(
            o.status == 503 && o.code == "service_unavailable" && o.retry_after,
            "a failure other than 503 service_unavailable with Retry-After: {o:?}; {:?}",
            summary(&outcomes)
        );
    }
    for r in 0..fleet.replicas.len() {
        let served_after = outcomes
            .iter()
            .any(|o| o.replica == r && o.ok() && o.started >= up + Duration::from_secs(2));
        assert!(
            served_after,
            "replica {r} did not serve again after PostgreSQL returned"
        );
    }
    // No quota spent without an answer, none given back for an answer.
    let mut answered: HashMap<&str, i64> = HashMap::new();
    for o in outcomes.iter().filter(|o| o.ok()) {
        *answered.entry(o.user.as_str()).or_default() += 1;
    }
    // Refunds that failed while PostgreSQL was down are retried in the background (backoff up
    // to 5 s): give them time to land.
    let mut conn = db.connect().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mismatched = loop {
        let rows: Vec<(String, i32)> =
            sqlx::query_as("SELECT user_id, queries_used FROM user_profiles")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        let used: HashMap<String, i64> = rows.into_iter().map(|(u, n)| (u, i64::from(n))).collect();
        let mismatched = users
            .iter()
            .map(|u| {
                let spent = used.get(u).copied().unwrap_or(0);
                (
                    u.clone(),
                    spent,
                    answered.get(u.as_str()).copied().unwrap_or(0),
                )
            })
            .filter(|(_, spent, got)| spent != got)
            .collect::<Vec<_>>();
        if mismatched.is_empty() || Instant::now() > deadline {
            break mismatched;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        mismatched.is_empty(),
        "(user, queries counted, answers): {mismatched:?}"
    );
    drop(conn);
    drop(fleet);
    drop(db);
    drop(pg);
}
