//! How many slots one replica may run on its own while Redis is unreachable, so that the fleet
//! as a whole stays within the global cap although the shared slots granted before the outage
//! are spread unevenly over the replicas and still running (one replica may hold 15 of 20).
//!
//! The rule. Redis keeps the most slots in use fleet-wide at once per heartbeat period
//! (`note_peak` in `admission_lib.lua`); every heartbeat reads the peak of the last three periods
//! or more. When the outage begins a replica fixes, from that peak `P`, what it runs then (`h`)
//! and the `n` live replicas,
//!
//! ```text
//! limit = min(share, h + floor((cap - max(P, h)) / n))
//! ```
//!
//! and admits locally only while everything it runs (shared slots of before and local ones) is
//! below `limit`: it keeps what it runs and adds at most an n-th of the room the fleet left free
//! even at its busiest.
//!
//! Why the sum stays within the cap. During the outage no shared slot is granted, so each
//! replica's shared slots only end; a local grant brings its count to `limit` at most. So at any
//! moment replica `i` runs at most `max(h_i, limit_i) <= h_i + floor((cap - P_i) / n)`. With
//! `H = sum of h_i` the fleet's count when the outage began and `P_i >= H` for every replica
//! (below), the fleet runs at most `H + n * floor((cap - H) / n) <= cap`.
//!
//! What it assumes: `P_i >= H`, the fleet did not run more at the outage's start than at its
//! busiest of the periods its last heartbeat saw. It fails only if the fleet climbed to a new
//! peak between a replica's last heartbeat (every `heartbeat_ttl / 3`) and the outage, and then
//! by at most that climb (nothing when the fleet was at its cap, or had been within the last
//! three heartbeat TTLs). A peak rather than the count of the moment: the count of a busy fleet
//! dips between one request's end and the next one's grant, and a replica's heartbeat seeing
//! such a dip would hand out room the fleet fills again before the outage (seen in the fleet
//! test: 22 LLM calls at once under a cap of 20). Also assumed, as for the shares themselves:
//! the registry's replica count is the fleet's.
//!
//! That rule is safe only if nobody reaches Redis. In a partition of some replicas the others go
//! on admitting by Redis's counts, which hold none of the cut replicas' local grants: a cut
//! replica of an idle fleet would add its whole share over a full cap. So under the safety
//! policy a replica that reached Redis uses `min(share, counted)` instead, `counted` being its
//! slots Redis counts (shared permits, local slots a recovery registered): a local grant only
//! stands in the room of one of them that ended, whose lease is left to expire rather than
//! released, and only while the replica's last contact vouches that Redis still counts it
//! (`local_queue.rs` keeps this per user too). The admission model checks both rules.
//!
//! The cost: a replica that held little when the outage began stays small for the whole outage,
//! even after the others' shared slots end, because nothing tells it they did. A fleet that was
//! idle runs its full shares; one that was busy runs what each replica held, each at most its
//! share. A replica that never reached Redis knows nothing of the others: it uses its share.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// This replica's view of the fleet's recent peak, and its limit during an outage.
#[derive(Debug, Default)]
pub(crate) struct OutageCap {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The fleet's recent peak of slots in use, as the last heartbeat read it; `None` before the
    /// first heartbeat answered.
    peak: Option<u32>,
    /// The limit fixed when the outage began; `None` while admission goes through Redis.
    limit: Option<u32>,
    /// When the last heartbeat that Redis answered was sent (this replica's monotonic clock).
    contact: Option<Instant>,
}

impl OutageCap {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A heartbeat sent at `sent` read the fleet's recent peak of slots in use.
    pub(crate) fn observe(&self, peak: u32, sent: Instant) {
        let mut st = self.state();
        st.peak = Some(peak);
        st.contact = Some(st.contact.map_or(sent, |c| c.max(sent)));
    }

    /// Until when this replica's slots are surely still counted in Redis, whatever cut it off:
    /// every lease renews each third of `lease_ttl`, so at the last contact each had been renewed
    /// within a third of it and lives two thirds of it longer at least; less a tenth of the TTL
    /// for the drift between this clock and Redis's. `None` if Redis never answered (nothing of
    /// this replica is counted there; the local limit alone applies).
    pub(crate) fn counted_until(&self, lease_ttl: Duration) -> Option<Instant> {
        let c = self.state().contact?;
        Some(c + lease_ttl * 2 / 3 - crate::lease::drift_margin(lease_ttl))
    }

    /// The outage begins with this replica running `own`: fixes and returns its limit. Redis
    /// lost again while recovering from an outage keeps the lower of the two limits: the counts
    /// Redis gave meanwhile miss what replicas still degraded run unregistered.
    /// `counted`: under the safety policy, the slots Redis counts for this replica; the limit is
    /// then `min(share, counted)`, safe in a partition of this replica too (see the module doc).
    pub(crate) fn begin(
        &self,
        global_cap: u32,
        share: u32,
        replicas: u32,
        own: u32,
        counted: Option<u32>,
    ) -> u32 {
        let mut st = self.state();
        let new = match counted {
            Some(counted) => share.min(counted),
            None => limit(global_cap, share, replicas, st.peak, own),
        };
        let limit = st.limit.map_or(new, |old| old.min(new));
        st.limit = Some(limit);
        limit
    }

    /// Shared admission resumed: the shares alone apply until the next outage begins.
    pub(crate) fn end(&self) {
        self.state().limit = None;
    }

    /// The fleet's recent peak as the last heartbeat read it.
    pub(crate) fn peak(&self) -> Option<u32> {
        self.state().peak
    }

    /// The limit in force, if an outage began and shared admission has not resumed.
    pub(crate) fn limit(&self) -> Option<u32> {
        self.state().limit
    }
}

/// `min(share, own + floor((cap - max(peak, own)) / replicas))`; the share alone when the peak is
/// unknown (see the module doc).
fn limit(global_cap: u32, share: u32, replicas: u32, peak: Option<u32>, own: u32) -> u32 {
    let Some(peak) = peak else {
        return share;
    };
    let room = global_cap.saturating_sub(peak.max(own));
    share.min(own.saturating_add(room / replicas.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way of spreading up to `cap` running slots over three replicas, with any peak at
    /// least their sum: the limits never let the fleet run more than the cap.
    #[test]
    fn the_fleet_total_never_exceeds_the_cap() {
        let (cap, n) = (20, 3);
        let share = cap / n;
        for a in 0..=cap {
            for b in 0..=cap - a {
                for c in 0..=cap - a - b {
                    let held = [a, b, c];
                    for peak in a + b + c..=cap {
                        let total: u32 = held
                            .iter()
                            .map(|&h| h.max(limit(cap, share, n, Some(peak), h)))
                            .sum();
                        assert!(total <= cap, "{held:?} (peak {peak}) can reach {total}");
                    }
                }
            }
        }
    }

    #[test]
    fn an_idle_fleet_keeps_its_shares_and_a_busy_one_what_it_held() {
        assert_eq!(limit(20, 6, 3, Some(0), 0), 6);
        assert_eq!(limit(20, 6, 3, None, 4), 6);
        // 15 + 2 + 3 running: nobody adds anything.
        assert_eq!(limit(20, 6, 3, Some(20), 15), 6);
        assert_eq!(limit(20, 6, 3, Some(20), 2), 2);
        assert_eq!(limit(20, 6, 3, Some(20), 3), 3);
        // 8 + 1 + 0 of 12: one more each for the two light ones.
        assert_eq!(limit(12, 4, 3, Some(9), 1), 2);
        assert_eq!(limit(12, 4, 3, Some(9), 0), 1);
    }
}
