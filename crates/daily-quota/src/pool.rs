//! Pool settings for a store's connections.

use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::PgPoolOptions;

/// A connection idle longer than this is pinged before it is handed out.
pub const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// sqlx's pool options, but a connection is pinged before use only when it sat idle for
/// [`PING_WHEN_IDLE_FOR`] or more, not before every use (sqlx's default): the ping is a round
/// trip on every spend, a fifth of a lone spend's time. A connection in steady use is checked
/// anyway, by the ping sqlx sends when it returns to the pool, off the caller's path; one idle
/// through a database restart is caught by the ping here.
///
/// ```no_run
/// # async fn f() -> Result<(), sqlx::Error> {
/// let pool = daily_quota::pool_options()
///     .max_connections(8)
///     .connect("postgres://postgres@127.0.0.1/postgres")
///     .await?;
/// # let _ = pool;
/// # Ok(())
/// # }
/// ```
pub fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_WHEN_IDLE_FOR {
                    // An error discards this connection; the pool tries another or connects.
                    <sqlx::PgConnection as Connection>::ping(conn).await?;
                }
                Ok(true)
            })
        })
}
