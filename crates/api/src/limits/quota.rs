//! Layer 3: the daily query quota in PostgreSQL.
//!
//! A spend adds one to today's usage (or starts a new UTC day at one) only while usage is below
//! the user's limit. Spends are group-committed ([`super::quota_batch`]): those that arrive while
//! a statement is in flight go out together as one statement that locks each user's row, reads
//! its current usage and grants the user's spends in arrival order up to the limit, so no
//! interleaving, within a batch or across batches and replicas, can over-spend. The limit is
//! computed in the same statement: the per-user override, else the user's tier from the
//! configured tier table (passed as arrays, so configuration needs no table sync), else the free
//! tier. The UTC day comes from the database clock, the one clock all replicas share.
//!
//! A refund subtracts one from the day the spend was made on, never below zero, so a refund that
//! arrives after midnight cannot eat into the new day.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tracing::Instrument;

use super::quota_batch::{Batcher, SpendSql};
use crate::config::Config;

/// The database could not serve the call.
#[derive(Debug, thiserror::Error)]
#[error("database unavailable")]
pub struct QuotaError(#[from] pub sqlx::Error);

/// How long a failed refund is retried in the background (see [`QuotaStore::refund_eventually`]).
pub const REFUND_RETRY_FOR: Duration = Duration::from_secs(15 * 60);

/// A spent query, needed to refund it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The user.
    pub user_id: String,
    /// The UTC day the query was counted on.
    pub day: NaiveDate,
    /// Queries left today after this one.
    pub remaining: u32,
    /// The user's daily limit.
    pub limit: u32,
}

/// The outcome of a spend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spend {
    /// Counted.
    Spent(Ticket),
    /// Nothing left today.
    Exhausted {
        /// The user's daily limit.
        limit: u32,
        /// Until the next UTC midnight.
        retry_after: Duration,
    },
}

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
    pool: PgPool,
    /// The free tier's daily limit: configured, or changed at runtime (shared with `spend_sql`).
    free: Arc<AtomicI32>,
    tier_names: Vec<String>,
    tier_limits: Vec<i32>,
    /// What the batcher's statements need (the pool and limits above, and the commit mode).
    spend_sql: SpendSql,
    /// The group-commit queue, one per store and its clones (so one per replica).
    batcher: Arc<Batcher>,
}

// SQL fragments as macros so that every statement is one static string (sqlx's `SqlSafeStr`):
// the user's limit, and today's UTC date from the database clock.
macro_rules! limit_expr {
    () => {
        "COALESCE(p.daily_limit_override, \
         (SELECT t.lim FROM unnest($2::text[], $3::int4[]) AS t(name, lim) WHERE t.name = p.tier), $4)"
    };
}
macro_rules! today {
    () => {
        "((now() AT TIME ZONE 'UTC')::date)"
    };
}

const LIMIT: &str = concat!(
    "SELECT ",
    limit_expr!(),
    " FROM user_profiles AS p WHERE p.user_id = $1"
);

const REMAINING: &str = concat!(
    "SELECT ",
    limit_expr!(),
    " - CASE WHEN p.usage_day = ",
    today!(),
    " THEN p.queries_used ELSE 0 END FROM user_profiles AS p WHERE p.user_id = $1"
);

impl QuotaStore {
    /// A store over a lazily connected pool (the replica starts while PostgreSQL is down).
    pub fn connect_lazy(cfg: &Config) -> Result<QuotaStore, QuotaError> {
        let pool = PgPoolOptions::new()
            .max_connections(cfg.database.max_connections)
            .acquire_timeout(Duration::from_millis(cfg.database.acquire_timeout_ms))
            .connect_lazy(cfg.database.url.expose())?;
        Ok(Self::with_pool(pool, cfg))
    }

    /// A store over an existing pool.
    pub fn with_pool(pool: PgPool, cfg: &Config) -> QuotaStore {
        let free = Arc::new(AtomicI32::new(
            i32::try_from(cfg.quota.free_daily_queries).unwrap_or(i32::MAX),
        ));
        let (tier_names, tier_limits): (Vec<String>, Vec<i32>) = cfg
            .quota
            .tiers
            .iter()
            .map(|(n, l)| (n.clone(), i32::try_from(*l).unwrap_or(i32::MAX)))
            .unzip();
        let spend_sql = SpendSql {
            pool: pool.clone(),
            free: Arc::clone(&free),
            tier_names: Vec::clone(&tier_names),
            tier_limits: Vec::clone(&tier_limits),
            async_commit: cfg.quota.async_commit,
        };
        QuotaStore {
            pool,
            free,
            tier_names,
            tier_limits,
            spend_sql,
            batcher: Arc::default(),
        }
    }

    fn free(&self) -> i32 {
        self.free.load(Ordering::Relaxed)
    }

    /// The free tier's daily limit in force on this replica.
    pub fn free_limit(&self) -> u32 {
        u32::try_from(self.free()).unwrap_or(0)
    }

    /// Changes the free tier's daily limit on this replica (runtime limits; tiers and per-user
    /// overrides are unchanged). The day's count is kept: the next spend is checked against it.
    pub fn set_free_limit(&self, limit: u32) {
        self.free
            .store(i32::try_from(limit).unwrap_or(i32::MAX), Ordering::Relaxed);
    }

