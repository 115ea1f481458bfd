//! The bounded liveness check: a state's fair, fault-free future.

use crate::store::Msg;
use crate::system::{Phase, State, System, Up, id_of};

impl System {
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
                Up::Cut => {
                    s.up[usize::from(r)] = Up::Up;
                    self.end_outage(&mut s, r);
                }
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
                if s.must_register[usize::from(r)] || s.rejoin[usize::from(r)] {
                    self.register(&mut s, r);
                }
            }
            for c in 0..self.clients.len() {
                if s.clients[c].runs() {
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
}
