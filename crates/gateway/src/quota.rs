//! Daily quotas per route and user, in PostgreSQL (the one store every replica shares, with the
//! one clock they share: the UTC day is the database's). Spent through limiter-tower's
//! [`QuotaLayer`]: checked before the request queues, kept once a byte of the app's answer went
//! out, given back when the app answers 5xx or fails before any byte.
//!
//! A spend is one statement: insert today's row at 1, or add one while below the route's limit.
//! Concurrent spends of one user queue on the row lock and each re-checks the limit against the
//! committed count, so no interleaving over-spends. A refund subtracts one from the day the spend
//! was made on (never below zero), so one arriving after midnight cannot eat into the new day.
//!
//! When the database cannot answer, the quota refuses (503 `service_unavailable`): a quota that
//! lets everything through while its store is down is no limit on cost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Response;
use limiter_tower::{
    HeaderKey, LimitRejection, ProblemJson, QuotaDenied, QuotaHook, QuotaLayer, RejectionRenderer,
};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// Where the quotas are kept.
#[derive(Clone)]
pub struct Database {
    /// `postgres://` URL (may carry a password: never printed).
    pub url: String,
    /// Connections of this replica.
    pub max_connections: u32,
    /// Longest wait for a connection before the quota refuses with 503.
    pub acquire_timeout: Duration,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("url", &"<hidden>")
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

// Today's UTC date by the database clock, as a macro so each statement stays one static string
// (what sqlx accepts as safe SQL).
macro_rules! today {
    () => {
        "((now() AT TIME ZONE 'UTC')::date)"
    };
}

/// How often rows of days before yesterday are deleted (a late refund looks one day back at
/// most).
const CLEANUP_EVERY: Duration = Duration::from_secs(3600);

/// The quota table of one replica (a connection pool).
#[derive(Debug, Clone)]
pub struct QuotaStore {
    pool: PgPool,
}

impl QuotaStore {
    /// Connects and creates the table if it is missing (several replicas starting at once take
    /// turns on an advisory lock: concurrent `CREATE TABLE IF NOT EXISTS` can still collide).
    pub async fn open(db: &Database) -> Result<QuotaStore, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(db.max_connections.max(1))
            .acquire_timeout(db.acquire_timeout)
            .connect(&db.url)
            .await?;
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('gateway_daily_quota'))")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS gateway_daily_quota (\
             route text NOT NULL, user_id text NOT NULL, day date NOT NULL, \
             used integer NOT NULL, PRIMARY KEY (route, user_id, day))",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let store = QuotaStore { pool };
        store.spawn_cleanup();
        Ok(store)
    }

    fn spawn_cleanup(&self) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CLEANUP_EVERY);
            loop {
                tick.tick().await;
                let sql = concat!(
                    "DELETE FROM gateway_daily_quota WHERE day < ",
                    today!(),
                    " - 1"
                );
                if let Err(e) = sqlx::query(sql).execute(&pool).await {
                    tracing::warn!(error = %e, "quota cleanup failed");
                }
            }
        });
    }

    /// Spends one unit of today for `user` on `route` if fewer than `limit` are spent: the day
    /// spent on, or `None` when nothing is left.
    async fn spend(
        &self,
        route: &str,
        user: &str,
        limit: u32,
    ) -> Result<Option<String>, sqlx::Error> {
        let sql = concat!(
            "INSERT INTO gateway_daily_quota AS q (route, user_id, day, used) VALUES ($1, $2, ",
            today!(),
            ", 1) ON CONFLICT (route, user_id, day) \
             DO UPDATE SET used = q.used + 1 WHERE q.used < $3 RETURNING day::text"
        );
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        sqlx::query_scalar::<_, String>(sql)
            .bind(route)
            .bind(user)
            .bind(limit)
            .fetch_optional(&self.pool)
            .await
    }

    async fn refund(&self, t: &Ticket) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE gateway_daily_quota SET used = used - 1 \
             WHERE route = $1 AND user_id = $2 AND day = $3::date AND used > 0",
        )
        .bind(&t.route)
        .bind(&t.user)
        .bind(&t.day)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Units `user` has spent today on `route` (tests, operators).
    pub async fn used_today(&self, route: &str, user: &str) -> Result<u32, sqlx::Error> {
        let sql = concat!(
            "SELECT used FROM gateway_daily_quota WHERE route = $1 AND user_id = $2 AND day = ",
            today!()
        );
        let used: Option<i32> = sqlx::query_scalar(sql)
            .bind(route)
            .bind(user)
            .fetch_optional(&self.pool)
            .await?;
        Ok(u32::try_from(used.unwrap_or(0)).unwrap_or(0))
    }
}

