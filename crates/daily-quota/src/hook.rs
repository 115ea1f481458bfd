//! [`DailyQuota`]: one quota of a [`QuotaStore`] as limiter-tower's [`QuotaHook`], so a
//! [`limiter_tower::QuotaLayer`] spends it before the request runs and refunds it when the
//! request fails by no fault of the client.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use limiter_tower::{QuotaDenied, QuotaHook};

use crate::store::{QuotaStore, Spend, Ticket};

/// The quota `scope` of a store, `limit` a UTC day per key (unless a row's tier or override
/// says otherwise). When the database cannot answer, the check refuses with no renewal time
/// (`retry_after: None`): a quota that lets everything through while its store is down is no
/// limit on cost; render that refusal as "unavailable", not "exhausted".
///
/// ```no_run
/// use daily_quota::{DailyQuota, QuotaStore, StoreOptions, Table};
/// use limiter_tower::{HeaderKey, QuotaLayer};
///
/// # async fn f(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// let store = QuotaStore::new(pool, &Table::own("daily_usage")?, StoreOptions::default());
/// store.create_table().await?;
/// let quota = DailyQuota::new(store, "POST /api/answer", 3);
/// let layer = QuotaLayer::new(quota, HeaderKey::new(http::HeaderName::from_static("x-user-id")));
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct DailyQuota {
    store: QuotaStore,
    scope: Arc<str>,
    /// Read at each spend, so a change applies to the next request; what was spent today stays
    /// spent (a lowered limit refuses until the day's count is below it).
    limit: Arc<AtomicU32>,
}

impl DailyQuota {
    /// The quota `scope` of `store`, `limit` units a day per key.
    pub fn new(store: QuotaStore, scope: &str, limit: u32) -> DailyQuota {
        DailyQuota {
            store,
            scope: scope.into(),
            limit: Arc::new(AtomicU32::new(limit)),
        }
    }

    /// The limit in force, shared: storing into it changes the limit of this quota.
    pub fn limit_cell(&self) -> Arc<AtomicU32> {
        Arc::clone(&self.limit)
    }

    /// The store.
    pub fn store(&self) -> &QuotaStore {
        &self.store
    }

    /// Spends one unit for `key`: the outcome as the store gave it.
    pub async fn spend(&self, key: &str) -> Result<Spend, crate::QuotaError> {
        let limit = self.limit.load(Ordering::Relaxed);
        self.store.spend(&self.scope, key, limit).await
    }
}

impl QuotaHook for DailyQuota {
    type Ticket = Ticket;

    async fn check(&self, key: &str) -> Result<Ticket, QuotaDenied> {
        match self.spend(key).await {
            Ok(Spend::Spent(t)) => Ok(t),
            Ok(Spend::Exhausted { retry_after, .. }) => Err(QuotaDenied {
                retry_after: Some(retry_after),
            }),
            Err(e) => {
                tracing::warn!(error = %e, scope = %self.scope, "quota database unavailable");
                Err(QuotaDenied { retry_after: None })
            }
        }
    }

    async fn commit(&self, _ticket: Ticket) {}

    // The spend is final once `check` answered: nothing to run when a request succeeds.
    fn commits(&self) -> bool {
        false
    }

    // The store's batcher gives back a spend whose caller went away while it ran, and skips
    // one whose caller went away before.
    fn refunds_dropped_checks(&self) -> bool {
        true
    }

    async fn refund(&self, ticket: Ticket) {
        self.store.refund_eventually(ticket).await;
    }
}
