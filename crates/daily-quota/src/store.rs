//! [`QuotaStore`]: spend and refund units of a daily quota, over a connection pool.

use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use sqlx::PgPool;
use tracing::Instrument;

use crate::batch::{self, Batcher, Want};
use crate::error::QuotaError;
use crate::table::{Statements, Table};

/// How long a failed refund is retried in the background (see [`QuotaStore::refund_eventually`]).
pub const REFUND_RETRY_FOR: Duration = Duration::from_secs(15 * 60);

/// A spent unit, needed to refund it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// Which quota (empty for a table that holds one).
    pub scope: String,
    /// Whose.
    pub subject: String,
    /// The UTC day the unit was counted on.
    pub day: NaiveDate,
    /// Units left today after this one.
    pub remaining: u32,
    /// The key's daily limit.
    pub limit: u32,
}

/// The outcome of a spend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spend {
    /// Counted.
    Spent(Ticket),
    /// Nothing left today.
    Exhausted {
        /// The key's daily limit.
        limit: u32,
        /// Until the next UTC midnight.
        retry_after: Duration,
    },
}

/// A key's count today.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Units spent today.
    pub used: u32,
    /// The key's daily limit.
    pub limit: u32,
}

impl Usage {
    /// Units left today.
    pub fn remaining(&self) -> u32 {
        self.limit.saturating_sub(self.used)
    }
}

/// Told what the store decided, for metrics. Every method does nothing by default.
pub trait QuotaObserver: Send + Sync + std::fmt::Debug + 'static {
    /// A spend was answered: `spent`, `exhausted` or `unavailable`.
    fn spend(&self, _outcome: &'static str) {}
    /// A unit was given back.
    fn refunded(&self) {}
}

#[derive(Debug)]
struct Silent;
impl QuotaObserver for Silent {}

/// Options of a [`QuotaStore`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Tier name → daily limit, for a table with a tier column.
    pub tiers: Vec<(String, u32)>,
    /// Commit each batch without waiting for its WAL flush (see the crate's documentation for
    /// what a database crash can then lose).
    pub async_commit: bool,
    /// How long the group-commit queue keeps its connection without a spend
    /// ([`crate::KEEP_CONNECTION`] by default).
    pub keep_connection: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            tiers: Vec::new(),
            async_commit: false,
            keep_connection: crate::KEEP_CONNECTION,
        }
    }
}

/// What the batcher task needs; shared without the batcher, so the task ends with the store.
#[derive(Debug)]
pub(crate) struct Core {
    pub pool: PgPool,
    pub sql: Statements,
    pub tier_names: Vec<String>,
    pub tier_limits: Vec<i32>,
    pub async_commit: bool,
    pub keep_connection: Duration,
}

/// A daily quota per key in one table, over a pool. Cheap to clone; clones share one
/// group-commit queue.
#[derive(Debug, Clone)]
pub struct QuotaStore {
    core: Arc<Core>,
    batcher: Arc<Batcher>,
    observer: Arc<dyn QuotaObserver>,
    owned: bool,
}

fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl QuotaStore {
    /// A store of `table` over `pool`.
    pub fn new(pool: PgPool, table: &Table, options: StoreOptions) -> QuotaStore {
        let (tier_names, tier_limits) = options.tiers.into_iter().map(|(n, l)| (n, int(l))).unzip();
        QuotaStore {
            core: Arc::new(Core {
                pool,
                sql: table.statements(),
                tier_names,
                tier_limits,
                async_commit: options.async_commit,
                keep_connection: options.keep_connection,
            }),
            batcher: Arc::default(),
            observer: Arc::new(Silent),
            owned: table.is_owned(),
        }
    }

    /// Reports decisions to `observer`.
    pub fn observer(mut self, observer: Arc<dyn QuotaObserver>) -> QuotaStore {
        self.observer = observer;
        self
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.core.pool
    }

    /// Creates a table of the store's own ([`Table::own`]) if it is missing. Processes starting
    /// at once take turns on an advisory lock: concurrent `CREATE TABLE IF NOT EXISTS` can
    /// still collide. Does nothing for an existing table (its owner's migrations create it).
    pub async fn create_table(&self) -> Result<(), QuotaError> {
        if !self.owned {
            return Ok(());
        }
        let mut tx = self.core.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(&self.core.sql.lock_name)
            .execute(&mut *tx)
            .await?;
        sqlx::query(self.core.sql.create_table.clone())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes the rows of a table of the store's own that no refund can reach any more (days
    /// before yesterday); returns how many. Does nothing for an existing table.
    pub async fn purge_stale(&self) -> Result<u64, QuotaError> {
        if !self.owned {
            return Ok(0);
        }
        let r = sqlx::query(self.core.sql.purge.clone())
            .execute(&self.core.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// Spends one unit of today for `subject` in quota `scope`, atomically, group-committed
    /// with the spends in flight at the same time. `limit` applies unless the row has an
    /// override or a tier of its own.
    pub async fn spend(&self, scope: &str, subject: &str, limit: u32) -> Result<Spend, QuotaError> {
        let want = Want {
            scope: scope.into(),
            subject: subject.to_string(),
            limit: int(limit),
        };
        let r = self
            .batcher
            .spend(&self.core, want, || self.orphan_refunds())
            .await;
        self.observer.spend(match &r {
            Ok(Spend::Spent(_)) => "spent",
            Ok(Spend::Exhausted { .. }) => "exhausted",
            Err(_) => "unavailable",
        });
        r
    }

    /// Spends one unit for each `(scope, subject)` of `keys` (a key may appear several times)
    /// as one batch, outcomes in the same order: what [`QuotaStore::spend`] does with the spends
    /// that queue up together. For tests and tools.
    pub async fn spend_batch(
        &self,
        keys: &[(&str, &str)],
        limit: u32,
    ) -> Vec<Result<Spend, QuotaError>> {
        let wants = keys
            .iter()
            .map(|(s, u)| Want {
                scope: (*s).into(),
                subject: (*u).to_string(),
                limit: int(limit),
            })
            .collect();
        batch::spend_batch(&self.core, wants).await
    }

    /// Gives a spent unit back, on the day it was spent on (never below zero). Returns whether
    /// anything was refunded.
    pub async fn refund(&self, ticket: &Ticket) -> Result<bool, QuotaError> {
        let r = sqlx::query(self.core.sql.refund.clone())
            .bind(&ticket.scope)
            .bind(&ticket.subject)
            .bind(ticket.day)
            .execute(&self.core.pool)
            .await?;
        let done = r.rows_affected() == 1;
        if done {
            self.observer.refunded();
        }
        Ok(done)
    }

    /// What the batcher gives back a spend with when its caller went away: this store without
    /// the batcher (whose task holds it, and must end with the last clone of the store).
    fn orphan_refunds(&self) -> batch::Refunder {
        let store = QuotaStore {
            batcher: Arc::default(),
            ..self.clone()
        };
        Arc::new(move |ticket| {
            let store = store.clone();
            tokio::spawn(async move { store.refund_eventually(ticket).await });
        })
    }

    /// [`QuotaStore::refund`], and if the database cannot be reached now (the request failed
    /// because it went away, say), again in the background with backoff until it can, for up to
    /// [`REFUND_RETRY_FOR`]: a refund that fails once would otherwise lose the key a unit. (A
    /// refund whose reply was lost after it committed may so be applied twice, in the key's
    /// favour.)
    pub async fn refund_eventually(&self, ticket: Ticket) {
        if let Err(e) = self.refund(&ticket).await {
            // The caller's span names the subject if it wants to; the key itself is not logged.
            tracing::warn!(error = %e, "quota refund failed; retrying in the background");
            let store = self.clone();
            tokio::spawn(async move { store.retry_refund(ticket).await }.in_current_span());
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
                    tracing::error!(error = %e, "quota refund abandoned: a unit stays counted");
                    return;
                }
                Err(_) => wait = (wait * 2).min(Duration::from_secs(5)),
            }
        }
    }

    /// The count of `subject` in `scope` today, and its limit (`limit` unless its row has an
    /// override or a tier).
    pub async fn usage(&self, scope: &str, subject: &str, limit: u32) -> Result<Usage, QuotaError> {
        let row: Option<(i32, i32)> = sqlx::query_as(self.core.sql.usage.clone())
            .bind(scope)
            .bind(subject)
            .bind(int(limit))
            .bind(&self.core.tier_names)
            .bind(&self.core.tier_limits)
            .fetch_optional(&self.core.pool)
            .await?;
        let (used, lim) = row.unwrap_or((0, int(limit)));
        Ok(Usage {
            used: u32::try_from(used).unwrap_or(0),
            limit: u32::try_from(lim).unwrap_or(0),
        })
    }
}
