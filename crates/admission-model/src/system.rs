//! The fleet around the store: replicas calling the scripts for their clients, grants pushed over
//! pub/sub, heartbeats, time passing, and faults. A `stateright` model: every interleaving of
//! these steps, up to the fault budget, is explored.
//!
//! The upstream's view is the independent observer: a client in [`Phase::Running`] is a call
//! running at the upstream, whatever Redis believes.

use stateright::{Model, Property};

use crate::store::{Entered, Id, Msg, Params, Published, Replica, Store, User, Waiter};

/// One client's single request: who, which class, through which replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientSpec {
    pub user: User,
    pub class: u8,
    pub replica: Replica,
}

/// Which faults may happen (each one spends the budget).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Faults {
    /// A replica process dies (its requests die with it) and may start again, empty.
    pub crash: bool,
    /// A pushed message is lost (a grant must then come through the heartbeat); delivery order
    /// is free in every run.
    pub lose_message: bool,
    /// Redis restarts empty; replicas register what they run again before anyone admits.
    pub restart_empty: bool,
    /// Failover to a Redis replica that missed the last write; then as after a restart.
    pub failover: bool,
    /// A waiter's record expires while it is queued (its wait budget ran out first).
    pub record_expiry: bool,
    /// A replica is paused or cut from Redis while its requests run on; time passes meanwhile,
    /// so its leases can expire.
    pub cut: bool,
}

/// The model: sizes, clients, faults.
#[derive(Clone, Debug)]
pub struct System {
    pub params: Params,
    pub replicas: u8,
    pub clients: Vec<ClientSpec>,
    pub faults: Faults,
    pub fault_budget: u8,
    /// An operator may empty the queue (`admission_reset`) once.
    pub admin_reset: bool,
    /// A replica that cannot renew a request's lease stops that request before the lease's TTL
    /// runs out (measured on its own clock, with a margin), and does not start a grant that
    /// reaches it after its lease's expiry. Not what the service does today: what a partition or
    /// pause of any length needs (see `tests/check.rs`).
    pub stop_unrenewed: bool,
}

/// Where a client's request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    Idle,
    Waiting,
    Running,
    Done,
    /// Timed out or went away while waiting.
    GaveUp,
    /// Queue full, or reset.
    Refused,
    /// Its replica crashed.
    Lost,
    /// Stopped by its replica: its lease could not be renewed, or its grant came too late.
    Stopped,
}

/// A replica's condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Up {
    Up,
    Crashed,
    /// Paused or cut from Redis: no script calls, its requests run on.
    Cut,
}

/// The whole fleet's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    pub store: Store,
    pub clients: Vec<Phase>,
    pub up: Vec<Up>,
    /// Messages pushed, not yet delivered (sorted: delivery order is free).
    pub inbox: Vec<Published>,
    /// Replicas that must register their running requests before anyone admits (Redis lost
    /// its state).
    pub must_register: Vec<bool>,
    /// The store before the last script step (what a Redis replica behind by one write holds).
    pub previous: Option<Store>,
    pub faults_left: u8,
    /// Set by a step that granted out of order.
    pub violation: Option<&'static str>,
    /// Set by a step that granted a waiter whose leave had run (its slot then waits for the
    /// lease TTL). Kept apart: a failover that lost the leave makes this happen, and the
    /// exploration goes on past it.
    pub granted_after_leaving: bool,
    /// Some waiter was granted by a hand-off (not at once).
    pub handed_off: bool,
    /// The operator's reset was used.
    pub reset_done: bool,
}

/// The steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Arrive(usize),
    Finish(usize),
    GiveUp(usize),
    Deliver(usize),
    Heartbeat(Replica),
    Register(Replica),
    /// Time passes: leases nobody renews expire, so do the heartbeats of replicas that are down
    /// and the records of waiters nobody waits for.
    Tick,
    Lose(usize),
    Crash(Replica),
    Restart(Replica),
    Cut(Replica),
    Heal(Replica),
    RestartEmpty,
    Failover,
    ExpireRecord(usize),
    AdminReset,
}

/// Client index <-> waiter/lease id (0 is never an id).
fn id_of(c: usize) -> Id {
    Id::try_from(c + 1).unwrap_or(Id::MAX)
}

