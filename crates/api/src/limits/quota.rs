//! Layer 3: the daily query quota, kept in the `user_profiles` rows through the `daily-quota`
//! crate (exact, group-committed spends; the UTC day by the database clock; refunds on the day
//! spent on). A user's limit is the profile's own override, else its tier's from the configured
//! tier table (passed with each statement, so configuration needs no table sync), else the free
//! tier. This module maps the configuration onto that store, reports its decisions as metrics,
//! and keeps the profile and maintenance calls of the same pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use daily_quota::{QuotaObserver, StoreOptions, Table};
use limiter_tower::RecentRefusals;
use sqlx::PgPool;

use crate::config::Config;

pub use daily_quota::{QuotaError, REFUND_RETRY_FOR, Spend, Ticket, until_next_utc_midnight};

/// One row of `check_system_load()`.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct LoadMetric {
    /// Metric name.
    pub metric: String,
    /// Its value.
    pub value: f64,
    /// `ok`, `warning` or `critical`.
    pub status: String,
}

/// The quota store of one replica (a connection pool).
#[derive(Debug, Clone)]
pub struct QuotaStore {
    store: daily_quota::QuotaStore,
    /// The free tier's daily limit: configured, or changed at runtime (shared by the clones).
    free: Arc<AtomicU32>,
    /// Users this replica saw refused: they spend before queueing (see `refused_lately`).
    refused: Arc<RecentRefusals>,
}

/// The service's metrics for the store's decisions.
#[derive(Debug)]
struct Metrics;

impl QuotaObserver for Metrics {
    fn spend(&self, outcome: &'static str) {
        if outcome == "exhausted" {
            crate::metrics::get().quota_rejected();
        }
        crate::metrics::get().decision("quota", "daily", outcome);
        tracing::Span::current().record("fleetgate.quota.outcome", outcome);
    }

    fn refunded(&self) {
        crate::metrics::get().quota_refunded();
    }
}

/// The profile table as the quota's table: one quota per user (scope `""`).
fn profiles() -> Table {
    Table::existing("user_profiles", "user_id", "usage_day", "queries_used")
        .and_then(|t| t.tier_column("tier"))
        .and_then(|t| t.override_column("daily_limit_override"))
        .and_then(|t| t.touched_column("updated_at"))
        .unwrap_or_else(|e| unreachable!("constant identifiers: {e}"))
}

impl QuotaStore {
    /// A store over a lazily connected pool (the replica starts while PostgreSQL is down).
    pub fn connect_lazy(cfg: &Config) -> Result<QuotaStore, QuotaError> {
        let pool = daily_quota::pool_options()
            .max_connections(cfg.database.max_connections)
            .acquire_timeout(Duration::from_millis(cfg.database.acquire_timeout_ms))
            .connect_lazy(cfg.database.url.expose())?;
        Ok(Self::with_pool(pool, cfg))
    }

    /// A store over an existing pool.
    pub fn with_pool(pool: PgPool, cfg: &Config) -> QuotaStore {
        let options = StoreOptions {
            tiers: cfg
                .quota
                .tiers
                .iter()
                .map(|(n, l)| (n.clone(), *l))
                .collect(),
            async_commit: cfg.quota.async_commit,
            ..StoreOptions::default()
        };
        QuotaStore {
            store: daily_quota::QuotaStore::new(pool, &profiles(), options)
                .observer(Arc::new(Metrics)),
            free: Arc::new(AtomicU32::new(cfg.quota.free_daily_queries)),
            refused: Arc::default(),
        }
    }

    /// The pool (health, maintenance, tests).
    pub fn pool(&self) -> &PgPool {
        self.store.pool()
    }

    /// The quota store itself.
    pub fn store(&self) -> &daily_quota::QuotaStore {
        &self.store
    }

    /// The free tier's daily queries (a user without tier or override).
    pub fn free_daily_queries(&self) -> u32 {
        self.free.load(Ordering::Relaxed)
    }

    /// The free tier's daily limit in force on this replica.
    pub fn free_limit(&self) -> u32 {
        self.free_daily_queries()
    }

    /// Changes the free tier's daily limit on this replica (runtime limits; tiers and per-user
    /// overrides are unchanged). The day's count is kept: the next spend is checked against it.
    pub fn set_free_limit(&self, limit: u32) {
        self.free.store(limit, Ordering::Relaxed);
    }

