//! The local queue's data: who holds which slot and who waits, by user, and which waiters a free
//! slot may go to. Pure bookkeeping without locks or awaits (`local.rs` wraps it).
//!
//! A user's waiters are kept per user, ordered by (class, arrival). `ready` holds, for every user
//! with room under its cap, the first waiter of each class it waits in; a free slot goes to the
//! first entry of `ready`: strict priority between classes, FIFO among waiters whose user has
//! room, and a user at its cap (however many waiters it has) costs a dispatch nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

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

impl LocalSlot {
    /// A registration failed: the slot waits for the next recovery (unless it was adopted).
    pub(crate) fn unclaim(&self) {
        if self.adopted.lock().is_ok_and(|a| a.is_none()) {
            self.pending.store(true, Ordering::Release);
        }
    }
}

/// What a recovery must register in Redis: local slots granted during the outage, and shared
/// permits (lease id, user lease key) still running.
#[derive(Debug, Default)]
pub(crate) struct Unregistered {
    pub(crate) slots: Vec<Arc<LocalSlot>>,
    pub(crate) shared: Vec<(String, String)>,
}

/// A waiter's place: (class index, arrival) orders waiters by priority, then FIFO.
pub(crate) type Place = (usize, u64);

/// What a local waiter receives: `Some(slot)` granted; `None` shared admission is back, queue
/// there instead.
pub(crate) type Delivery = Option<Arc<LocalSlot>>;

struct Entry {
    user_key: String,
    id: String,
    tx: oneshot::Sender<Delivery>,
}

/// The outcome of [`State::admit`].
pub(crate) enum Admitted {
    /// A slot was free.
    Now(Arc<LocalSlot>),
    /// Queued at this place; the slot (or `None`) arrives on the receiver.
    Queued(Place, oneshot::Receiver<Delivery>),
}

/// One user's slots and waiters.
#[derive(Default)]
struct User {
    /// Its lease key in Redis (the per-user cap's counter).
    key: String,
    held: u32,
    waiting: BTreeMap<Place, Entry>,
    /// This user's entries in `State::ready` (the first waiter of each class), while it has room.
    ready: Vec<Place>,
}

#[derive(Default)]
pub(crate) struct State {
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
    /// While `counted` is set: what runs per user lease key, local slots and shared permits.
    by_key: HashMap<String, u32>,
    /// Cut off from Redis under the safety policy: per user lease key, how many of this
    /// replica's slots Redis counted when the outage began. While the other replicas may go on
    /// admitting by Redis's counts, a local grant must stand in the room of one of those (a
    /// request of that user that ended, its lease left to expire), so that Redis's counts stay
    /// an upper bound of what the fleet runs, overall and per user.
    counted: Option<HashMap<String, u32>>,
}

impl State {
    /// Everything this replica runs: local slots and shared permits.
    pub(crate) fn running(&self) -> u32 {
        self.in_use
            .saturating_add(u32::try_from(self.shared.len()).unwrap_or(u32::MAX))
    }

    fn held_by(&self, user: &[u8]) -> u32 {
        self.users.get(user).map_or(0, |u| u.held)
    }

    fn user_has_room(&self, user: &[u8]) -> bool {
        self.caps.is_none_or(|c| self.held_by(user) < c.user)
            && self
                .users
                .get(user)
                .is_none_or(|u| self.key_has_room(&u.key))
    }

    /// Whether a slot Redis still counts for this user is free to reuse (always, unless cut
    /// off under the safety policy).
    fn key_has_room(&self, key: &str) -> bool {
        self.counted.as_ref().is_none_or(|c| {
            c.get(key).copied().unwrap_or(0) > self.by_key.get(key).copied().unwrap_or(0)
        })
    }

    fn has_room(&self, caps: LocalCaps, user: &[u8], key: &str) -> bool {
        self.running() < caps.global && self.user_has_room(user) && self.key_has_room(key)
    }