fn client_of(id: Id) -> usize {
    usize::from(id).saturating_sub(1)
}

impl System {
    fn replica_ok(&self, s: &State, r: Replica) -> bool {
        s.up[usize::from(r)] == Up::Up && !s.must_register[usize::from(r)]
    }

    fn admitting(s: &State) -> bool {
        !s.must_register.iter().any(|m| *m)
    }

    /// Runs one script step, then checks what it granted: the upstream observer's rules for
    /// hand-offs (strict priority, FIFO within a class, never to a waiter that left).
    fn script(&self, s: &mut State, f: impl FnOnce(&Params, &mut Store, &mut Vec<Published>)) {
        let before = s.store.clone();
        let mut out = Vec::new();
        f(&self.params, &mut s.store, &mut out);
        for (_, m) in &out {
            if let Msg::Grant(id) = m {
                self.check_grant(s, &before, *id);
            }
        }
        s.inbox.extend(out);
        s.inbox.sort();
        if self.faults.failover && s.faults_left > 0 {
            s.previous = Some(before);
        }
    }

    /// A waiter was just granted by a dispatch. Its client must still be waiting (a waiter whose
    /// replica crashed is no exception: nothing told Redis). No waiter still queued may have had
    /// a better claim: queued before the step, in a higher class or earlier in the same class,
    /// with room under its user cap, its record and its replica live.
    fn check_grant(&self, s: &mut State, before: &Store, id: Id) {
        let c = client_of(id);
        if matches!(
            s.clients.get(c),
            Some(Phase::GaveUp | Phase::Done | Phase::Refused)
        ) {
            s.granted_after_leaving = true;
            return;
        }
        let Some(spec) = self.clients.get(c) else {
            return;
        };
        let class = usize::from(spec.class);
        let rank = |x: Id| before.queues[class].iter().position(|w| w.id == x);
        let st = &s.store;
        let was_queued = |x: Id| before.queues.iter().flatten().any(|w| w.id == x);
        let better = st.queues.iter().enumerate().any(|(k, q)| {
            q.iter().any(|w| {
                // A newcomer queued by this step came after the dispatch.
                let eligible = was_queued(w.id)
                    && st.user_in_use(w.user) < self.params.user_cap
                    && st.records.contains(&w.id)
                    && st.replicas.get(&w.replica) == Some(&true);
                let ahead = k < class
                    || (k == class
                        && matches!((rank(w.id), rank(id)), (Some(a), Some(b)) if a < b));
                eligible && ahead
            })
        });
        if better {
            s.violation = Some("granted out of order");
        }
        s.handed_off = true;
    }

    fn grant_reaches(&self, s: &mut State, id: Id, granted: bool) {
        let c = client_of(id);
        // A grant carries its lease's expiry: one that arrives after it (its replica was paused
        // or cut for a lease TTL) is not started but released.
        let expired = !s.store.leases.get(&id).is_some_and(|l| l.live);
        if granted && self.stop_unrenewed && expired && s.clients.get(c) == Some(&Phase::Waiting) {
            s.clients[c] = Phase::Stopped;
            self.script(s, |p, st, out| {
                st.release(p, id, out);
            });
            return;
        }
        if s.clients.get(c) == Some(&Phase::Waiting) {
            s.clients[c] = if granted {
                Phase::Running
            } else {
                Phase::Refused
            };
        }
    }

