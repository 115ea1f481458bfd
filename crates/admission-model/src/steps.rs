//! What each step of the fleet does: script calls through a replica, deliveries, time passing,
//! Redis losing its state; and the observer's check of every grant a dispatch makes.

use crate::store::{Id, Msg, Params, Published, Replica, Store, User};
use crate::system::{Phase, State, System, Up, client_of, id_of};

impl System {
    pub(crate) fn replica_ok(&self, s: &State, r: Replica) -> bool {
        s.up[usize::from(r)] == Up::Up
            && !s.must_register[usize::from(r)]
            && !s.rejoin[usize::from(r)]
    }

    pub(crate) fn admitting(s: &State) -> bool {
        !s.must_register.iter().any(|m| *m)
    }

    /// Runs one script step, then checks what it granted: the upstream observer's rules for
    /// hand-offs (strict priority, FIFO within a class, never to a waiter that left).
    pub(crate) fn script(
        &self,
        s: &mut State,
        f: impl FnOnce(&Params, &mut Store, &mut Vec<Published>),
    ) {
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
        if self.local_admission.is_some() {
            let n = u8::try_from(s.store.in_use()).unwrap_or(u8::MAX);
            s.peak = s.peak.max(n);
        }
        if self.faults.failover && s.faults_left > 0 {
            s.previous = Some(before);
        }
    }

    /// A waiter was just granted by a dispatch. Its client must still be waiting (a waiter whose
    /// replica crashed is no exception: nothing told Redis). No waiter still queued may have had
    /// a better claim: queued before the step, in a higher class or earlier in the same class,
    /// with room under its user cap, its record and its replica live.
    pub(crate) fn check_grant(&self, s: &mut State, before: &Store, id: Id) {
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

    pub(crate) fn grant_reaches(&self, s: &mut State, id: Id, granted: bool) {
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
    pub(crate) fn restart(&self, s: &mut State, r: Replica) {
        s.up[usize::from(r)] = Up::Up;
    }

    pub(crate) fn deliver(&self, s: &mut State, i: usize) {
        let (r, m) = s.inbox.remove(i);
        if s.up[usize::from(r)] != Up::Up {
            return;
        }
        match m {
            Msg::Grant(id) => self.grant_reaches(s, id, true),
            Msg::Reset(id) => self.grant_reaches(s, id, false),
        }
    }

    /// Registers what replica `r` runs: after Redis lost its state, or after its own outage
    /// (then also releasing again what ended meanwhile, see `degraded.rs`).
    pub(crate) fn register(&self, s: &mut State, r: Replica) {
        if s.rejoin[usize::from(r)] && !s.must_register[usize::from(r)] {
            self.rejoin(s, r);
            return;
        }
        s.rejoin[usize::from(r)] = false;
        let running: Vec<(Id, User, Replica)> = (0..self.clients.len())
            .filter(|&c| self.clients[c].replica == r && s.clients[c].runs())
            .map(|c| (id_of(c), self.clients[c].user, r))
            .collect();
        self.script(s, |_, st, _| {
            st.adopt_all(&running);
        });
        for c in 0..self.clients.len() {
            if self.clients[c].replica == r && s.clients[c] == Phase::RunningLocal {
                s.clients[c] = Phase::Running;
            }
        }
        s.must_register[usize::from(r)] = false;
    }

    pub(crate) fn finish(&self, s: &mut State, c: usize) {
        s.clients[c] = Phase::Done;
        self.script(s, |p, st, out| {
            st.release(p, id_of(c), out);
        });
    }

    pub(crate) fn give_up(&self, s: &mut State, c: usize) {
        s.clients[c] = Phase::GaveUp;
        let spec = self.clients[c];
        self.script(s, |p, st, out| {
            st.leave(p, id_of(c), spec.class, spec.replica, out);
        });
    }

    pub(crate) fn heartbeat(&self, s: &mut State, r: Replica) {
        if !self.replica_ok(s, r) {
            return;
        }
        let mut grants = Default::default();
        self.script(s, |p, st, out| grants = st.heartbeat(p, r, out));
        if self.local_admission.is_some() {
            s.contact[usize::from(r)] = true;
            s.seen_peak[usize::from(r)] = Some(s.peak);
        }
        for id in grants {
            self.grant_reaches(s, id, true);
        }
    }

    /// A lease TTL can pass only once every replica that is up has had its pushes delivered, its
    /// grants collected and, after Redis lost its state, its requests registered again: it
    /// heartbeats several times per TTL (every heartbeat TTL / 3, with the heartbeat TTL no
    /// longer than the lease TTL), and a push takes far less.
    pub(crate) fn settled(&self, s: &State) -> bool {
        let up = |r: Replica| s.up[usize::from(r)] == Up::Up;
        !s.inbox.iter().any(|(r, _)| up(*r))
            && !(0..self.replicas)
                .any(|r| up(r) && (s.must_register[usize::from(r)] || s.rejoin[usize::from(r)]))
            && !s.store.grants.iter().any(|(r, g)| up(*r) && !g.is_empty())
    }

    pub(crate) fn tick(&self, s: &mut State) {
        self.outage_tick(s);
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
        if self.local_admission.is_some() {
            s.peak = u8::try_from(s.store.in_use()).unwrap_or(u8::MAX);
        }
    }

    pub(crate) fn redis_lost_state(&self, s: &mut State, store: Store) {
        s.store = store;
        s.inbox.clear();
        s.previous = None;
        for r in 0..self.replicas {
            s.must_register[usize::from(r)] = s.up[usize::from(r)] != Up::Crashed;
        }
    }
}
