//! The local admission queue: how a replica admits while Redis is unreachable.
//!
//! Each replica enforces its share of the fleet's caps locally: `max(1, cap / live replicas)`
//! (its shared permits granted before the outage and still running count against it),
//! with the replica count last read from the registry in Redis (or the configured expected fleet
//! size if Redis was never reached), so the fleet as a whole stays within the global cap. The local
//! queue has the same rules as the shared one: strict priority between classes, FIFO within one
//! among waiters whose user has room, a user at its cap set aside (so its waiters cost a dispatch
//! nothing), and a cap on one user's waiters.
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

use super::class::Class;
use super::rejection::Rejection;
use crate::Lease;

/// Caps of one queue: the fleet's, or this replica's share of them during an outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LocalCaps {
    pub(crate) global: u32,
    pub(crate) user: u32,
    pub(crate) queue: u32,
    pub(crate) user_queue: u32,
}

impl LocalCaps {
    /// `max(1, cap / replicas)` for each cap.
    pub(crate) fn share(self, replicas: u32) -> Self {
        let n = replicas.max(1);
        let part = |cap: u32| (cap / n).max(1);
        LocalCaps {
            global: part(self.global),
            user: part(self.user),
            queue: part(self.queue),
            user_queue: part(self.user_queue),
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

/// A waiter's place: (class index, arrival) orders waiters by priority, then FIFO.
type Place = (usize, u64);

struct Entry {
    user_key: String,
    id: String,
    /// `Some(slot)`: granted; `None`: shared admission is back, queue there instead.
    tx: oneshot::Sender<Option<Arc<LocalSlot>>>,
}

/// One user's slots and waiters.
#[derive(Default)]
struct User {
    held: u32,
    waiting: BTreeMap<Place, Entry>,
    /// This user's entries in `State::ready` (the first waiter of each class), while it has room.
    ready: Vec<Place>,
}

#[derive(Default)]
struct State {
    caps: Option<LocalCaps>,
    /// Redis is unreachable: grants are not registered until it returns.
    degraded: bool,
    in_use: u32,
    users: HashMap<Vec<u8>, User>,
    /// The first waiter of each class of each user with room, by place: the first entry is the
    /// waiter a free slot goes to.
    ready: BTreeMap<Place, Vec<u8>>,
    queued: usize,
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

    fn held_by(&self, user: &[u8]) -> u32 {
        self.users.get(user).map_or(0, |u| u.held)
    }

    fn user_has_room(&self, user: &[u8]) -> bool {
        self.caps.is_none_or(|c| self.held_by(user) < c.user)
    }

    fn has_room(&self, caps: LocalCaps, user: &[u8]) -> bool {
        self.running() < caps.global && self.user_has_room(user)
    }

    /// Makes `ready` agree with a user's room and first waiters; forgets a user with nothing.
    fn refresh(&mut self, user: &[u8]) {
        let room = self.user_has_room(user);
        let Some(u) = self.users.get_mut(user) else {
            return;
        };
        for place in u.ready.drain(..) {
            self.ready.remove(&place);
        }
        if u.held == 0 && u.waiting.is_empty() {
            self.users.remove(user);
            return;
        }
        if !room {
            return;
        }
        // The first waiter of each class this user has waiters in.
        let mut next = u.waiting.keys().next().copied();
        while let Some(place) = next {
            u.ready.push(place);
            self.ready.insert(place, user.to_vec());
            next = u.waiting.range((place.0 + 1, 0)..).next().map(|(k, _)| *k);
        }
    }

    fn refresh_all(&mut self) {
        let users: Vec<Vec<u8>> = self.users.keys().cloned().collect();
        for u in users {
            self.refresh(&u);
        }
    }

    fn take(&mut self, user: &[u8], user_key: &str, id: &str) -> Arc<LocalSlot> {
        self.in_use += 1;
        self.users.entry(user.to_vec()).or_default().held += 1;
        let slot = Arc::new(LocalSlot {
            id: id.to_string(),
            user_key: user_key.to_string(),
            user: user.to_vec(),
            granted_degraded: self.degraded,
            pending: AtomicBool::new(self.degraded),
            adopted: Mutex::new(None),
        });
        self.held.insert(id.to_string(), Arc::clone(&slot));
        self.refresh(user);
        slot
    }

    fn give_back(&mut self, slot: &LocalSlot) {
        if self.held.remove(&slot.id).is_none() {
            return;
        }
        self.in_use = self.in_use.saturating_sub(1);
        if let Some(u) = self.users.get_mut(&slot.user) {
            u.held = u.held.saturating_sub(1);
        }
        self.refresh(&slot.user);
    }

    fn remove_waiter(&mut self, user: &[u8], place: Place) -> Option<Entry> {
        let entry = self.users.get_mut(user)?.waiting.remove(&place)?;
        self.queued -= 1;
        self.refresh(user);
        Some(entry)
    }

    /// Grants free slots to the first ready waiters: strict priority, FIFO among waiters whose
    /// user has room. Users at their cap are not in `ready`, so they cost nothing here.
    fn dispatch(&mut self) {
        let Some(caps) = self.caps else { return };
        while self.running() < caps.global {
            let Some((&place, user)) = self.ready.iter().next() else {
                break;
            };
            let user = user.clone();
            if !self.user_has_room(&user) {
                // The caps shrank since this entry was made.
                self.refresh(&user);
                continue;
            }
            let Some(e) = self.remove_waiter(&user, place) else {
                self.ready.remove(&place);
                continue;
            };
            let slot = self.take(&user, &e.user_key, &e.id);
            if let Err(Some(slot)) = e.tx.send(Some(slot)) {
                // The waiter is gone: the slot goes back (and on, in this loop).
                self.give_back(&slot);
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
    pub(crate) async fn admit(
        self: &Arc<Self>,
        caps: LocalCaps,
        id: &str,
        user: &[u8],
        user_key: &str,
        class: Class,
        deadline: Instant,
    ) -> Result<Option<Arc<LocalSlot>>, Rejection> {
        let (rx, place) = {
            let mut st = self.state.lock().map_err(|_| Rejection::ShuttingDown)?;
            if st.caps != Some(caps) {
                st.caps = Some(caps);
                st.refresh_all();
            }
            st.dispatch();
            // After a dispatch nobody queued is eligible, so a newcomer with room goes first.
            if st.has_room(caps, user) {
                return Ok(Some(st.take(user, user_key, id)));
            }
            let mine = st.users.get(user).map_or(0, |u| u.waiting.len());
            if mine >= caps.user_queue as usize {
                return Err(Rejection::UserQueueFull);
            }
            if st.queued >= caps.queue as usize {
                return Err(Rejection::Full);
            }
            st.seq += 1;
            let place = (class.index(), st.seq);
            let (tx, rx) = oneshot::channel();
            let entry = Entry {
                user_key: user_key.to_string(),
                id: id.to_string(),
                tx,
            };
            st.users
                .entry(user.to_vec())
                .or_default()
                .waiting
                .insert(place, entry);
            st.queued += 1;
            st.refresh(user);
            (rx, place)
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
            Ok(mut st) => {
                let st = &mut *st;
                st.ready.clear();
                st.queued = 0;
                let mut out = Vec::new();
                st.users.retain(|_, u| {
                    u.ready.clear();
                    out.extend(std::mem::take(&mut u.waiting).into_values());
                    u.held > 0
                });
                out
            }
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
        self.state.lock().map(|st| st.queued).unwrap_or(0)
    }
}

/// Removes a local waiter whose `admit` ended without a slot (timeout, dropped future); a slot
/// that reached it meanwhile goes back.
struct LocalWaitGuard {
    local: Arc<Local>,
    user: Vec<u8>,
    place: Place,
    rx: Option<oneshot::Receiver<Option<Arc<LocalSlot>>>>,
}

impl Drop for LocalWaitGuard {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        let Ok(mut st) = self.local.state.lock() else {
            return;
        };
        if st.remove_waiter(&self.user, self.place).is_none()
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

    fn caps(global: u32, user: u32) -> LocalCaps {
        LocalCaps {
            global,
            user,
            queue: 10_000,
            user_queue: 10_000,
        }
    }

    #[test]
    fn shares_never_drop_below_one() {
        let fleet = LocalCaps {
            global: 20,
            user: 2,
            queue: 500,
            user_queue: 10,
        };
        assert_eq!(
            fleet.share(3),
            LocalCaps {
                global: 6,
                user: 1,
                queue: 166,
                user_queue: 3,
            }
        );
        assert_eq!(caps(2, 1).share(8).global, 1);
        assert_eq!(fleet.share(0).global, 20);
    }

    fn enqueue(
        st: &mut State,
        user: &[u8],
        class: usize,
    ) -> oneshot::Receiver<Option<Arc<LocalSlot>>> {
        st.seq += 1;
        let (tx, rx) = oneshot::channel();
        let id = format!("w{}", st.seq);
        st.users.entry(user.to_vec()).or_default().waiting.insert(
            (class, st.seq),
            Entry {
                user_key: String::new(),
                id,
                tx,
            },
        );
        st.queued += 1;
        st.refresh(user);
        rx
    }

    /// A user at its cap with many waiters is not in the ready set at all: a slot that frees goes
    /// to the first waiter of a user with room, by class then arrival.
    #[test]
    fn users_at_their_cap_are_set_aside() {
        let mut st = State {
            caps: Some(caps(2, 1)),
            ..State::default()
        };
        let a = st.take(b"a", "", "a1");
        let c = st.take(b"c", "", "c1");
        let mut blocked: Vec<_> = (0..1000).map(|_| enqueue(&mut st, b"a", 0)).collect();
        let mut low = enqueue(&mut st, b"b", 1);
        let mut high = enqueue(&mut st, b"d", 0);
        assert_eq!(st.ready.len(), 2, "only b and d are ready");
        st.give_back(&c);
        st.dispatch();
        assert!(matches!(high.try_recv(), Ok(Some(_))), "d: higher class");
        assert!(low.try_recv().is_err());
        st.give_back(&a);
        st.dispatch();
        // a's first waiter (class 0) goes before b's (class 1).
        assert!(matches!(blocked[0].try_recv(), Ok(Some(_))));
        assert!(low.try_recv().is_err());
        assert!(blocked[1].try_recv().is_err());
        assert_eq!(st.queued, 1000);
    }
}