    /// The fair, fault-free future of a state: delivered messages, heartbeats, every request
    /// finishing; time passes only if a fault happened (slots of a crashed replica come back by
    /// expiry). It must end with every client answered (served, or timed out if Redis had lost its
    /// waiter), every waiter Redis held served, and no slot held.
    pub fn drains(&self, from: &State) -> bool {
        let mut s = from.clone();
        s.previous = None;
        let faulted = s.faults_left < self.fault_budget;
        // Waiters Redis still holds as they are (queued with their record and a live replica, or
        // granted a lease still live) must be served; the others can only time out or be refused.
        let must_serve: Vec<bool> = (0..self.clients.len())
            .map(|c| {
                let id = id_of(c);
                let st = &s.store;
                let queued = st.queues.iter().flatten().any(|w| {
                    w.id == id
                        && st.records.contains(&id)
                        && st.replicas.get(&w.replica) == Some(&true)
                });
                let granted = st.leases.get(&id).is_some_and(|l| l.live);
                s.clients[c] == Phase::Waiting && (queued || granted)
            })
            .collect();
        for r in 0..self.replicas {
            match s.up[usize::from(r)] {
                Up::Cut => s.up[usize::from(r)] = Up::Up,
                Up::Crashed => self.restart(&mut s, r),
                Up::Up => {}
            }
        }
        for _round in 0..(4 * self.clients.len() + 8) {
            let snapshot = s.clone();
            for i in (0..s.inbox.len()).rev() {
                self.deliver(&mut s, i);
            }
            for r in 0..self.replicas {
                if s.must_register[usize::from(r)] {
                    self.register(&mut s, r);
                }
            }
            for c in 0..self.clients.len() {
                if s.clients[c] == Phase::Running {
                    self.finish(&mut s, c);
                }
            }
            for r in 0..self.replicas {
                self.heartbeat(&mut s, r);
            }
            // A waiter Redis no longer knows (lost with its state) can only time out.
            for c in 0..self.clients.len() {
                let id = id_of(c);
                let known = s.store.queues.iter().flatten().any(|w| w.id == id)
                    || s.store.leases.contains_key(&id)
                    || s.inbox.iter().any(|(_, m)| *m == Msg::Grant(id));
                if s.clients[c] == Phase::Waiting && !known {
                    self.give_up(&mut s, c);
                }
            }
            s.previous = None;
            if s == snapshot && faulted {
                self.tick(&mut s);
            }
            if s == snapshot {
                break;
            }
        }
        let answered = s
            .clients
            .iter()
            .all(|p| !matches!(p, Phase::Waiting | Phase::Running));
        let served = (0..self.clients.len()).all(|c| !must_serve[c] || s.clients[c] == Phase::Done);
        answered
            && served
            && s.store.in_use() == 0
            && s.store.queued() == 0
            && s.violation.is_none()
    }

    fn restart(&self, s: &mut State, r: Replica) {
        s.up[usize::from(r)] = Up::Up;
    }

    fn deliver(&self, s: &mut State, i: usize) {
        let (r, m) = s.inbox.remove(i);
        if s.up[usize::from(r)] != Up::Up {
            return;
        }
        match m {
            Msg::Grant(id) => self.grant_reaches(s, id, true),
            Msg::Reset(id) => self.grant_reaches(s, id, false),
        }
    }

    fn register(&self, s: &mut State, r: Replica) {
        let running: Vec<(Id, User, Replica)> = (0..self.clients.len())
            .filter(|&c| self.clients[c].replica == r && s.clients[c] == Phase::Running)
            .map(|c| (id_of(c), self.clients[c].user, r))
            .collect();
        self.script(s, |_, st, _| {
            st.adopt_all(&running);
        });
        s.must_register[usize::from(r)] = false;
    }

    fn finish(&self, s: &mut State, c: usize) {
        s.clients[c] = Phase::Done;
        self.script(s, |p, st, out| {
            st.release(p, id_of(c), out);
        });
    }

    fn give_up(&self, s: &mut State, c: usize) {
        s.clients[c] = Phase::GaveUp;
        let spec = self.clients[c];
        self.script(s, |p, st, out| {
            st.leave(p, id_of(c), spec.class, spec.replica, out);
        });
    }

    fn heartbeat(&self, s: &mut State, r: Replica) {
        if !self.replica_ok(s, r) {
            return;
        }
        let mut grants = Default::default();
        self.script(s, |p, st, out| grants = st.heartbeat(p, r, out));
        for id in grants {
            self.grant_reaches(s, id, true);
        }
    }

    /// A lease TTL can pass only once every replica that is up has had its pushes delivered, its
    /// grants collected and, after Redis lost its state, its requests registered again: it
    /// heartbeats several times per TTL (every heartbeat TTL / 3, with the heartbeat TTL no
    /// longer than the lease TTL), and a push takes far less.
    fn settled(&self, s: &State) -> bool {
        let up = |r: Replica| s.up[usize::from(r)] == Up::Up;
        !s.inbox.iter().any(|(r, _)| up(*r))
            && !(0..self.replicas).any(|r| up(r) && s.must_register[usize::from(r)])
            && !s.store.grants.iter().any(|(r, g)| up(*r) && !g.is_empty())
    }

