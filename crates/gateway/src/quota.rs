//! Daily quotas per route and user, in PostgreSQL through the `daily-quota` crate (exact,
//! group-committed spends; the UTC day by the database clock, the one clock every replica
//! shares). Spent through limiter-tower's [`QuotaLayer`]: checked before the request queues,
//! kept once a byte of the app's answer went out, given back when the app answers 5xx or fails
//! before any byte.
//!
//! The counts live in a table of the store's own, `gateway_daily_usage` (one row per route and
//! user: the day it counts and the units used), created at start.
//!
//! When the database cannot answer, the quota refuses (503 `service_unavailable`): a quota that
//! lets everything through while its store is down is no limit on cost.

use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use bytes::Bytes;
use daily_quota::{DailyQuota, StoreOptions, Table};
use http::Response;
use limiter_tower::{HeaderKey, LimitRejection, ProblemJson, QuotaLayer, RejectionRenderer};

pub use daily_quota::until_next_utc_midnight;

/// Where the quotas are kept.
#[derive(Clone)]
pub struct Database {
    /// `postgres://` URL (may carry a password: never printed).
    pub url: String,
    /// Connections of this replica.
    pub max_connections: u32,
    /// Longest wait for a connection before the quota refuses with 503.
    pub acquire_timeout: Duration,
    /// Commit each batch of spends without waiting for its WAL flush (a database crash can then
    /// give back the spends of its last 3 × `wal_writer_delay`).
    pub async_commit: bool,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("url", &"<hidden>")
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("async_commit", &self.async_commit)
            .finish()
    }
}

/// The table of the counts.
const TABLE: &str = "gateway_daily_usage";

/// How often rows no refund can reach any more are deleted.
const CLEANUP_EVERY: Duration = Duration::from_secs(3600);

/// The quota table of one replica (a connection pool and its group-commit queue).
#[derive(Debug, Clone)]
pub struct QuotaStore {
    store: daily_quota::QuotaStore,
}

impl QuotaStore {
    /// Connects and creates the table if it is missing.
    pub async fn open(db: &Database) -> Result<QuotaStore, daily_quota::QuotaError> {
        let pool = daily_quota::pool_options()
            .max_connections(db.max_connections.max(1))
            .acquire_timeout(db.acquire_timeout)
            .connect(&db.url)
            .await?;
        let table = Table::own(TABLE).unwrap_or_else(|e| unreachable!("constant name: {e}"));
        let options = StoreOptions {
            async_commit: db.async_commit,
            ..StoreOptions::default()
        };
        let store = daily_quota::QuotaStore::new(pool, &table, options);
        store.create_table().await?;
        let purging = store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CLEANUP_EVERY);
            loop {
                tick.tick().await;
                if let Err(e) = purging.purge_stale().await {
                    tracing::warn!(error = %e, "quota cleanup failed");
                }
            }
        });
        Ok(QuotaStore { store })
    }

    /// Units `user` has spent today on `route` (tests, operators).
    pub async fn used_today(
        &self,
        route: &str,
        user: &str,
    ) -> Result<u32, daily_quota::QuotaError> {
        Ok(self.store.usage(route, user, 0).await?.used)
    }
}

/// One route's daily quota: `limit` a UTC day per user, under the route's stable name.
#[derive(Debug)]
pub struct RouteQuota {
    quota: DailyQuota,
}

impl RouteQuota {
    /// The quota of the route named `route` (its method and path: reordering the policy's
    /// routes keeps the counts).
    pub fn new(store: QuotaStore, route: &str, limit: u32) -> Self {
        RouteQuota {
            quota: DailyQuota::new(store.store, route, limit),
        }
    }

    /// The limit in force, shared: storing into it changes the limit of this quota's layer.
    pub fn limit_cell(&self) -> Arc<AtomicU32> {
        self.quota.limit_cell()
    }

    /// The layer spending it, keyed by the verified identity header.
    pub fn layer(self, user_header: http::HeaderName) -> QuotaLayer<DailyQuota, HeaderKey> {
        QuotaLayer::new(self.quota, HeaderKey::new(user_header)).renderer(QuotaRenderer)
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