/// A spent unit.
#[derive(Debug)]
pub struct Ticket {
    route: Arc<str>,
    user: String,
    /// The day as the database wrote it (`YYYY-MM-DD`), handed back unchanged on a refund.
    day: String,
}

/// One route's daily quota: `limit` a UTC day per user, under the route's stable name.
#[derive(Debug)]
pub struct RouteQuota {
    store: QuotaStore,
    route: Arc<str>,
    /// Read at each spend, so a runtime change applies to the next request; what was spent
    /// today stays spent (a lowered limit refuses until the day's count is below it).
    limit: Arc<AtomicU32>,
}

impl RouteQuota {
    /// The quota of the route named `route` (its method and path: reordering the policy's
    /// routes keeps the counts).
    pub fn new(store: QuotaStore, route: &str, limit: u32) -> Self {
        RouteQuota {
            store,
            route: route.into(),
            limit: Arc::new(AtomicU32::new(limit)),
        }
    }

    /// The limit in force, shared: storing into it changes the limit of this quota's layer.
    pub fn limit_cell(&self) -> Arc<AtomicU32> {
        Arc::clone(&self.limit)
    }

    /// The layer spending it, keyed by the verified identity header.
    pub fn layer(self, user_header: http::HeaderName) -> QuotaLayer<RouteQuota, HeaderKey> {
        QuotaLayer::new(self, HeaderKey::new(user_header)).renderer(QuotaRenderer)
    }
}

/// Time until the next 00:00 UTC, at least one second (Unix time has no leap seconds, so a UTC
/// day is always 86 400 of them).
pub fn until_next_utc_midnight() -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let into_day = now.as_millis() % 86_400_000;
    let left = 86_400_000 - u64::try_from(into_day).unwrap_or(0);
    Duration::from_millis(left).max(Duration::from_secs(1))
}

impl QuotaHook for RouteQuota {
    type Ticket = Ticket;

    async fn check(&self, key: &str) -> Result<Ticket, QuotaDenied> {
        let limit = self.limit.load(Ordering::Relaxed);
        match self.store.spend(&self.route, key, limit).await {
            Ok(Some(day)) => Ok(Ticket {
                route: Arc::clone(&self.route),
                user: key.to_string(),
                day,
            }),
            Ok(None) => Err(QuotaDenied {
                retry_after: Some(until_next_utc_midnight()),
            }),
            Err(e) => {
                tracing::warn!(error = %e, route = %self.route, "quota database unavailable");
                // No renewal time: the renderer answers 503, not "exhausted".
                Err(QuotaDenied { retry_after: None })
            }
        }
    }

    async fn commit(&self, _ticket: Ticket) {}

    async fn refund(&self, ticket: Ticket) {
        if let Err(e) = self.store.refund(&ticket).await {
            tracing::warn!(error = %e, route = %self.route, "quota refund failed");
        }
    }
}

/// A refusal without a renewal time comes from a database that could not answer: 503 with a
/// short `Retry-After`, never a false "exhausted".
#[derive(Debug)]
struct QuotaRenderer;

impl RejectionRenderer for QuotaRenderer {
    fn render(&self, r: &LimitRejection) -> Response<Bytes> {
        let r = match r {
            LimitRejection::QuotaExhausted { retry_after: None } => LimitRejection::Unavailable {
                retry_after: Duration::from_secs(5),
            },
            other => other.clone(),
        };
        ProblemJson::default().render(&r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn midnight_is_within_a_day() {
        let d = until_next_utc_midnight();
        assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(86_400));
    }

    #[test]
    fn a_store_failure_is_a_503_and_exhaustion_a_429() {
        let down = QuotaRenderer.render(&LimitRejection::QuotaExhausted { retry_after: None });
        assert_eq!(down.status(), 503);
        assert_eq!(down.headers()["retry-after"], "5");
        let out = QuotaRenderer.render(&LimitRejection::QuotaExhausted {
            retry_after: Some(Duration::from_secs(60)),
        });
        assert_eq!(out.status(), 429);
        assert_eq!(out.headers()["retry-after"], "60");
    }
}
