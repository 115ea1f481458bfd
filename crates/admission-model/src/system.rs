//! The fleet around the store: replicas calling the scripts for their clients, grants pushed over
//! pub/sub, heartbeats, time passing, and faults. A `stateright` model: every interleaving of
//! these steps, up to the fault budget, is explored.
//!
//! The upstream's view is the independent observer: a client in [`Phase::Running`] is a call
//! running at the upstream, whatever Redis believes.

use stateright::{Model, Property};

use crate::degraded::{LocalFlaw, LocalLimit, Outage};
use crate::store::{Entered, Id, Params, Published, Replica, Store, User, Waiter};

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
    /// reaches it after its lease's expiry: the service under its safety outage policy (what a
    /// partition or pause of any length needs, see `tests/check.rs`); `false` is the
    /// availability policy.
    pub stop_unrenewed: bool,
    /// A cut replica admits on its local limit, fixed by this rule (degraded mode, see
    /// `degraded.rs`), under the policy `stop_unrenewed` says; `None`: a cut replica admits
    /// nothing (a pause).
    pub local_admission: Option<LocalLimit>,
    /// A deliberate bug in degraded mode (never set outside such a check).
    pub local_flaw: Option<LocalFlaw>,
}

/// Where a client's request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    Idle,
    Waiting,
    Running,
    /// Admitted by its replica on its local limit while cut from Redis: nothing in Redis counts
    /// it until the replica registers it after the cut.
    RunningLocal,
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
    /// Per replica, its outage while cut with local admission.
    pub outage: Vec<Option<Outage>>,
    /// Per replica: healed after an outage, it must register what it runs before any other
    /// script call (others go on meanwhile).
    pub rejoin: Vec<bool>,
    /// Per replica: a heartbeat of this process was answered (local admission only).
    pub contact: Vec<bool>,
    /// Per replica: the fleet's recent peak of slots in use, as its last heartbeat read it
    /// (local admission only).
    pub seen_peak: Vec<Option<u8>>,
    /// The most slots in use at once since time last passed (local admission only).
    pub peak: u8,
    /// The most a cut replica ran or was allowed to run during an outage so far: `max(what it
    /// ran as the outage began, its local limit)` plus its waiters then queued in Redis. The
    /// fleet's excess over the cap must stay within it.
    pub overshoot_bound: u8,
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
pub(crate) fn id_of(c: usize) -> Id {
    Id::try_from(c + 1).unwrap_or(Id::MAX)
}

pub(crate) fn client_of(id: Id) -> usize {
    usize::from(id).saturating_sub(1)
}

impl Model for System {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let mut store = Store::new(&self.params);
        if self.local_admission.is_some() {
            // The service heartbeats as it starts: each replica is in the registry and has read
            // the (empty) fleet once (`contact`, `seen_peak`).
            store.replicas = (0..self.replicas).map(|r| (r, true)).collect();
        }
        vec![State {
            store,
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
            outage: vec![None; usize::from(self.replicas)],
            rejoin: vec![false; usize::from(self.replicas)],
            contact: vec![self.local_admission.is_some(); usize::from(self.replicas)],
            seen_peak: vec![self.local_admission.map(|_| 0); usize::from(self.replicas)],
            peak: 0,
            overshoot_bound: 0,
        }]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        if s.violation.is_some() {
            return;
        }
        for (c, spec) in self.clients.iter().enumerate() {
            let ok = self.replica_ok(s, spec.replica);
            let up = s.up[usize::from(spec.replica)];
            match s.clients[c] {
                Phase::Idle if ok && Self::admitting(s) => actions.push(Action::Arrive(c)),
                Phase::Idle if self.may_admit_locally(s, c) => actions.push(Action::Arrive(c)),
                Phase::Running
                    if up == Up::Up || (up == Up::Cut && self.local_admission.is_some()) =>
                {
                    actions.push(Action::Finish(c));
                }
                Phase::RunningLocal if up != Up::Crashed => actions.push(Action::Finish(c)),
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
            if s.up[usize::from(r)] == Up::Up
                && (s.must_register[usize::from(r)] || s.rejoin[usize::from(r)])
            {
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
            Action::Arrive(c) if s.up[usize::from(self.clients[c].replica)] == Up::Cut => {
                s.clients[c] = Phase::RunningLocal;
            }
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
                    Entered::Full | Entered::UserFull | Entered::Withdrawn => Phase::Refused,
                };
            }
            Action::Finish(c) if s.up[usize::from(self.clients[c].replica)] == Up::Cut => {
                self.finish_cut(&mut s, c);
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
                    if spec.replica == r
                        && matches!(
                            s.clients[c],
                            Phase::Waiting | Phase::Running | Phase::RunningLocal
                        )
                    {
                        s.clients[c] = Phase::Lost;
                    }
                }
                s.inbox.retain(|(to, _)| *to != r);
                // A new process: no outage, no contact, no peak seen.
                s.outage[usize::from(r)] = None;
                s.rejoin[usize::from(r)] = false;
                s.contact[usize::from(r)] = false;
                s.seen_peak[usize::from(r)] = None;
            }
            Action::Restart(r) => self.restart(&mut s, r),
            Action::Cut(r) => {
                s.up[usize::from(r)] = Up::Cut;
                s.inbox.retain(|(to, _)| *to != r);
                self.begin_outage(&mut s, r);
            }
            Action::Heal(r) => {
                s.up[usize::from(r)] = Up::Up;
                self.end_outage(&mut s, r);
            }
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
            // How far a cut replica can take the fleet over: what Redis forgets of it, which it
            // ran as its outage began or admitted since up to its local limit, and the grants
            // that reach its waiters late.
            Property::always(
                "in flight at the upstream <= global cap + what a cut replica may run",
                |m: &System, s: &State| {
                    running(s) <= m.params.global_cap + usize::from(s.overshoot_bound)
                },
            ),
            Property::always("in flight per user <= user cap", |m: &System, s: &State| {
                m.clients.iter().all(|spec| {
                    let u = spec.user;
                    (0..m.clients.len())
                        .filter(|&c| m.clients[c].user == u && s.clients[c].runs())
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

/// Requests running at the upstream.
fn running(s: &State) -> usize {
    s.clients.iter().filter(|p| p.runs()).count()
}

impl Phase {
    /// Running at the upstream, whether Redis counts it or not.
    pub fn runs(self) -> bool {
        matches!(self, Phase::Running | Phase::RunningLocal)
    }
}
