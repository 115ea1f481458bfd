//! [`Permit`]: a granted slot, renewed while held and released when dropped.

use std::sync::Arc;
use std::time::Duration;

use super::class::Class;
use super::local::Local;
use super::local_queue::LocalSlot;
use super::released::Released;
use super::revocation::Revocation;
use crate::{Lease, LimiterError};

/// A granted slot. Renews itself while held; released when dropped, which hands the slot to the
/// next eligible waiter anywhere in the fleet.
///
/// If its slot may no longer be counted in Redis (its lease lost: Redis unreachable past the
/// lease's lifetime, or the lease removed), the holder is told through [`Permit::revocation`]:
/// under the safety outage policy it should stop, since the slot may already be someone else's;
/// under the availability policy the revocation never comes and the request runs on. Either way
/// the lease keeps renewing, so a recovery that registers it again counts it once more.
#[derive(Debug)]
pub struct Permit {
    pub(crate) held: Held,
    pub(crate) class: Class,
    pub(crate) queued: Duration,
    pub(crate) position_at_entry: u32,
    pub(crate) entered_at_ms: i64,
    pub(crate) granted_at_ms: i64,
    pub(crate) revocation: Revocation,
}

impl Permit {
    /// When the request holding this permit must stop (see [`Revocation`]).
    pub fn revocation(&self) -> Revocation {
        self.revocation.clone()
    }

    /// Redis time (ms) at which the request entered: joined the queue, or was granted at once
    /// (0 for a permit granted locally while Redis was unreachable).
    pub fn entered_at_ms(&self) -> i64 {
        self.entered_at_ms
    }

    /// Redis time (ms) of the grant: the fleet-wide order of grants (0 for a local permit).
    pub fn granted_at_ms(&self) -> i64 {
        self.granted_at_ms
    }

    /// Time spent waiting before the grant (zero if a slot was free).
    pub fn queued(&self) -> Duration {
        self.queued
    }

    /// Queue position at entry (0 if never queued).
    pub fn position_at_entry(&self) -> u32 {
        self.position_at_entry
    }

    /// The class it was admitted in.
    pub fn class(&self) -> Class {
        self.class
    }

    /// The Redis lease (id, fencing token, loss notification); `None` for a permit granted
    /// locally while Redis was unreachable.
    pub fn lease(&self) -> Option<&Lease> {
        match &self.held {
            Held::Shared(hold) => hold.lease.as_ref(),
            Held::Local(_) => None,
        }
    }

    /// Whether this permit was granted in degraded mode (local share of the caps).
    pub fn is_local(&self) -> bool {
        matches!(self.held, Held::Local(_))
    }

    /// Releases now. For a shared permit, waits for Redis to confirm; `Ok(true)` if it was held.
    pub async fn release(self) -> Result<bool, LimiterError> {
        match self.held {
            Held::Shared(mut hold) => {
                let Some(lease) = hold.lease.take() else {
                    return Ok(false);
                };
                if hold.counted.end() {
                    lease.abandon();
                    return Ok(true);
                }
                lease.release().await
            }
            Held::Local(local) => {
                drop(local);
                Ok(true)
            }
        }
    }
}

/// How a permit is held.
#[derive(Debug)]
pub(crate) enum Held {
    /// Granted by Redis: its lease, and its place in the local count.
    Shared(SharedHold),
    /// Granted from the local share.
    Local(LocalPermit),
}

/// A shared permit's lease and its place in the local count. Dropped while the replica, cut off
/// from Redis, reuses the slots Redis still counts for it, the lease is abandoned rather than
/// released: a local grant may already stand in its room.
#[derive(Debug)]
pub(crate) struct SharedHold {
    pub(crate) lease: Option<Lease>,
    pub(crate) counted: SharedCounted,
}

impl Drop for SharedHold {
    fn drop(&mut self) {
        // Ended in the local count first: the answer and the decrement share one lock, so no
        // local grant can take the room of a lease that is being released.
        let reuse = self.counted.end();
        if let Some(lease) = self.lease.take()
            && reuse
        {
            lease.abandon();
        }
    }
}

/// Records a shared permit in the local state while it runs (see `Local::shared_taken`).
#[derive(Debug)]
pub(crate) struct SharedCounted {
    local: Arc<Local>,
    released: Arc<Released>,
    id: String,
    user_key: String,
    ended: bool,
}

impl SharedCounted {
    pub(crate) fn new(
        local: &Arc<Local>,
        released: &Arc<Released>,
        id: &str,
        user_key: &str,
    ) -> Self {
        local.shared_taken(id, user_key);
        SharedCounted {
            local: Arc::clone(local),
            released: Arc::clone(released),
            id: id.to_string(),
            user_key: user_key.to_string(),
            ended: false,
        }
    }

    /// The permit ended: out of the local count (once). Returns whether its lease must stay
    /// counted in Redis (see `Local::shared_returned`).
    pub(crate) fn end(&mut self) -> bool {
        if std::mem::replace(&mut self.ended, true) {
            return false;
        }
        self.released.note(&self.id, &self.user_key);
        self.local.shared_returned(&self.id)
    }
}

impl Drop for SharedCounted {
    fn drop(&mut self) {
        self.end();
    }
}

/// A slot granted locally; returned to the local queue when dropped (and, if it was adopted into
/// Redis after the outage, released there too).
#[derive(Debug)]
pub(crate) struct LocalPermit {
    pub(crate) local: Arc<Local>,
    pub(crate) slot: Arc<LocalSlot>,
}

impl Drop for LocalPermit {
    fn drop(&mut self) {
        let reuse = self.local.release(&self.slot);
        let adopted = self.slot.adopted.lock().ok().and_then(|mut a| a.take());
        // Cut off from Redis: the slot stays counted there for a local grant to reuse.
        // Otherwise dropping the adopted lease releases it in Redis (spawned).
        if let Some(lease) = adopted
            && reuse
        {
            lease.abandon();
        }
    }
}
