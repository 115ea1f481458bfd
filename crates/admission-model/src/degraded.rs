//! Degraded mode: a replica cut from Redis admits on its own, from its local limit, and registers
//! what it ran that way once Redis answers it again (limiter-core's `admission/{degraded,local,
//! outage,revocation,recovery}.rs`).
//!
//! - The limit is fixed as the outage begins, from what the replica runs then (`own`), the
//!   fleet's recent peak of slots in use as its last heartbeat read it, and the replicas in the
//!   registry: `min(share, own + (cap - max(peak, own)) / n)`, `share = max(1, cap / n)`; the
//!   share alone if no heartbeat ever answered. Per user, `max(1, user cap / n)`. Everything the
//!   replica runs (shared permits of before, local ones) counts against both.
//! - Under the safety policy ([`System::stop_unrenewed`]) it admits only while its last contact
//!   with Redis vouches for its slots there (the service: two thirds of the lease TTL after its
//!   last answered heartbeat, less a drift margin), and stops its local permits when that ends
//!   (a timer): here, until the next `Tick`. A replica that never reached Redis has nothing
//!   counted there; the service does not bound it in time, nor does the model.
//! - Under the availability policy it admits for the whole outage and nothing is stopped.
//! - Recovery: once healed, before any other script call, it registers everything it runs
//!   (`admission_adopt all`: local permits and shared ones, whose leases may have expired) and
//!   releases again the permits that ended while it was cut (their release never arrived).
//!
//! Not modelled: the local queue (a local admission that finds no room is refused), waiters
//! queued in Redis moving to it (they stay queued there), and the recovering phase in which a
//! local grant is registered against the shared caps before it runs (here the replica admits
//! through Redis as soon as it registered).

use crate::store::Replica;
use crate::system::{ClientSpec, Phase, State, System, Up, id_of};

/// How a cut replica fixes its local limit as its outage begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LocalLimit {
    /// The service's rule under the availability policy: `min(share, own + (cap - max(peak,
    /// own)) / n)`. Safe when no replica reaches Redis (nobody admits there meanwhile); in a
    /// partition of one replica the others go on admitting by Redis's counts, which do not hold
    /// its local grants.
    Outage,
    /// The service's rule under the safety policy: only what it ran as the outage began,
    /// `min(share, own)`: a local grant only takes the room of one of its own requests that
    /// ended, whose lease Redis still counts (the service also keeps this per user).
    Held,
}

/// Deliberate bugs in degraded mode, to show that the checks catch them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LocalFlaw {
    /// The safety policy without its time bound: local admission goes on, and local permits
    /// run on, after the replica's contact no longer vouches for its slots.
    NoTimeBound,
}

/// One replica's outage, fixed as it begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Outage {
    /// Most requests it may run (shared permits of before and local ones).
    pub limit: u8,
    /// Most requests of one user it may run.
    pub user_limit: u8,
    /// Its last contact with Redis still vouches for its slots there (safety), or nothing does
    /// because it never had one (`None`: no time bound).
    pub vouched: Option<bool>,
}

impl System {
    /// The replica's registry count as its last heartbeat read it: replicas with a live
    /// heartbeat, itself included.
    fn registry_count(&self, s: &State, r: Replica) -> usize {
        let live = s.store.replicas.values().filter(|l| **l).count();
        let counted = s.store.replicas.get(&r).copied().unwrap_or(false);
        (live + usize::from(!counted)).max(1)
    }

    /// Requests replica `r` runs (`user`: of that user only).
    pub(crate) fn runs_on(&self, s: &State, r: Replica, user: Option<u8>) -> usize {
        self.clients
            .iter()
            .enumerate()
            .filter(|(c, spec)| {
                spec.replica == r
                    && user.is_none_or(|u| spec.user == u)
                    && matches!(s.clients[*c], Phase::Running | Phase::RunningLocal)
            })
            .count()
    }

