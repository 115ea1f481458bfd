//! Degraded admission: how a replica admits while Redis is unreachable.
//!
//! Each replica enforces its share of the fleet's caps locally: `max(1, cap / live replicas)`
//! (its shared permits granted before the outage and still running count against it),
//! with the replica count last read from the registry in Redis (or the configured expected fleet
//! size if Redis was never reached), so the fleet as a whole stays within the global cap. The local
//! queue has the same rules as the shared one: strict priority between classes, FIFO within one,
//! no head-of-line blocking by a user at its cap.
//!
//! When Redis answers again, everything this replica runs outside Redis's counts is registered
//! there (`admission_adopt`): the slots granted locally during the outage and the shared permits
//! granted before it (a Redis that restarted empty has forgotten them). From then on, until shared
//! admission resumes, a slot granted locally is registered in Redis, against the shared caps,
//! before it is handed out: a replica that resumed shared admission earlier may have filled them.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::Lease;
use crate::queue::{Class, Rejection};

/// This replica's share of the caps during an outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LocalCaps {
    pub(crate) global: u32,
    pub(crate) user: u32,
    pub(crate) queue: u32,
}

impl LocalCaps {
    /// `max(1, cap / replicas)` for each cap.
    pub(crate) fn share(global: u32, user: u32, queue: u32, replicas: u32) -> Self {
        let n = replicas.max(1);
        LocalCaps {
            global: (global / n).max(1),
            user: (user / n).max(1),
            queue: (queue / n).max(1),
        }
    }
}

/// A slot granted locally. `adopted` holds the Redis lease once the slot is registered in Redis
/// (it renews and releases there like any other).
#[derive(Debug)]
pub(crate) struct LocalSlot {
    pub(crate) id: String,
    pub(crate) user_key: String,
    user: Vec<u8>,
    /// Granted while Redis was unreachable: the next recovery registers it, unchecked (it is
    /// already running, within the local share). Otherwise its holder registers it against the
    /// shared caps before using it.
    pub(crate) granted_degraded: bool,
    /// Not registered in Redis and no recovery is registering it right now.
    pending: AtomicBool,
    pub(crate) adopted: Mutex<Option<Lease>>,
}

/// What a recovery must register in Redis: local slots granted during the outage, and shared
/// permits (lease id, user lease key) still running.
#[derive(Debug, Default)]
pub(crate) struct Unregistered {
    pub(crate) slots: Vec<Arc<LocalSlot>>,
    pub(crate) shared: Vec<(String, String)>,
}

struct Entry {
    user: Vec<u8>,
    user_key: String,
    id: String,
    /// `Some(slot)`: granted; `None`: shared admission is back, queue there instead.
    tx: oneshot::Sender<Option<Arc<LocalSlot>>>,
}

#[derive(Default)]
struct State {
    caps: Option<LocalCaps>,
    /// Redis is unreachable: grants are not registered until it returns.
    degraded: bool,
    in_use: u32,
    users: HashMap<Vec<u8>, u32>,
    /// Waiters by (class, arrival).
    queue: BTreeMap<(usize, u64), Entry>,
    seq: u64,
    held: HashMap<String, Arc<LocalSlot>>,
    /// Shared (Redis) permits of this replica still running, lease id -> user lease key: they
    /// count against the local share (or an outage would let the local queue start `global` more
    /// next to them), and a recovery registers them again.
    shared: HashMap<String, String>,
}

/// The local admission state of one replica.
#[derive(Default)]
pub(crate) struct Local {
    state: Mutex<State>,
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local").finish_non_exhaustive()
    }
}

impl State {
    fn running(&self) -> u32 {
        self.in_use
            .saturating_add(u32::try_from(self.shared.len()).unwrap_or(u32::MAX))
    }

    fn has_room(&self, caps: LocalCaps, user: &[u8]) -> bool {
        self.running() < caps.global && self.users.get(user).copied().unwrap_or(0) < caps.user
    }

