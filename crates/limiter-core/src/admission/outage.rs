//! How many slots one replica may run on its own while Redis is unreachable, so that the fleet
//! as a whole stays within the global cap although the shared slots granted before the outage
//! are spread unevenly over the replicas and still running (one replica may hold 15 of 20).
//!
//! The rule. At every heartbeat a replica reads the slots in use fleet-wide and takes the others'
//! part of them: `others = in_use - own`, with `own` the lowest count this replica ran at any
//! moment of the heartbeat's round trip (so `others` is never counted low). When the outage
//! begins it fixes, from its own count `h` then and `n` live replicas,
//!
//! ```text
//! limit = min(share, h + floor((cap - (others + h)) / n))
//! ```
//!
//! and admits locally only while everything it runs (shared slots of before and local ones) is
//! below `limit`: it keeps what it runs and adds at most an n-th of the room left fleet-wide.
//!
//! Why the sum stays within the cap. During the outage no shared slot is granted, so each
//! replica's shared slots only end; a local grant brings its count to `limit` at most. So at any
//! moment replica `i` runs at most `max(h_i, limit_i) <= h_i + floor((cap - H) / n)`, where
//! `H = sum of h_i <= cap` (Redis granted them) and `others_i + h_i >= H` (others counted high).
//! Summed over the `n` replicas: at most `H + n * floor((cap - H) / n) <= cap`.
//!
//! What it assumes: `others` is as of the last heartbeat (every `heartbeat_ttl / 3`); slots the
//! other replicas gained between that heartbeat and the outage are not in it, and the fleet can
//! exceed the cap by at most those (none when the fleet was at its cap, which is when an outage
//! matters). And the registry's replica count is the fleet's, as for the shares themselves.
//!
//! The cost: a replica that held little when the outage began stays small for the whole outage,
//! even after the others' shared slots end, because nothing tells it they did. A fleet that was
//! idle runs its full shares; one that was full runs what each replica held, each at most its
//! share. A replica that never reached Redis knows nothing of the others: it uses its share.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// This replica's view of the fleet's slots, and its limit during an outage.
#[derive(Debug, Default)]
pub(crate) struct OutageCap {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Slots the other replicas held at the last heartbeat (counted high); `None` before the
    /// first heartbeat answered.
    others: Option<u32>,
    /// The limit fixed when the outage began; `None` while admission goes through Redis.
    limit: Option<u32>,
}

impl OutageCap {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A heartbeat saw `in_use` slots fleet-wide while this replica ran at least `own_low`.
    pub(crate) fn observe(&self, in_use: u32, own_low: u32) {
        self.state().others = Some(in_use.saturating_sub(own_low));
    }

    /// The outage begins with this replica running `own`: fixes and returns its limit. Redis
    /// lost again while recovering from an outage keeps the lower of the two limits: the counts
    /// Redis gave meanwhile miss what replicas still degraded run unregistered.
    pub(crate) fn begin(&self, global_cap: u32, share: u32, replicas: u32, own: u32) -> u32 {
        let mut st = self.state();
        let new = limit(global_cap, share, replicas, st.others, own);
        let limit = st.limit.map_or(new, |old| old.min(new));
        st.limit = Some(limit);
        limit
    }

    /// Shared admission resumed: the shares alone apply to the next outage's start.
    pub(crate) fn end(&self) {
        self.state().limit = None;
    }

    /// The limit in force, if an outage began and shared admission has not resumed.
    pub(crate) fn limit(&self) -> Option<u32> {
        self.state().limit
    }
}

/// `min(share, own + floor((cap - (others + own)) / replicas))`; the share alone when the others
/// are unknown (see the module doc).
fn limit(global_cap: u32, share: u32, replicas: u32, others: Option<u32>, own: u32) -> u32 {
    let Some(others) = others else {
        return share;
    };
    let room = global_cap.saturating_sub(others.saturating_add(own));
    share.min(own.saturating_add(room / replicas.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way of spreading up to `cap` running slots over three replicas: the limits never
    /// let the fleet run more than the cap, whatever each replica's share.
    #[test]
    fn the_fleet_total_never_exceeds_the_cap() {
        let (cap, n) = (20, 3);
        let share = cap / n;
        for a in 0..=cap {
            for b in 0..=cap - a {
                for c in 0..=cap - a - b {
                    let held = [a, b, c];
                    let total: u32 = held
                        .iter()
                        .map(|&h| {
                            let others = held.iter().sum::<u32>() - h;
                            h.max(limit(cap, share, n, Some(others), h))
                        })
                        .sum();
                    assert!(total <= cap, "{held:?} can reach {total}");
                }
            }
        }
    }

    #[test]
    fn an_idle_fleet_keeps_its_shares_and_a_full_one_what_it_held() {
        assert_eq!(limit(20, 6, 3, Some(0), 0), 6);
        assert_eq!(limit(20, 6, 3, None, 4), 6);
        // 15 + 2 + 3 running: nobody adds anything.
        assert_eq!(limit(20, 6, 3, Some(5), 15), 6);
        assert_eq!(limit(20, 6, 3, Some(18), 2), 2);
        assert_eq!(limit(20, 6, 3, Some(17), 3), 3);
        // 8 + 1 + 0 of 12: one more each for the two light ones.
        assert_eq!(limit(12, 4, 3, Some(8), 1), 2);
        assert_eq!(limit(12, 4, 3, Some(9), 0), 1);
    }
}