    /// The pool (health, maintenance, tests).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the embedded migrations.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        sqlx::migrate!("../../migrations").run(&self.pool).await
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
        let r = self.spend_inner(user_id).await;
        let outcome = match &r {
            Ok(Spend::Spent(_)) => "spent",
            Ok(Spend::Exhausted { .. }) => {
                crate::metrics::get().quota_rejected();
                "exhausted"
            }
            Err(_) => "unavailable",
        };
        crate::metrics::get().decision("quota", "daily", outcome);
        tracing::Span::current().record("fleetgate.quota.outcome", outcome);
        r
    }

    async fn spend_inner(&self, user_id: &str) -> Result<Spend, QuotaError> {
        self.batcher.spend(&self.spend_sql, user_id).await
    }

    /// Spends one query for each entry of `users` (a user may appear several times) as one
    /// batch, outcomes in the same order: what [`QuotaStore::spend`] does with the spends that
    /// queue up together. For tests and tools; the service spends through [`QuotaStore::spend`].
    pub async fn spend_batch(&self, users: &[&str]) -> Vec<Result<Spend, QuotaError>> {
        super::quota_batch::spend_batch(&self.spend_sql, users).await
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
        let r = sqlx::query(
            "UPDATE user_profiles SET queries_used = queries_used - 1, updated_at = now() \
             WHERE user_id = $1 AND usage_day = $2 AND queries_used > 0",
        )
        .bind(&ticket.user_id)
        .bind(ticket.day)
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 1 {
            crate::metrics::get().quota_refunded();
        }
        Ok(r.rows_affected() == 1)
    }

    /// [`QuotaStore::refund`], and if the database cannot be reached now (the request failed
    /// because it went away, say), again in the background with backoff until it can, for up to
    /// [`REFUND_RETRY_FOR`]: a refund that fails once would otherwise lose the user a query.
    /// (A refund whose reply was lost after it committed may so be applied twice, in the user's
    /// favour.)
    pub async fn refund_eventually(&self, ticket: Ticket) {
        match self.refund(&ticket).await {
            Ok(_) => {}
            Err(e) => {
                // The request's span names the user by pseudonym; the id itself is never logged.
                tracing::warn!(error = %e, "quota refund failed; retrying in the background");
                let store = self.clone();
                tokio::spawn(async move { store.retry_refund(ticket).await }.in_current_span());
            }
        }
    }

    async fn retry_refund(&self, ticket: Ticket) {
        let give_up = tokio::time::Instant::now() + REFUND_RETRY_FOR;
        let mut wait = Duration::from_millis(250);
        loop {
            tokio::time::sleep(wait).await;
            match self.refund(&ticket).await {
                Ok(_) => {
                    tracing::info!("quota refunded after a retry");
                    return;
                }
                Err(e) if tokio::time::Instant::now() >= give_up => {
                    tracing::error!(error = %e, "quota refund abandoned: a query stays counted");
                    return;
                }
                Err(_) => wait = (wait * 2).min(Duration::from_secs(5)),
            }
        }
    }

    /// The user's daily limit.
    pub async fn limit(&self, user_id: &str) -> Result<u32, QuotaError> {
        let lim: Option<i32> = sqlx::query_scalar(LIMIT)
            .bind(user_id)
            .bind(&self.tier_names)
            .bind(&self.tier_limits)
            .bind(self.free())
            .fetch_optional(&self.pool)
            .await?;
        Ok(u32::try_from(lim.unwrap_or(self.free())).unwrap_or(0))
    }

    /// Queries left today.
    pub async fn remaining(&self, user_id: &str) -> Result<u32, QuotaError> {
        let left: Option<i32> = sqlx::query_scalar(REMAINING)
            .bind(user_id)
            .bind(&self.tier_names)
            .bind(&self.tier_limits)
            .bind(self.free())
            .fetch_optional(&self.pool)
            .await?;
        Ok(u32::try_from(left.unwrap_or(self.free()).max(0)).unwrap_or(0))
    }

    /// Sets a user's tier (creating the profile).
    pub async fn set_tier(&self, user_id: &str, tier: &str) -> Result<(), QuotaError> {
        sqlx::query(
            "INSERT INTO user_profiles (user_id, tier) VALUES ($1, $2) \
             ON CONFLICT (user_id) DO UPDATE SET tier = EXCLUDED.tier, updated_at = now()",
        )
        .bind(user_id)
        .bind(tier)
        .execute(&self.pool)
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Round trip of `SELECT 1`.
    pub async fn ping(&self) -> Result<Duration, QuotaError> {
        let start = std::time::Instant::now();
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(start.elapsed())
    }

    /// `check_system_load()`.
    pub async fn check_system_load(&self) -> Result<Vec<LoadMetric>, QuotaError> {
        Ok(
            sqlx::query_as(
                "SELECT metric, value::float8 AS value, status FROM check_system_load()",
            )
            .fetch_all(&self.pool)
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
        .fetch_all(&self.pool)
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
        .fetch_all(&self.pool)
        .await?)
    }
}

/// Time until the next 00:00 UTC (at least one second).
pub fn until_next_utc_midnight() -> Duration {
    let now = Utc::now();
    let next = now
        .date_naive()
        .succ_opt()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc());
    match next {
        Some(n) => (n - now)
            .to_std()
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_secs(1)),
        None => Duration::from_secs(86_400),
    }
}