    fn take(&mut self, user: &[u8], user_key: &str, id: &str) -> Arc<LocalSlot> {
        self.in_use += 1;
        *self.users.entry(user.to_vec()).or_default() += 1;
        let slot = Arc::new(LocalSlot {
            id: id.to_string(),
            user_key: user_key.to_string(),
            user: user.to_vec(),
            granted_degraded: self.degraded,
            pending: AtomicBool::new(self.degraded),
            adopted: Mutex::new(None),
        });
        self.held.insert(id.to_string(), Arc::clone(&slot));
        slot
    }

    fn give_back(&mut self, slot: &LocalSlot) {
        if self.held.remove(&slot.id).is_none() {
            return;
        }
        self.in_use = self.in_use.saturating_sub(1);
        if let Some(n) = self.users.get_mut(&slot.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.users.remove(&slot.user);
            }
        }
    }

    /// Grants queued waiters in order, skipping those whose user is at its cap.
    fn dispatch(&mut self) {
        let Some(caps) = self.caps else { return };
        let mut granted = Vec::new();
        let mut pending: HashMap<&[u8], u32> = HashMap::new();
        for (key, e) in &self.queue {
            if self.running() + granted.len() as u32 >= caps.global {
                break;
            }
            let user = e.user.as_slice();
            let held = self.users.get(user).copied().unwrap_or(0);
            let extra = pending.entry(user).or_default();
            if held + *extra < caps.user {
                *extra += 1;
                granted.push(*key);
            }
        }
        for key in granted {
            if let Some(e) = self.queue.remove(&key) {
                let slot = self.take(&e.user, &e.user_key, &e.id);
                if let Err(Some(slot)) = e.tx.send(Some(slot)) {
                    // The waiter is gone: the slot goes back (and on, at the next dispatch).
                    self.give_back(&slot);
                }
            }
        }
    }

    /// Claims the held slots waiting for registration (a recovery registers them).
    fn claim_pending(&self) -> Vec<Arc<LocalSlot>> {
        self.held
            .values()
            .filter(|s| s.pending.swap(false, Ordering::AcqRel))
            .cloned()
            .collect()
    }
}

