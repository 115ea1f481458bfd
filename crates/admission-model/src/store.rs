//! The queue's shared state as the admission scripts keep it, one method per script, each one
//! atomic step. Mirrors `lua/admission_*.lua` at the level the scripts' callers can observe:
//! which leases are live, who waits in which order, which grants are recorded and pushed.
//! Time is abstract: a lease, a replica's heartbeat or a waiter's record is live or expired, and
//! expiry is a step of its own (`expire_*`).

use std::collections::{BTreeMap, BTreeSet};

/// A waiter's id, which is also the id of the lease it is granted.
pub type Id = u8;
/// A user (a lease scope of its own, with its own cap).
pub type User = u8;
/// A replica (a service process; its waiters' grants are pushed to it).
pub type Replica = u8;

/// The caps and sizes every script is called with.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Params {
    pub user_cap: usize,
    pub global_cap: usize,
    /// Priority classes, 0 served first.
    pub classes: u8,
    /// Most waiters queued, all classes.
    pub max_queue: usize,
    /// Most waiters queued of one user, all classes.
    pub max_user_queue: usize,
    /// A deliberate bug, to show that the checks catch it (never set outside such a check).
    pub flaw: Option<Flaw>,
}

/// Deliberate bugs the checker must find.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flaw {
    /// A release drops the lease from the global count but not from its user's.
    ReleaseForgetsUserCount,
    /// Dispatch grants without looking at the user's cap.
    DispatchIgnoresUserCap,
}

/// A lease in the global scope and in its user's scope (the scripts keep both, and the holders
/// map, in step).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lease {
    pub user: User,
    /// The replica named in the lease id (an admin reclaim finds a dead replica's leases by it).
    pub replica: Replica,
    /// Expired leases stay in the sets, uncounted, until a dispatch reclaims them.
    pub live: bool,
    /// Still in the user's scope (false only after a flawed release).
    pub in_user: bool,
    /// Still in the global scope (false only after a flawed release).
    pub in_global: bool,
}

/// A queued waiter. Its record (its wait budget, which its id carries) may run out while it is
/// queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Waiter {
    pub id: Id,
    pub user: User,
    pub replica: Replica,
}

/// A message pushed on a replica's channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// The waiter was granted its lease.
    Grant(Id),
    /// The queue was reset: the waiter is refused.
    Reset(Id),
}

/// A message and the replica whose channel it went to.
pub type Published = (Replica, Msg);

/// What `admission_enter` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Entered {
    Granted,
    /// Queued at this 1-based position.
    Queued(usize),
    Full,
    UserFull,
    /// Its leave came first: not entered.
    Withdrawn,
}

/// What `admission_leave` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Left {
    /// It left the queue.
    Left,
    /// It had been granted meanwhile: the slot was released and handed on.
    WasGranted,
    /// Unknown (reset, dropped, Redis lost it).
    Unknown,
}

/// The shared state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Store {
    pub leases: BTreeMap<Id, Lease>,
    /// Per class, in arrival order.
    pub queues: Vec<Vec<Waiter>>,
    /// Waiters whose record is still there, and ids whose leave came before their enter (the
    /// mark that stops that enter).
    pub records: BTreeSet<Id>,
    /// The registry: replica -> heartbeat still live.
    pub replicas: BTreeMap<Replica, bool>,
    /// Grants recorded for a replica's heartbeat to collect.
    pub grants: BTreeMap<Replica, BTreeSet<Id>>,
}

impl Store {
    pub fn new(p: &Params) -> Self {
        Store {
            queues: vec![Vec::new(); usize::from(p.classes)],
            ..Store::default()
        }
    }

    /// Live leases in the global scope.
    pub fn in_use(&self) -> usize {
        self.leases
            .values()
            .filter(|l| l.live && l.in_global)
            .count()
    }

    /// Live leases in a user's scope.
    pub fn user_in_use(&self, user: User) -> usize {
        self.leases
            .values()
            .filter(|l| l.live && l.in_user && l.user == user)
            .count()
    }

    fn has_room(&self, p: &Params, user: User) -> bool {
        p.flaw == Some(Flaw::DispatchIgnoresUserCap) || self.user_in_use(user) < p.user_cap
    }

    fn alive(&self, r: Replica) -> bool {
        self.replicas.get(&r).copied().unwrap_or(false)
    }

    pub fn queued(&self) -> usize {
        self.queues.iter().map(Vec::len).sum()
    }

