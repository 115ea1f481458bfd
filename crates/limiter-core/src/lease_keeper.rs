//! [`LeaseKeeper`]: starts the renewal of leases still held one tick after their grant.
//!
//! A lease renews every TTL/3 and reports loss at the end of its lifetime, each by a timer of a
//! task of its own. Most admission leases end within milliseconds, long before either fires, yet
//! spawning that task and arming its timers woke the runtime's other threads on every grant. A
//! keeper starts renewal tasks once per tick, for the leases still held then. The tick is at most
//! TTL/6 (and 250 ms), so the first renewal (TTL/3 after the grant) and the loss timer (about one TTL after it)
//! fire on the grant's own schedule.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use crate::lease::LeaseShared;

/// Leases granted since the last tick (see the module docs).
pub(crate) struct LeaseKeeper {
    pending: Mutex<Vec<Weak<LeaseShared>>>,
    tick: Duration,
}

impl std::fmt::Debug for LeaseKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseKeeper")
            .field("tick", &self.tick)
            .finish()
    }
}

impl LeaseKeeper {
    /// A keeper for leases of `lease_ttl`: a tick of TTL/6, at most 250 ms (a dropped lease's
    /// allocation stays until the tick that forgets it).
    pub(crate) fn new(lease_ttl: Duration) -> Self {
        LeaseKeeper {
            pending: Mutex::new(Vec::new()),
            tick: (lease_ttl / 6).clamp(Duration::from_millis(1), Duration::from_millis(250)),
        }
    }

    /// Its renewal starts at the next tick, if the lease is still held then.
    pub(crate) fn defer(&self, lease: &Arc<LeaseShared>) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(lease));
    }

    /// Starts the renewal of every lease deferred so far that is still held.
    fn start_pending(&self) {
        let pending =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        for lease in pending.iter().filter_map(Weak::upgrade) {
            lease.start_deferred_renewer();
        }
    }

    /// Ticks until nobody else holds the keeper (then nobody can defer to it any more).
    pub(crate) async fn run(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(self.tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.start_pending();
            if Arc::strong_count(&self) == 1 {
                return;
            }
        }
    }
}