impl Local {
    /// Admits locally, waiting in the local queue until `deadline`. `Ok(None)`: shared admission
    /// is back ([`Local::requeue_all`]); the caller queues there instead.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn admit(
        self: &Arc<Self>,
        caps: LocalCaps,
        id: &str,
        user: &[u8],
        user_key: &str,
        class: Class,
        deadline: Instant,
    ) -> Result<Option<Arc<LocalSlot>>, Rejection> {
        let (rx, key) = {
            let mut st = self.state.lock().map_err(|_| Rejection::ShuttingDown)?;
            st.caps = Some(caps);
            st.dispatch();
            // After a dispatch nobody queued is eligible, so a newcomer with room goes first.
            if st.has_room(caps, user) {
                return Ok(Some(st.take(user, user_key, id)));
            }
            if st.queue.len() as u32 >= caps.queue {
                return Err(Rejection::Full);
            }
            st.seq += 1;
            let key = (class.index(), st.seq);
            let (tx, rx) = oneshot::channel();
            st.queue.insert(
                key,
                Entry {
                    user: user.to_vec(),
                    user_key: user_key.to_string(),
                    id: id.to_string(),
                    tx,
                },
            );
            (rx, key)
        };
        let mut guard = LocalWaitGuard {
            local: Arc::clone(self),
            key,
            rx: Some(rx),
        };
        let started = Instant::now();
        let rx = guard.rx.as_mut().expect("receiver present");
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
        if let Ok(mut st) = self.state.lock() {
            st.degraded = true;
        }
    }

    /// Redis answers again: from now on each local grant is registered by its holder, against the
    /// shared caps. Returns what the recovery must register (claimed: no other recovery takes it).
    pub(crate) fn begin_recovery(&self) -> Unregistered {
        let Ok(mut st) = self.state.lock() else {
            return Unregistered::default();
        };
        st.degraded = false;
        Unregistered {
            slots: st.claim_pending(),
            shared: st
                .shared
                .iter()
                .map(|(id, key)| (id.clone(), key.clone()))
                .collect(),
        }
    }

    /// Local slots still waiting for registration (claimed).
    pub(crate) fn claim_pending(&self) -> Vec<Arc<LocalSlot>> {
        self.state
            .lock()
            .map(|st| st.claim_pending())
            .unwrap_or_default()
    }

    /// A registration failed: the slots wait for the next recovery.
    pub(crate) fn unclaim(&self, slots: &[Arc<LocalSlot>]) {
        for s in slots {
            if s.adopted.lock().is_ok_and(|a| a.is_none()) {
                s.pending.store(true, Ordering::Release);
            }
        }
    }

    /// Whether the slot is still held (not released while its registration was in flight).
    pub(crate) fn holds(&self, id: &str) -> bool {
        self.state.lock().is_ok_and(|st| st.held.contains_key(id))
    }

    /// Whether the shared permit is still running.
    pub(crate) fn holds_shared(&self, id: &str) -> bool {
        self.state.lock().is_ok_and(|st| st.shared.contains_key(id))
    }

    /// A shared permit was granted to this replica.
    pub(crate) fn shared_taken(&self, id: &str, user_key: &str) {
        if let Ok(mut st) = self.state.lock() {
            st.shared.insert(id.to_string(), user_key.to_string());
        }
    }

    /// A shared permit of this replica ended: its room in the local share goes to a waiter.
    pub(crate) fn shared_returned(&self, id: &str) {
        if let Ok(mut st) = self.state.lock() {
            st.shared.remove(id);
            st.dispatch();
        }
    }

    /// Returns a slot and hands it to the next eligible local waiter.
    pub(crate) fn release(&self, slot: &LocalSlot) {
        if let Ok(mut st) = self.state.lock() {
            st.give_back(slot);
            st.dispatch();
        }
    }

    /// Sends every waiter back to the shared queue (Redis is back and the shared caps apply):
    /// granting them local slots now would run beyond the shared cap, unseen by Redis.
    pub(crate) fn requeue_all(&self) {
        let waiters: Vec<Entry> = match self.state.lock() {
            Ok(mut st) => std::mem::take(&mut st.queue).into_values().collect(),
            Err(_) => return,
        };
        for e in waiters {
            let _ = e.tx.send(None);
        }
    }

    /// Slots held right now.
    pub(crate) fn held_count(&self) -> usize {
        self.state.lock().map(|st| st.held.len()).unwrap_or(0)
    }

    /// Waiters right now.
    pub(crate) fn queued(&self) -> usize {
        self.state.lock().map(|st| st.queue.len()).unwrap_or(0)
    }
}

/// Removes a local waiter whose `admit` ended without a slot (timeout, dropped future); a slot
/// that reached it meanwhile goes back.
struct LocalWaitGuard {
    local: Arc<Local>,
    key: (usize, u64),
    rx: Option<oneshot::Receiver<Option<Arc<LocalSlot>>>>,
}

impl Drop for LocalWaitGuard {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        let Ok(mut st) = self.local.state.lock() else {
            return;
        };
        if st.queue.remove(&self.key).is_none()
            && let Ok(Some(slot)) = rx.try_recv()
        {
            st.give_back(&slot);
            st.dispatch();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_never_drop_below_one() {
        assert_eq!(
            LocalCaps::share(20, 2, 500, 3),
            LocalCaps {
                global: 6,
                user: 1,
                queue: 166
            }
        );
        assert_eq!(LocalCaps::share(2, 1, 1, 8).global, 1);
        assert_eq!(LocalCaps::share(20, 2, 500, 0).global, 20);
    }
}
