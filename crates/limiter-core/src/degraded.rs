//! Degraded admission: how a replica admits while Redis is unreachable.
//!
//! Each replica enforces its share of the fleet's caps locally: `max(1, cap / live replicas)`
//! (its shared permits granted before the outage and still running count against it),
//! with the replica count last read from the registry in Redis (or the configured expected fleet
//! size if Redis was never reached), so the fleet as a whole stays within the global cap. The local
//! queue has the same rules as the shared one: strict priority between classes, FIFO within one,
//! no head-of-line blocking by a user at its cap.
//!
//! When Redis answers again, the permits granted here are adopted into Redis (`admission_adopt`)
//! before the replica goes back to shared admission, so the shared caps count them; then the local
//! waiters go back to the shared queue (a local grant after that would be beyond the shared cap).

use std::collections::{BTreeMap, HashMap};
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

/// A slot granted locally. `adopted` holds the Redis lease once the slot has been registered in
/// Redis after an outage (it renews and releases there like any other).
#[derive(Debug)]
pub(crate) struct LocalSlot {
    pub(crate) id: String,
    pub(crate) user_key: String,
    user: Vec<u8>,
    pub(crate) adopted: Mutex<Option<Lease>>,
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
    in_use: u32,
    users: HashMap<Vec<u8>, u32>,
    /// Waiters by (class, arrival).
    queue: BTreeMap<(usize, u64), Entry>,
    seq: u64,
    held: HashMap<String, Arc<LocalSlot>>,
    /// Shared (Redis) permits of this replica still running: they count against the local
    /// share, or an outage would let the local queue start `global` more next to them.
    shared_held: u32,
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
    fn has_room(&self, caps: LocalCaps, user: &[u8]) -> bool {
        self.in_use + self.shared_held < caps.global
            && self.users.get(user).copied().unwrap_or(0) < caps.user
    }

    fn take(&mut self, user: &[u8], user_key: &str, id: &str) -> Arc<LocalSlot> {
        self.in_use += 1;
        *self.users.entry(user.to_vec()).or_default() += 1;
        let slot = Arc::new(LocalSlot {
            id: id.to_string(),
            user_key: user_key.to_string(),
            user: user.to_vec(),
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
            if self.in_use + self.shared_held + granted.len() as u32 >= caps.global {
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

    /// A shared permit was granted to this replica.
    pub(crate) fn shared_taken(&self) {
        if let Ok(mut st) = self.state.lock() {
            st.shared_held += 1;
        }
    }

    /// A shared permit of this replica ended: its room in the local share goes to a waiter.
    pub(crate) fn shared_returned(&self) {
        if let Ok(mut st) = self.state.lock() {
            st.shared_held = st.shared_held.saturating_sub(1);
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

    /// Slots held right now (for adoption into Redis).
    pub(crate) fn held(&self) -> Vec<Arc<LocalSlot>> {
        self.state
            .lock()
            .map(|st| st.held.values().cloned().collect())
            .unwrap_or_default()
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