    /// Applies the embedded migrations.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        sqlx::migrate!("../../migrations").run(self.pool()).await
    }

    /// Spends one query of today for `user_id`, atomically.
    #[tracing::instrument(
        name = "quota.spend",
        skip_all,
        fields(
            otel.name = "UPDATE user_profiles",
            otel.kind = "client",
            db.system.name = "postgresql",
            db.operation.name = "UPDATE",
            db.collection.name = "user_profiles",
            db.query.summary = "spend daily quota",
            fleetgate.quota.outcome = tracing::field::Empty,
        )
    )]
    pub async fn spend(&self, user_id: &str) -> Result<Spend, QuotaError> {
        let spend = self
            .store
            .spend("", user_id, self.free_daily_queries())
            .await;
        if let Ok(Spend::Exhausted { retry_after, .. }) = &spend {
            self.refused.remember(user_id, Some(*retry_after));
        }
        spend
    }

    /// Whether this replica saw `user_id` refused today (until the quota renews): such a user
    /// spends before queueing, so that a user known to have nothing left takes no queue place.
    pub fn refused_lately(&self, user_id: &str) -> bool {
        self.refused.contains(user_id)
    }

    /// Spends one query for each entry of `users` (a user may appear several times) as one
    /// batch, outcomes in the same order: what [`QuotaStore::spend`] does with the spends that
    /// queue up together. For tests and tools; the service spends through [`QuotaStore::spend`].
    pub async fn spend_batch(&self, users: &[&str]) -> Vec<Result<Spend, QuotaError>> {
        let keys: Vec<(&str, &str)> = users.iter().map(|u| ("", *u)).collect();
        self.store
            .spend_batch(&keys, self.free_daily_queries())
            .await
    }

    /// Gives back a spent query (the request failed for an upstream or server reason). Returns
    /// whether anything was refunded.
    #[tracing::instrument(
        name = "quota.refund",
        skip_all,
        fields(
            otel.name = "UPDATE user_profiles",
            otel.kind = "client",
            db.system.name = "postgresql",
            db.operation.name = "UPDATE",
            db.collection.name = "user_profiles",
            db.query.summary = "refund daily quota",
        )
    )]
    pub async fn refund(&self, ticket: &Ticket) -> Result<bool, QuotaError> {
        self.store.refund(ticket).await
    }

    /// [`QuotaStore::refund`], retried in the background while the database cannot be reached
    /// (see [`daily_quota::QuotaStore::refund_eventually`]).
    pub async fn refund_eventually(&self, ticket: Ticket) {
        self.store.refund_eventually(ticket).await;
    }

    /// The user's daily limit.
    pub async fn limit(&self, user_id: &str) -> Result<u32, QuotaError> {
        Ok(self
            .store
            .usage("", user_id, self.free_daily_queries())
            .await?
            .limit)
    }

    /// Queries left today.
    pub async fn remaining(&self, user_id: &str) -> Result<u32, QuotaError> {
        Ok(self
            .store
            .usage("", user_id, self.free_daily_queries())
            .await?
            .remaining())
    }

    /// Sets a user's tier (creating the profile).
    pub async fn set_tier(&self, user_id: &str, tier: &str) -> Result<(), QuotaError> {
        sqlx::query(
            "INSERT INTO user_profiles (user_id, tier) VALUES ($1, $2) \
             ON CONFLICT (user_id) DO UPDATE SET tier = EXCLUDED.tier, updated_at = now()",
        )
        .bind(user_id)
        .bind(tier)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Sets or clears a user's own daily limit (creating the profile).
    pub async fn set_override(&self, user_id: &str, limit: Option<u32>) -> Result<(), QuotaError> {
        let limit = limit.map(|l| i32::try_from(l).unwrap_or(i32::MAX));
        sqlx::query(
            "INSERT INTO user_profiles (user_id, daily_limit_override) VALUES ($1, $2) \
             ON CONFLICT (user_id) DO UPDATE SET daily_limit_override = EXCLUDED.daily_limit_override, \
             updated_at = now()",
        )
        .bind(user_id)
        .bind(limit)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Round trip of `SELECT 1`.
    pub async fn ping(&self) -> Result<Duration, QuotaError> {
        let start = std::time::Instant::now();
        sqlx::query("SELECT 1").execute(self.pool()).await?;
        Ok(start.elapsed())
    }

    /// `check_system_load()`.
    pub async fn check_system_load(&self) -> Result<Vec<LoadMetric>, QuotaError> {
        Ok(
            sqlx::query_as(
                "SELECT metric, value::float8 AS value, status FROM check_system_load()",
            )
            .fetch_all(self.pool())
            .await?,
        )
    }

    /// `cleanup_old_sessions(max_age)`: (what, rows affected).
    pub async fn cleanup_old_sessions(
        &self,
        max_age: Duration,
    ) -> Result<Vec<(String, i64)>, QuotaError> {
        Ok(sqlx::query_as(
            "SELECT what, rows_affected FROM cleanup_old_sessions(make_interval(secs => $1))",
        )
        .bind(max_age.as_secs_f64())
        .fetch_all(self.pool())
        .await?)
    }

    /// `emergency_cleanup_connections(idle_for)`: (pid, idle seconds, terminated).
    pub async fn emergency_cleanup_connections(
        &self,
        idle_for: Duration,
    ) -> Result<Vec<(i32, f64, bool)>, QuotaError> {
        Ok(sqlx::query_as(
            "SELECT pid, idle_seconds::float8, terminated \
             FROM emergency_cleanup_connections(make_interval(secs => $1))",
        )
        .bind(idle_for.as_secs_f64())
        .fetch_all(self.pool())
        .await?)
    }
}
