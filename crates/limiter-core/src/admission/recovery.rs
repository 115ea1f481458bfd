//! Recovery from a Redis outage: what this replica ran outside Redis's counts is registered there,
//! and shared admission resumes once the whole fleet has done the same.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::inner::Inner;
use super::local_queue::{LocalSlot, Unregistered};
use super::mode::Mode;
use crate::LimiterError;

impl Inner {
    /// Registers one local slot in Redis if the shared caps have room for it (after a dispatch,
    /// so it never overtakes an eligible shared waiter). `Ok(false)`: no room.
    pub(crate) async fn adopt_checked(&self, slot: &Arc<LocalSlot>) -> Result<bool, LimiterError> {
        let sent = Instant::now();
        let Some(expiry) = self.scripts.adopt_checked(&slot.id, &slot.user_key).await? else {
            return Ok(false);
        };
        // Registered by `admission_adopt`: no fencing token.
        let lease = self
            .scripts
            .lease(slot.id.clone(), &slot.user_key, expiry, 0, sent);
        if let Ok(mut a) = slot.adopted.lock() {
            *a = Some(lease);
        }
        // Set before this check: a holder that let go meanwhile took no lease, so release it.
        if !self.local.holds(&slot.id) {
            drop(slot.adopted.lock().ok().and_then(|mut a| a.take()));
        }
        Ok(true)
    }

    /// Registers in Redis, unchecked, what runs outside its counts: local slots granted while it
    /// was unreachable and shared permits it may have lost (a restart without persistence). They
    /// are running already, within the local share. `false` (logged) if Redis failed: the slots
    /// go back to pending.
    async fn adopt_all(&self, todo: Unregistered) -> bool {
        if todo.slots.is_empty() && todo.shared.is_empty() {
            return true;
        }
        let pairs: Vec<(&str, &str)> = todo
            .slots
            .iter()
            .map(|s| (s.id.as_str(), s.user_key.as_str()))
            .chain(todo.shared.iter().map(|(i, k)| (i.as_str(), k.as_str())))
            .collect();
        let sent = Instant::now();
        let expiry = match self.scripts.adopt_all(&pairs).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "registering local permits failed");
                self.local.unclaim(&todo.slots);
                return false;
            }
        };
        for s in todo.slots {
            let lease = self
                .scripts
                .lease(s.id.clone(), &s.user_key, expiry, 0, sent);
            if self.local.holds(&s.id) {
                if let Ok(mut a) = s.adopted.lock() {
                    *a = Some(lease);
                }
            } else {
                // Finished while being registered: release it in Redis right away.
                drop(lease);
            }
        }
        // A shared permit keeps its own lease (same id: its renewals find it again); one that
        // ended meanwhile was released before this registration, so release it again.
        for (id, user_key) in todo.shared {
            if !self.local.holds_shared(&id)
                && let Err(e) = self.scripts.release(&id, &user_key).await
            {
                tracing::warn!(lease = %id, error = %e, "releasing a finished permit failed");
            }
        }
        true
    }

    /// Degraded, before a heartbeat: if Redis answers, registers what this replica runs outside
    /// its counts and starts recovering. Before the heartbeat, so that a replica back in the
    /// registry has registered its permits (other replicas wait for that, see `after_heartbeat`).
    pub(crate) async fn try_recover(&self) {
        if self.scripts.redis().ping().await.is_err() {
            return;
        }
        // Waiters that left while Redis was unreachable may still be queued there (a failover
        // keeps the queue): out first, or they would be granted slots nobody uses.
        self.waiters.settle().await;
        // From here a local grant registers itself against the shared caps; what was granted
        // before is handed over here.
        if self.adopt_all(self.local.begin_recovery()).await {
            // Permits that ended while Redis was unreachable, or whose release went to a master
            // that a failover left behind: still counted there until they expire. Released only
            // now: a local grant may have stood in their room, and is registered by now.
            for (id, user_key) in self.released.within_ttl() {
                if let Err(e) = self.scripts.release(&id, &user_key).await {
                    tracing::debug!(lease = %id, error = %e, "releasing an ended permit again failed");
                }
            }
            if let Ok(mut since) = self.recovering_since.lock() {
                *since = Some(Instant::now());
            }
            self.set_mode(Mode::Recovering);
        } else {
            self.enter_degraded();
        }
    }

    /// Leaves recovery for shared admission, or enters degraded mode, after a heartbeat.
    ///
    /// Shared admission trusts Redis's counts, so it waits until every replica has registered
    /// what it granted during the outage: at least one heartbeat TTL (a replica that cannot
    /// reach Redis for that long is dead to the registry too) and until the registry holds as many
    /// replicas as before the outage (they register their permits before rejoining it), or three
    /// heartbeat TTLs if it never does (a replica died meanwhile, or the fleet shrank).
    pub(crate) async fn after_heartbeat(&self, ok: bool) {
        if !ok {
            if self.mode() != Mode::Degraded {
                self.enter_degraded();
            }
            return;
        }
        if self.mode() != Mode::Recovering {
            return;
        }
        let elapsed = self
            .recovering_since
            .lock()
            .ok()
            .and_then(|since| *since)
            .map_or(Duration::MAX, |since| since.elapsed());
        let everyone = self.registered_now.load(Ordering::Relaxed)
            >= self.live_replicas.load(Ordering::Relaxed);
        let ttl = self.cfg.heartbeat_ttl;
        if elapsed < ttl || (!everyone && elapsed < ttl * 3) {
            return;
        }
        // Nothing should be pending here; registered anyway rather than left uncounted.
        let leftover = Unregistered {
            slots: self.local.claim_pending(),
            shared: Vec::new(),
        };
        if self.adopt_all(leftover).await {
            self.outage.end();
            self.set_mode(Mode::Shared);
            self.local.requeue_all();
        }
    }
}
