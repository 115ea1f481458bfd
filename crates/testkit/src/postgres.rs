//! A fresh PostgreSQL database per test, on the machine's server or on one the test owns.

use std::time::Duration;

use sqlx::{Connection, Executor};

/// The server's maintenance database (`FLEETGATE_TEST_DATABASE_URL`), where test databases are
/// created and dropped.
pub fn admin_url() -> String {
    std::env::var("FLEETGATE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Replaces the database name of a URL.
fn with_database(url: &str, name: &str) -> String {
    let base = url.rsplit_once('/').map_or(url, |(b, _)| b);
    format!("{base}/{name}")
}

/// A database created for one test and dropped (best effort, with its connections) when this
/// value drops.
#[derive(Debug)]
pub struct TestDb {
    /// Its name.
    pub name: String,
    /// Its URL.
    pub url: String,
    /// A URL of an existing database on the same server, to drop it from.
    admin: String,
}

impl TestDb {
    /// Creates one on the machine's server.
    pub async fn create() -> TestDb {
        Self::create_on(&admin_url()).await
    }

    /// Creates one on the server of `admin` (a URL of an existing database there), first waiting
    /// until the next three minutes are clear of UTC midnight: tests using it count daily
    /// quotas, and none lasts three minutes.
    pub async fn create_on(admin: &str) -> TestDb {
        tokio::time::sleep(crate::wait_clear_of_utc_midnight(Duration::from_secs(180))).await;
        let name = format!(
            "fg_test_{}_{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let mut conn = sqlx::PgConnection::connect(admin)
            .await
            .unwrap_or_else(|e| {
                panic!("connect to the test PostgreSQL (scripts/test starts it): {e}")
            });
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
        TestDb {
            url: with_database(admin, &name),
            name,
            admin: admin.to_string(),
        }
    }

    /// A connection to it.
    pub async fn connect(&self) -> sqlx::PgConnection {
        sqlx::PgConnection::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.name))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (name, admin) = (self.name.clone(), self.admin.clone());
        // Its own thread and runtime: Drop cannot await, and the test's runtime may be gone.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                    let _ = c
                        .execute(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .await;
                }
            });
        })
        .join();
    }
}
