//! What one spend costs at one caller, against the statements under it: a bare autocommit
//! `UPDATE` of one row (the floor a durable write cannot go under), the spend statement run
//! directly, and the store's spend (batcher task, pool, statement), each with sqlx's default
//! pool (a ping before every use) and with [`daily_quota::pool_options`] (a ping only after a
//! second idle); the spend with synchronous and with asynchronous commit.
//!
//!   cargo bench -p daily-quota --bench spend                 # 3 s per case
//!   BENCH_SECS=10 cargo bench -p daily-quota --bench spend
//!
//! Needs PostgreSQL at `FLEETGATE_TEST_DATABASE_URL` (default postgres://postgres@127.0.0.1:5432/postgres).

use std::time::{Duration, Instant};

use daily_quota::{QuotaStore, StoreOptions, Table};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

fn secs() -> Duration {
    let s = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    Duration::from_secs(s)
}

async fn pool(url: &str, checked: bool) -> PgPool {
    let opts: PgConnectOptions = url.parse().expect("database URL");
    let opts = opts.disable_statement_logging();
    let options = if checked {
        PgPoolOptions::new()
    } else {
        daily_quota::pool_options()
    };
    options
        .max_connections(4)
        .connect_with(opts)
        .await
        .expect("connect")
}

/// Runs `op` one call after another for the bench's time; p50 and p99 in µs, and calls/s.
async fn measure<F, Fut>(name: &str, mut op: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..200 {
        op().await;
    }
    let mut lat = Vec::with_capacity(100_000);
    let t0 = Instant::now();
    while t0.elapsed() < secs() {
        let t = Instant::now();
        op().await;
        lat.push(t.elapsed());
    }
    let n = lat.len();
    lat.sort_unstable();
    let us = |q: f64| lat[((n as f64 * q) as usize).min(n - 1)].as_secs_f64() * 1e6;
    println!(
        "| {name} | {:.0} | {:.0} | {:.0} |",
        us(0.5),
        us(0.99),
        n as f64 / t0.elapsed().as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let url = std::env::var("FLEETGATE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let setup = pool(&url, true).await;
    for sql in [
        "DROP TABLE IF EXISTS bench_spend_usage",
        "CREATE TABLE IF NOT EXISTS bench_spend_bare (id int PRIMARY KEY, n bigint NOT NULL)",
        "INSERT INTO bench_spend_bare VALUES (1, 0) ON CONFLICT DO NOTHING",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&setup)
            .await
            .expect(sql);
    }
    let table = Table::own("bench_spend_usage").expect("name");
    QuotaStore::new(setup.clone(), &table, StoreOptions::default())
        .create_table()
        .await
        .expect("create table");

    println!("| one caller, one row | p50 µs | p99 µs | per s |");
    println!("|---|---|---|---|");
    for checked in [true, false] {
        let note = if checked {
            "sqlx default pool (ping before each use)"
        } else {
            "`pool_options()` (ping after 1 s idle)"
        };
        let p = pool(&url, checked).await;
        measure(&format!("bare `UPDATE`, {note}"), || {
            let p = p.clone();
            async move {
                sqlx::query("UPDATE bench_spend_bare SET n = n + 1 WHERE id = 1")
                    .execute(&p)
                    .await
                    .expect("update");
            }
        })
        .await;
        for async_commit in [false, true] {
            let p = pool(&url, checked).await;
            let options = StoreOptions {
                async_commit,
                ..StoreOptions::default()
            };
            let store = QuotaStore::new(p, &table, options);
            let mode = if async_commit {
                "asynchronous commit"
            } else {
                "synchronous commit"
            };
            measure(&format!("store spend, {mode}, {note}"), || {
                let store = store.clone();
                async move {
                    store
                        .spend("bench", "u1", u32::MAX / 2)
                        .await
                        .expect("spend");
                }
            })
            .await;
        }
    }
    sqlx::query("DROP TABLE IF EXISTS bench_spend_usage")
        .execute(&setup)
        .await
        .ok();
}