    fn tick(&self, s: &mut State) {
        if self.stop_unrenewed {
            for (c, spec) in self.clients.iter().enumerate() {
                if s.clients[c] == Phase::Running && s.up[usize::from(spec.replica)] == Up::Cut {
                    s.clients[c] = Phase::Stopped;
                }
            }
        }
        let renewed = |c: usize| {
            s.clients[c] == Phase::Running && s.up[usize::from(self.clients[c].replica)] == Up::Up
        };
        let stale: Vec<Id> = s
            .store
            .leases
            .iter()
            .filter(|(id, l)| l.live && !renewed(client_of(**id)))
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            s.store.expire_lease(id);
        }
        for r in 0..self.replicas {
            if s.up[usize::from(r)] != Up::Up {
                s.store.expire_replica(r);
            }
        }
        let waiting = |c: usize| {
            s.clients[c] == Phase::Waiting && s.up[usize::from(self.clients[c].replica)] == Up::Up
        };
        let orphans: Vec<Id> = s
            .store
            .records
            .iter()
            .filter(|id| !waiting(client_of(**id)))
            .copied()
            .collect();
        for id in orphans {
            s.store.expire_record(id);
        }
    }

    fn redis_lost_state(&self, s: &mut State, store: Store) {
        s.store = store;
        s.inbox.clear();
        s.previous = None;
        for r in 0..self.replicas {
            s.must_register[usize::from(r)] = s.up[usize::from(r)] != Up::Crashed;
        }
    }
}