    fn take(&mut self, id: Id, user: User, replica: Replica) {
        let lease = Lease {
            user,
            replica,
            live: true,
            in_user: true,
            in_global: true,
        };
        self.leases.insert(id, lease);
    }

    /// `drop_lease`: true if it was live.
    fn drop_lease(&mut self, p: &Params, id: Id) -> bool {
        let Some(l) = self.leases.get_mut(&id) else {
            return false;
        };
        let was_live = l.live && l.in_global;
        if p.flaw == Some(Flaw::ReleaseForgetsUserCount) && l.in_user {
            l.in_global = false;
            return was_live;
        }
        self.leases.remove(&id);
        was_live
    }

    /// `reclaim_global`: expired leases leave both scopes.
    fn reclaim(&mut self) {
        self.leases.retain(|_, l| l.live || !l.in_global);
    }

    /// `dispatch`: strict priority between classes, FIFO within a class among waiters whose user
    /// has room; waiters whose replica died or whose record expired are dropped when reached.
    /// Returns the free slots left.
    fn dispatch(&mut self, p: &Params, entering: bool, out: &mut Vec<Published>) -> usize {
        // No slot free: nobody can be served, and expired leases wait for a dispatch that has one.
        let mut free = p.global_cap.saturating_sub(self.in_use());
        if free == 0 {
            return 0;
        }
        if entering && self.queued() == 0 {
            return free;
        }
        self.reclaim();
        for class in 0..self.queues.len() {
            while free > 0 {
                let Some(i) = self.queues[class]
                    .iter()
                    .position(|w| self.has_room(p, w.user))
                else {
                    break;
                };
                let w = self.queues[class].remove(i);
                if !self.records.remove(&w.id) || !self.alive(w.replica) {
                    continue;
                }
                self.take(w.id, w.user, w.replica);
                self.grants.entry(w.replica).or_default().insert(w.id);
                out.push((w.replica, Msg::Grant(w.id)));
                free -= 1;
            }
        }
        if entering { free } else { 0 }
    }

    /// 1-based queue position (everyone in a higher class plus those ahead in its own), 0 if
    /// not queued: what the heartbeat reports for a watched waiter.
    pub fn position(&self, id: Id, class: usize) -> usize {
        let Some(rank) = self.queues[class].iter().position(|w| w.id == id) else {
            return 0;
        };
        rank + 1 + self.queues[..class].iter().map(Vec::len).sum::<usize>()
    }

    /// `admission_enter`.
    pub fn enter(&mut self, p: &Params, w: Waiter, class: u8, out: &mut Vec<Published>) -> Entered {
        self.replicas.insert(w.replica, true);
        let free = self.dispatch(p, true, out);
        if self.records.contains(&w.id) {
            return Entered::Withdrawn;
        }
        let room = self.has_room(p, w.user);
        if free > 0 && room {
            self.take(w.id, w.user, w.replica);
            return Entered::Granted;
        }
        let mine = |s: &Store| {
            s.queues
                .iter()
                .flatten()
                .filter(|x| x.user == w.user)
                .count()
        };
        if mine(self) >= p.max_user_queue {
            // prune_user: this user's waiters whose replica died or whose record expired.
            let (records, replicas) = (&self.records, &self.replicas);
            let dead = |x: &Waiter| {
                x.user == w.user
                    && !(records.contains(&x.id) && replicas.get(&x.replica) == Some(&true))
            };
            let dropped: Vec<Id> = self
                .queues
                .iter()
                .flatten()
                .filter(|x| dead(x))
                .map(|x| x.id)
                .collect();
            for q in &mut self.queues {
                q.retain(|x| !dropped.contains(&x.id));
            }
            for id in dropped {
                self.records.remove(&id);
            }
            if mine(self) >= p.max_user_queue {
                return Entered::UserFull;
            }
        }
        if self.queued() >= p.max_queue {
            return Entered::Full;
        }
        let class = usize::from(class);
        self.queues[class].push(w);
        self.records.insert(w.id);
        Entered::Queued(self.position(w.id, class))
    }

    /// `admission_release`: true if the lease was live.
    pub fn release(&mut self, p: &Params, id: Id, out: &mut Vec<Published>) -> bool {
        self.reclaim();
        let held = self.drop_lease(p, id);
        // Its replica knew of the grant: the record for its heartbeat goes (the script finds the
        // replica in the id; ids are unique, so looking in every replica's set is the same).
        for g in self.grants.values_mut() {
            g.remove(&id);
        }
        self.grants.retain(|_, g| !g.is_empty());
        self.dispatch(p, false, out);
        held
    }

