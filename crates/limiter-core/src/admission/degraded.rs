//! Admission while Redis is unreachable or just back: a slot from this replica's local share of
//! the caps (see `local.rs`); once Redis answers again, registered against the shared caps before
//! it is handed out.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

use super::class::Class;
use super::config::OutagePolicy;
use super::inner::Inner;
use super::mode::Mode;
use super::permit::{Held, LocalPermit, Permit};
use super::rejection::Rejection;
use super::revocation::Revocation;

impl Inner {
    /// Admission from the local share; `None` when shared admission resumed meanwhile (the caller
    /// queues in Redis then).
    pub(crate) async fn admit_local(
        self: &Arc<Self>,
        user: &[u8],
        class: Class,
        deadline: Instant,
        positions: Option<watch::Sender<u32>>,
    ) -> Result<Option<Permit>, Rejection> {
        let started = Instant::now();
        let id = self.new_id();
        let user_key = self.scripts.user_key(user);
        // Safety policy, Redis unreachable: admit (or wait) only while this replica's slots are
        // still counted in Redis; past that the other replicas may have handed them on.
        let counted_until = (self.mode() == Mode::Degraded
            && self.cfg.outage_policy == OutagePolicy::Safety)
            .then(|| self.outage.counted_until(self.cfg.lease_ttl))
            .flatten();
        if counted_until.is_some_and(|t| started >= t) {
            return Err(Rejection::OutageTooLong);
        }
        let local_deadline = counted_until.map_or(deadline, |t| deadline.min(t));
        let admitted = self
            .local
            .admit(
                self.local_caps(),
                &id,
                user,
                &user_key,
                class,
                local_deadline,
            )
            .await;
        let slot = match admitted {
            Ok(Some(slot)) => slot,
            Ok(None) => return Ok(None),
            Err(Rejection::Timeout { .. }) if local_deadline < deadline => {
                // Redis back meanwhile: the caller tries again on the new mode.
                if self.mode() != Mode::Degraded {
                    return Ok(None);
                }
                return Err(Rejection::OutageTooLong);
            }
            Err(e) => return Err(e),
        };
        let permit = Permit {
            held: Held::Local(LocalPermit {
                local: Arc::clone(&self.local),
                slot: Arc::clone(&slot),
            }),
            class,
            queued: started.elapsed(),
            position_at_entry: 0,
            entered_at_ms: 0,
            granted_at_ms: 0,
            revocation: Revocation::local(
                self.cfg.outage_policy,
                Arc::downgrade(self),
                self.cfg.lease_ttl,
            ),
        };
        // Granted while degraded: the recovery registers it (unchecked: the local share bounds it).
        if !slot.granted_degraded {
            if self.mode() == Mode::Shared {
                // Shared admission resumed while this slot was being granted: give it back
                // (dropping the permit) and queue in Redis.
                return Ok(None);
            }
            // Redis is back: another replica may already admit by Redis's counts, so this slot
            // runs only if the shared caps have room for it too.
            let mode_changed = self.mode.changed();
            tokio::pin!(mode_changed);
            mode_changed.as_mut().enable();
            // Spawned: a registration that succeeds after this future is dropped is still seen
            // (and released) rather than left counted in Redis until its TTL.
            let adopting = {
                let (inner, slot) = (Arc::clone(self), Arc::clone(&slot));
                tokio::spawn(async move { inner.adopt_checked(&slot).await })
            };
            // A join error: the runtime is going away.
            let Ok(adopted) = adopting.await else {
                return Err(Rejection::ShuttingDown);
            };
            match adopted {
                Ok(true) => {}
                Ok(false) => {
                    // Full fleet-wide: wait for shared admission (a heartbeat TTL at most) and
                    // queue in Redis then.
                    drop(permit);
                    if self.mode() == Mode::Recovering {
                        tokio::select! {
                            () = mode_changed => {}
                            () = tokio::time::sleep_until(deadline) => {
                                return Err(Rejection::Timeout { waited: started.elapsed() });
                            }
                        }
                    }
                    return Ok(None);
                }
                Err(e) if e.is_unavailable() => {
                    // Gone again: the slot runs on the local share; the next recovery
                    // registers it.
                    self.local.unclaim(std::slice::from_ref(&slot));
                    self.enter_degraded();
                }
                Err(e) => return Err(Rejection::Unavailable(e)),
            }
        }
        if let Some(p) = &positions {
            p.send_replace(0);
        }
        Ok(Some(permit))
    }
}