impl Model for System {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![State {
            store: Store::new(&self.params),
            clients: vec![Phase::Idle; self.clients.len()],
            up: vec![Up::Up; usize::from(self.replicas)],
            inbox: Vec::new(),
            must_register: vec![false; usize::from(self.replicas)],
            previous: None,
            faults_left: self.fault_budget,
            violation: None,
            granted_after_leaving: false,
            handed_off: false,
            reset_done: false,
        }]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        if s.violation.is_some() {
            return;
        }
        for (c, spec) in self.clients.iter().enumerate() {
            let ok = self.replica_ok(s, spec.replica);
            match s.clients[c] {
                Phase::Idle if ok && Self::admitting(s) => actions.push(Action::Arrive(c)),
                Phase::Running if s.up[usize::from(spec.replica)] == Up::Up => {
                    actions.push(Action::Finish(c));
                }
                Phase::Waiting if s.up[usize::from(spec.replica)] == Up::Up => {
                    actions.push(Action::GiveUp(c));
                }
                _ => {}
            }
        }
        for i in 0..s.inbox.len() {
            if i == 0 || s.inbox[i] != s.inbox[i - 1] {
                actions.push(Action::Deliver(i));
            }
        }
        for r in 0..self.replicas {
            if self.replica_ok(s, r) {
                actions.push(Action::Heartbeat(r));
            }
            if s.up[usize::from(r)] == Up::Up && s.must_register[usize::from(r)] {
                actions.push(Action::Register(r));
            }
            match s.up[usize::from(r)] {
                Up::Crashed => actions.push(Action::Restart(r)),
                Up::Cut => actions.push(Action::Heal(r)),
                Up::Up => {}
            }
        }
        if self.settled(s) {
            actions.push(Action::Tick);
        }
        if self.admin_reset && !s.reset_done && s.store.queued() > 0 {
            actions.push(Action::AdminReset);
        }
        if s.faults_left == 0 {
            return;
        }
        let f = self.faults;
        for r in 0..self.replicas {
            if s.up[usize::from(r)] == Up::Up {
                if f.crash {
                    actions.push(Action::Crash(r));
                }
                if f.cut {
                    actions.push(Action::Cut(r));
                }
            }
        }
        if f.lose_message {
            for i in 0..s.inbox.len() {
                actions.push(Action::Lose(i));
            }
        }
        if f.restart_empty {
            actions.push(Action::RestartEmpty);
        }
        if f.failover && s.previous.is_some() {
            actions.push(Action::Failover);
        }
        if f.record_expiry {
            for c in 0..self.clients.len() {
                if s.store.records.contains(&id_of(c)) {
                    actions.push(Action::ExpireRecord(c));
                }
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        match action {
            Action::Arrive(c) => {
                let spec = self.clients[c];
                let w = Waiter {
                    id: id_of(c),
                    user: spec.user,
                    replica: spec.replica,
                };
                let mut entered = Entered::Full;
                self.script(&mut s, |p, st, out| {
                    entered = st.enter(p, w, spec.class, out)
                });
                s.clients[c] = match entered {
                    Entered::Granted => Phase::Running,
                    Entered::Queued(_) => Phase::Waiting,
                    Entered::Full | Entered::UserFull => Phase::Refused,
                };
            }
            Action::Finish(c) => self.finish(&mut s, c),
            Action::GiveUp(c) => self.give_up(&mut s, c),
            Action::Deliver(i) => self.deliver(&mut s, i),
            Action::Heartbeat(r) => self.heartbeat(&mut s, r),
            Action::Register(r) => self.register(&mut s, r),
            Action::Tick => self.tick(&mut s),
            Action::Lose(i) => {
                s.inbox.remove(i);
            }
            Action::Crash(r) => {
                s.up[usize::from(r)] = Up::Crashed;
                for (c, spec) in self.clients.iter().enumerate() {
                    if spec.replica == r && matches!(s.clients[c], Phase::Waiting | Phase::Running)
                    {
                        s.clients[c] = Phase::Lost;
                    }
                }
                s.inbox.retain(|(to, _)| *to != r);
            }
            Action::Restart(r) => self.restart(&mut s, r),
            Action::Cut(r) => {
                s.up[usize::from(r)] = Up::Cut;
                s.inbox.retain(|(to, _)| *to != r);
            }
            Action::Heal(r) => s.up[usize::from(r)] = Up::Up,
            Action::RestartEmpty => self.redis_lost_state(&mut s, Store::new(&self.params)),
            Action::Failover => {
                let previous = s.previous.clone()?;
                self.redis_lost_state(&mut s, previous);
            }
            Action::ExpireRecord(c) => s.store.expire_record(id_of(c)),
            Action::AdminReset => {
                s.reset_done = true;
                self.script(&mut s, |_, st, out| {
                    st.reset(out);
                });
            }
        }
        let fault = matches!(
            action,
            Action::Lose(_)
                | Action::Crash(_)
                | Action::Cut(_)
                | Action::RestartEmpty
                | Action::Failover
                | Action::ExpireRecord(_)
        );
        if fault {
            s.faults_left = s.faults_left.saturating_sub(1);
            if s.faults_left == 0 {
                s.previous = None;
            }
        }
        // A failover can lose the last write: possible only until time passes.
        if matches!(action, Action::Tick | Action::ExpireRecord(_)) {
            s.previous = None;
        }
        (s != *last).then_some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(
                "in flight at the upstream <= global cap",
                |m: &System, s: &State| running(s) <= m.params.global_cap,
            ),
            Property::always("in flight per user <= user cap", |m: &System, s: &State| {
                m.clients.iter().all(|spec| {
                    let u = spec.user;
                    (0..m.clients.len())
                        .filter(|&c| m.clients[c].user == u && s.clients[c] == Phase::Running)
                        .count()
                        <= m.params.user_cap
                })
            }),
            Property::always("strict priority, FIFO in a class", |_, s: &State| {
                s.violation.is_none()
            }),
            Property::always("no waiter granted after it left", |_, s: &State| {
                !s.granted_after_leaving
            }),
            Property::always(
                "with no more faults, every waiter is answered and no slot is lost",
                |m: &System, s: &State| m.drains(s),
            ),
            Property::sometimes("a waiter is granted by a hand-off", |_, s: &State| {
                s.handed_off
            }),
            Property::sometimes("the global cap is reached", |m: &System, s: &State| {
                running(s) == m.params.global_cap
            }),
        ]
    }
}

fn running(s: &State) -> usize {
    s.clients.iter().filter(|p| **p == Phase::Running).count()
}
