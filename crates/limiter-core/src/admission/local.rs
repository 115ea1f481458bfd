//! The local admission queue of one replica: how it admits while Redis is unreachable.
//!
//! Each replica enforces its share of the fleet's caps locally: `max(1, cap / live replicas)`
//! (its shared permits granted before the outage and still running count against it),
//! with the replica count last read from the registry in Redis (or the configured expected fleet
//! size if Redis was never reached); of the global cap, at most the limit fixed as the outage
//! began (`outage.rs`: room for the others' shared slots still running), so the fleet as a whole
//! stays within the global cap. The local queue has the same rules as the shared one (see
//! `local_queue.rs`).
//!
//! When Redis answers again, everything this replica runs outside Redis's counts is registered
//! there (`admission_adopt`): the slots granted locally during the outage and the shared permits
//! granted before it (a Redis that restarted empty has forgotten them). From then on, until shared
//! admission resumes, a slot granted locally is registered in Redis, against the shared caps,
//! before it is handed out: a replica that resumed shared admission earlier may have filled them.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::class::Class;
use super::local_queue::{Admitted, Delivery, LocalCaps, LocalSlot, Place, State, Unregistered};
use super::rejection::Rejection;

/// The local admission state of one replica: [`State`] behind a lock.
#[derive(Default)]
pub(crate) struct Local {
    state: Mutex<State>,
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local").finish_non_exhaustive()
    }
}

impl Local {
    fn state(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding it; if one did, the bookkeeping is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits locally, waiting in the local queue until `deadline`. `Ok(None)`: shared admission
    /// is back ([`Local::requeue_all`]); the caller queues there instead.
    pub(crate) async fn admit(
        self: &Arc<Self>,
        caps: LocalCaps,
        id: &str,
        user: &[u8],
        user_key: &str,
        class: Class,
        deadline: Instant,
    ) -> Result<Option<Arc<LocalSlot>>, Rejection> {
        let admitted = self.state().admit(caps, user, user_key, id, class)?;
        let (place, rx) = match admitted {
            Admitted::Now(slot) => return Ok(Some(slot)),
            Admitted::Queued(place, rx) => (place, rx),
        };
        let mut guard = LocalWaitGuard {
            local: Arc::clone(self),
            user: user.to_vec(),
            place,
            rx: Some(rx),
        };
        let started = Instant::now();
        let Some(rx) = guard.rx.as_mut() else {
            return Err(Rejection::ShuttingDown);
        };
        tokio::select! {
            slot = rx => {
                guard.rx = None;
                slot.map_err(|_| Rejection::ShuttingDown)
            }
            () = tokio::time::sleep_until(deadline) => Err(Rejection::Timeout { waited: started.elapsed() }),
        }
    }

    /// Redis became unreachable: slots granted from now on are registered by the next recovery.
    pub(crate) fn enter_degraded(&self) {
        self.state().set_degraded(true);
    }

    /// Cut off under the safety policy: from now on a local grant only reuses a slot Redis still
    /// counts for this replica. Returns how many it counts.
    pub(crate) fn begin_counted(&self) -> u32 {
        self.state().begin_counted()
    }

    /// Redis answers again: from now on each local grant is registered by its holder, against the
    /// shared caps. Returns what the recovery must register (claimed: no other recovery takes it).
    pub(crate) fn begin_recovery(&self) -> Unregistered {
        let mut st = self.state();
        st.set_degraded(false);
        st.unregistered()
    }

    /// Local slots still waiting for registration (claimed).
    pub(crate) fn claim_pending(&self) -> Vec<Arc<LocalSlot>> {
        self.state().claim_pending()
    }

    /// A registration failed: the slots wait for the next recovery.
    pub(crate) fn unclaim(&self, slots: &[Arc<LocalSlot>]) {
        for s in slots {
            s.unclaim();
        }
    }

    /// Whether the slot is still held (not released while its registration was in flight).
    pub(crate) fn holds(&self, id: &str) -> bool {
        self.state().holds(id)
    }

    /// Whether the shared permit is still running.
    pub(crate) fn holds_shared(&self, id: &str) -> bool {
        self.state().holds_shared(id)
    }

    /// A shared permit was granted to this replica.
    pub(crate) fn shared_taken(&self, id: &str, user_key: &str) {
        self.state().shared_taken(id, user_key);
    }

    /// A shared permit of this replica ended: its room in the local share goes to a waiter.
    /// Returns whether its lease must stay counted in Redis (abandoned, not released): ended
    /// slots are being reused.
    pub(crate) fn shared_returned(&self, id: &str) -> bool {
        self.state().shared_returned(id)
    }

    /// Returns a slot and hands it to the next eligible local waiter.
    /// Returns whether ended slots are being reused (see [`Local::shared_returned`]).
    pub(crate) fn release(&self, slot: &LocalSlot) -> bool {
        self.state().release(slot)
    }

    /// Sends every waiter back to the shared queue (Redis is back and the shared caps apply):
    /// granting them local slots now would run beyond the shared cap, unseen by Redis.
    pub(crate) fn requeue_all(&self) {
        self.state().requeue_all();
    }

    /// Everything this replica runs right now: local slots and shared permits.
    pub(crate) fn running(&self) -> u32 {
        self.state().running()
    }

    /// Slots held right now.
    pub(crate) fn held_count(&self) -> usize {
        self.state().held_count()
    }

    /// Waiters right now.
    pub(crate) fn queued(&self) -> usize {
        self.state().queued()
    }
}

/// Removes a local waiter whose `admit` ended without a slot (timeout, dropped future); a slot
/// that reached it meanwhile goes back.
struct LocalWaitGuard {
    local: Arc<Local>,
    user: Vec<u8>,
    place: Place,
    rx: Option<oneshot::Receiver<Delivery>>,
}

impl Drop for LocalWaitGuard {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            self.local.state().cancel(&self.user, self.place, &mut rx);
        }
    }
}