    fn count_key(&mut self, key: &str, up: bool) {
        // Only needed while reusing counted slots: the shared path pays nothing for it.
        if self.counted.is_none() {
            return;
        }
        if up {
            *self.by_key.entry(key.to_string()).or_default() += 1;
        } else if let Some(n) = self.by_key.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.by_key.remove(key);
            }
        }
    }

    /// Starts reusing only the slots Redis counts for this replica now (its shared permits, and
    /// local slots a recovery registered); returns how many.
    pub(crate) fn begin_counted(&mut self) -> u32 {
        let mut counted: HashMap<String, u32> = HashMap::new();
        let registered = self
            .held
            .values()
            .filter(|s| s.adopted.lock().is_ok_and(|a| a.is_some()))
            .map(|s| s.user_key.as_str());
        for key in self.shared.values().map(String::as_str).chain(registered) {
            *counted.entry(key.to_string()).or_default() += 1;
        }
        let total = counted.values().sum();
        let running = self
            .shared
            .values()
            .chain(self.held.values().map(|s| &s.user_key));
        self.by_key.clear();
        for key in running {
            *self.by_key.entry(key.clone()).or_default() += 1;
        }
        self.counted = Some(counted);
        self.refresh_all();
        total
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
        self.count_key(user_key, true);
        let u = self.users.entry(user.to_vec()).or_default();
        u.held += 1;
        if u.key.is_empty() {
            u.key = user_key.to_string();
        }
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
        self.count_key(&slot.user_key, false);
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

    /// Admits `user` now if there is room (after serving eligible waiters), else queues it.
    pub(crate) fn admit(
        &mut self,
        caps: LocalCaps,
        user: &[u8],
        user_key: &str,
        id: &str,
        class: Class,
    ) -> Result<Admitted, Rejection> {
        if self.caps != Some(caps) {
            self.caps = Some(caps);
            self.refresh_all();
        }
        self.dispatch();
        // After a dispatch nobody queued is eligible, so a newcomer with room goes first.
        if self.has_room(caps, user, user_key) {
            return Ok(Admitted::Now(self.take(user, user_key, id)));
        }
        let mine = self.users.get(user).map_or(0, |u| u.waiting.len());
        if mine >= caps.user_queue as usize {
            return Err(Rejection::UserQueueFull);
        }
        if self.queued >= caps.queue as usize {
            return Err(Rejection::Full);
        }
        self.seq += 1;
        let place = (class.index(), self.seq);
        let (tx, rx) = oneshot::channel();
        let entry = Entry {
            user_key: user_key.to_string(),
            id: id.to_string(),
            tx,
        };
        let u = self.users.entry(user.to_vec()).or_default();
        if u.key.is_empty() {
            u.key = user_key.to_string();
        }
        u.waiting.insert(place, entry);
        self.queued += 1;
        self.refresh(user);
        Ok(Admitted::Queued(place, rx))
    }

    /// A waiter's `admit` ended without a slot: out of the queue, and a slot that reached it
    /// meanwhile goes back (and on).
    pub(crate) fn cancel(
        &mut self,
        user: &[u8],
        place: Place,
        rx: &mut oneshot::Receiver<Delivery>,
    ) {
        if self.remove_waiter(user, place).is_none()
            && let Ok(Some(slot)) = rx.try_recv()
        {
            self.release(&slot);
        }
    }

    /// Returns a slot and hands it to the next eligible waiter. Returns whether ended slots are
    /// being reused (their leases must then stay counted in Redis).
    pub(crate) fn release(&mut self, slot: &LocalSlot) -> bool {
        self.give_back(slot);
        self.dispatch();
        self.counted.is_some()
    }

    /// Redis became unreachable (`true`) or answers again: whether grants from now on wait for
    /// a recovery to register them.
    pub(crate) fn set_degraded(&mut self, degraded: bool) {
        self.degraded = degraded;
        if !degraded && self.counted.take().is_some() {
            self.by_key.clear();
            self.refresh_all();
        }
    }

    /// What a recovery registers: pending local slots (claimed) and running shared permits.
    pub(crate) fn unregistered(&self) -> Unregistered {
        Unregistered {
            slots: self.claim_pending(),
            shared: self
                .shared
                .iter()
                .map(|(id, key)| (id.clone(), key.clone()))
                .collect(),
        }
    }

    /// Whether the local slot is still held.
    pub(crate) fn holds(&self, id: &str) -> bool {
        self.held.contains_key(id)
    }

    /// Whether the shared permit is still running.
    pub(crate) fn holds_shared(&self, id: &str) -> bool {
        self.shared.contains_key(id)
    }

    /// A shared permit was granted to this replica.
    pub(crate) fn shared_taken(&mut self, id: &str, user_key: &str) {
        if let Some(old) = self.shared.insert(id.to_string(), user_key.to_string()) {
            self.count_key(&old, false);
        }
        self.count_key(user_key, true);
    }

    /// A shared permit ended: its room in the local share goes to a waiter.
    /// Returns whether ended slots are being reused (the permit's lease must then stay counted
    /// in Redis: a local grant may take its room as soon as this returns).
    pub(crate) fn shared_returned(&mut self, id: &str) -> bool {
        if let Some(key) = self.shared.remove(id) {
            self.count_key(&key, false);
            if self.counted.is_some() {
                // Reusing counted slots: this user may have room again now.
                let users: Vec<Vec<u8>> = self
                    .users
                    .iter()
                    .filter(|(_, u)| u.key == key)
                    .map(|(k, _)| k.clone())
                    .collect();
                for u in users {
                    self.refresh(&u);
                }
            }
        }
        self.dispatch();
        self.counted.is_some()
    }

    /// Takes every waiter out, telling each to queue in Redis instead.
    pub(crate) fn requeue_all(&mut self) {
        self.ready.clear();
        self.queued = 0;
        let mut waiters = Vec::new();
        self.users.retain(|_, u| {
            u.ready.clear();
            waiters.extend(std::mem::take(&mut u.waiting).into_values());
            u.held > 0
        });
        for e in waiters {
            let _ = e.tx.send(None);
        }
    }

    /// Local slots held right now.
    pub(crate) fn held_count(&self) -> usize {
        self.held.len()
    }

    /// Local waiters right now.
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    /// Claims the held slots waiting for registration (a recovery registers them).
    pub(crate) fn claim_pending(&self) -> Vec<Arc<LocalSlot>> {
        self.held
            .values()
            .filter(|s| s.pending.swap(false, Ordering::AcqRel))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests;
