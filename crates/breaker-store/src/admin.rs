//! Admin actions on the breakers ([`Breakers::force_close`], [`Breakers::force_open`],
//! [`Breakers::reset_errors`]), applied fleet-wide through Redis and to this replica's local copy.

use std::time::{Duration, Instant};

use crate::entry::lock;
use crate::shared::AdminAction;
use crate::state::MAX_HOLD;
use crate::{BreakerError, Breakers};

impl Breakers {
    /// Forces a breaker CLOSED fleet-wide (clearing its window, probes and trip count).
    pub async fn force_close(&self, service: &str) -> Result<(), BreakerError> {
        self.admin(service, AdminAction::Close).await
    }

    /// Forces a breaker OPEN fleet-wide for `hold` (at most 30 days; longer is clamped).
    pub async fn force_open(&self, service: &str, hold: Duration) -> Result<(), BreakerError> {
        if hold.is_zero() {
            return Err(BreakerError::InvalidConfig("hold must be positive".into()));
        }
        let hold = hold.min(MAX_HOLD);
        self.admin(service, AdminAction::Open(hold)).await
    }

    /// Clears a breaker's error metrics (window counts and trip count) without changing its
    /// state.
    pub async fn reset_errors(&self, service: &str) -> Result<(), BreakerError> {
        self.admin(service, AdminAction::Reset).await
    }

    /// `force_close` on every known service (the api's `force-close-circuits`).
    pub async fn force_close_all(&self) -> Result<(), BreakerError> {
        for s in self.services() {
            self.force_close(&s).await?;
        }
        Ok(())
    }

    /// `reset_errors` on every known service (the api's `reset-errors`).
    pub async fn reset_errors_all(&self) -> Result<(), BreakerError> {
        for s in self.services() {
            self.reset_errors(&s).await?;
        }
        Ok(())
    }

    /// Applies an admin action to the local copy (so this replica obeys even when degraded),
    /// then to the shared breaker. Admin calls always try Redis: they are rare, and an operator
    /// must learn that the fleet did not get the order.
    async fn admin(&self, service: &str, action: AdminAction) -> Result<(), BreakerError> {
        let entry = self.entry(service);
        {
            let mut local = lock(&entry.local);
            let now = Instant::now();
            match action {
                AdminAction::Close => local.force(now, None),
                AdminAction::Open(hold) => local.force(now, Some(hold)),
                AdminAction::Reset => local.reset_errors(),
            }
        }
        let cfg = &self.inner.config;
        match entry
            .shared
            .admin(&self.inner.redis, action, cfg.state_ttl)
            .await
        {
            Ok(obs) => {
                self.apply(&entry, &obs, Instant::now(), false);
                Ok(())
            }
            Err(e) => {
                self.redis_failed(&e, "breaker_admin");
                Err(e.into())
            }
        }
    }
}