    /// Replica `r` is cut from Redis: with local admission, its outage begins.
    pub(crate) fn begin_outage(&self, s: &mut State, r: Replica) {
        let Some(rule) = self.local_admission else {
            return;
        };
        let n = self.registry_count(s, r);
        let cap = self.params.global_cap;
        let share = (cap / n).max(1);
        let own = self.runs_on(s, r, None);
        let limit = match (rule, s.seen_peak[usize::from(r)]) {
            (LocalLimit::Held, _) => share.min(own),
            (LocalLimit::Outage, None) => share,
            (LocalLimit::Outage, Some(peak)) => {
                share.min(own + cap.saturating_sub(usize::from(peak).max(own)) / n)
            }
        };
        let user_limit = (self.params.user_cap / n).max(1);
        // Its waiters queued in Redis: under availability a grant that reaches one after its
        // lease expired is started all the same.
        let waiting = (0..self.clients.len())
            .filter(|&c| self.clients[c].replica == r && s.clients[c] == Phase::Waiting)
            .count();
        let bound = u8::try_from(own.max(limit) + waiting).unwrap_or(u8::MAX);
        s.overshoot_bound = s.overshoot_bound.max(bound);
        s.outage[usize::from(r)] = Some(Outage {
            limit: u8::try_from(limit).unwrap_or(u8::MAX),
            user_limit: u8::try_from(user_limit).unwrap_or(u8::MAX),
            vouched: s.contact[usize::from(r)].then_some(true),
        });
    }

    fn time_bound(&self) -> bool {
        self.stop_unrenewed && self.local_flaw != Some(LocalFlaw::NoTimeBound)
    }

    /// Whether client `c`, idle, may be admitted locally by its cut replica now.
    pub(crate) fn may_admit_locally(&self, s: &State, c: usize) -> bool {
        let spec: ClientSpec = self.clients[c];
        let r = spec.replica;
        let Some(o) = s.outage[usize::from(r)] else {
            return false;
        };
        if s.up[usize::from(r)] != Up::Cut || (self.time_bound() && o.vouched == Some(false)) {
            return false;
        }
        self.runs_on(s, r, None) < usize::from(o.limit)
            && self.runs_on(s, r, Some(spec.user)) < usize::from(o.user_limit)
    }

    /// A lease TTL passes: a cut replica's contact no longer vouches for its slots; under the
    /// safety policy its local permits are stopped (before Redis could have handed their room on).
    pub(crate) fn outage_tick(&self, s: &mut State) {
        for r in 0..self.replicas {
            let Some(o) = s.outage[usize::from(r)].as_mut() else {
                continue;
            };
            if o.vouched == Some(true) {
                o.vouched = Some(false);
            }
            if self.time_bound() && o.vouched == Some(false) {
                for (c, spec) in self.clients.iter().enumerate() {
                    if spec.replica == r && s.clients[c] == Phase::RunningLocal {
                        s.clients[c] = Phase::Stopped;
                    }
                }
            }
        }
    }

    /// Healed: the replica must register what it runs before any other script call.
    pub(crate) fn end_outage(&self, s: &mut State, r: Replica) {
        if s.outage[usize::from(r)].take().is_some() {
            s.rejoin[usize::from(r)] = true;
        }
    }

    /// The recovery's first step: registers everything replica `r` runs (local permits become
    /// shared ones) and releases again the leases of its requests that ended while it was cut
    /// (their release never reached Redis; the service keeps them for a lease TTL to do this).
    pub(crate) fn rejoin(&self, s: &mut State, r: Replica) {
        let mine: Vec<usize> = (0..self.clients.len())
            .filter(|&c| self.clients[c].replica == r)
            .collect();
        let running: Vec<_> = mine
            .iter()
            .filter(|&&c| matches!(s.clients[c], Phase::Running | Phase::RunningLocal))
            .map(|&c| (id_of(c), self.clients[c].user, r))
            .collect();
        let ended: Vec<_> = mine
            .iter()
            .filter(|&&c| {
                matches!(s.clients[c], Phase::Done | Phase::Stopped)
                    && s.store.leases.contains_key(&id_of(c))
            })
            .map(|&c| id_of(c))
            .collect();
        self.script(s, |p, st, out| {
            st.adopt_all(&running);
            for id in ended {
                st.release(p, id, out);
            }
        });
        for c in mine {
            if s.clients[c] == Phase::RunningLocal {
                s.clients[c] = Phase::Running;
            }
        }
        s.rejoin[usize::from(r)] = false;
    }

    /// A request of a cut replica ends: a local permit frees its local room; a shared one's
    /// release cannot reach Redis (its lease stays counted there until it expires, or until the
    /// recovery releases it again).
    pub(crate) fn finish_cut(&self, s: &mut State, c: usize) {
        s.clients[c] = Phase::Done;
    }
}