    /// `admission_renew`: false if the lease was lost (then it is dropped, never revived).
    pub fn renew(&mut self, p: &Params, id: Id) -> bool {
        match self.leases.get(&id) {
            Some(l) if l.live && l.in_global && l.in_user => true,
            _ => {
                self.drop_lease(p, id);
                false
            }
        }
    }

    /// `admission_leave`.
    pub fn leave(
        &mut self,
        p: &Params,
        id: Id,
        class: u8,
        replica: Replica,
        out: &mut Vec<Published>,
    ) -> Left {
        let q = &mut self.queues[usize::from(class)];
        if let Some(i) = q.iter().position(|w| w.id == id) {
            q.remove(i);
            self.records.remove(&id);
            return Left::Left;
        }
        if let Some(g) = self.grants.get_mut(&replica) {
            g.remove(&id);
            if g.is_empty() {
                self.grants.remove(&replica);
            }
        }
        if self.leases.get(&id).is_some_and(|l| l.in_global) {
            self.drop_lease(p, id);
            self.dispatch(p, false, out);
            return Left::WasGranted;
        }
        self.records.insert(id);
        Left::Unknown
    }

    /// `admission_heartbeat`: the grants recorded for `replica`, collected.
    pub fn heartbeat(
        &mut self,
        p: &Params,
        replica: Replica,
        out: &mut Vec<Published>,
    ) -> BTreeSet<Id> {
        self.replicas.insert(replica, true);
        self.replicas.retain(|_, alive| *alive);
        let grants = self.grants.remove(&replica).unwrap_or_default();
        self.dispatch(p, false, out);
        grants
    }

    /// `admission_stats`: (queued per class, in use, live replicas).
    pub fn stats(&mut self) -> (Vec<usize>, usize, usize) {
        self.reclaim();
        self.replicas.retain(|_, alive| *alive);
        let queued = self.queues.iter().map(Vec::len).collect();
        (queued, self.in_use(), self.replicas.len())
    }

    /// `admission_reclaim`: removes the leases of dead replicas; returns how many.
    pub fn reclaim_dead(&mut self, p: &Params, out: &mut Vec<Published>) -> usize {
        let before = self.leases.len();
        let replicas = &self.replicas;
        self.leases
            .retain(|_, l| !l.in_global || replicas.get(&l.replica) == Some(&true));
        let n = before - self.leases.len();
        self.dispatch(p, false, out);
        n
    }

    /// `admission_reset`: every waiter leaves; replicas told of those whose record is there.
    pub fn reset(&mut self, out: &mut Vec<Published>) -> usize {
        let mut n = 0;
        for q in &mut self.queues {
            for w in q.drain(..) {
                if self.records.remove(&w.id) {
                    out.push((w.replica, Msg::Reset(w.id)));
                }
                n += 1;
            }
        }
        n
    }

    /// `admission_adopt all`: registers running permits, no cap check; returns how many were not
    /// live already.
    pub fn adopt_all(&mut self, pairs: &[(Id, User, Replica)]) -> usize {
        let mut n = 0;
        for &(id, user, replica) in pairs {
            if !self.leases.get(&id).is_some_and(|l| l.live && l.in_global) {
                self.take(id, user, replica);
                n += 1;
            }
        }
        n
    }

    /// `admission_adopt checked`: registers one permit if the caps have room after eligible
    /// waiters are served.
    pub fn adopt_checked(
        &mut self,
        p: &Params,
        id: Id,
        user: User,
        replica: Replica,
        out: &mut Vec<Published>,
    ) -> bool {
        let free = self.dispatch(p, true, out);
        if free > 0 && self.has_room(p, user) {
            self.take(id, user, replica);
            return true;
        }
        false
    }

    /// A lease's TTL passed without a renewal.
    pub fn expire_lease(&mut self, id: Id) {
        if let Some(l) = self.leases.get_mut(&id) {
            l.live = false;
        }
    }

    /// A replica's heartbeat TTL passed.
    pub fn expire_replica(&mut self, r: Replica) {
        if let Some(a) = self.replicas.get_mut(&r) {
            *a = false;
        }
    }

    /// A waiter's record TTL passed (its wait budget is over).
    pub fn expire_record(&mut self, id: Id) {
        self.records.remove(&id);
    }
}
