//! Who holds this replica's slots: a count per user, kept for as long as each slot is held, so the
//! fleet view of the admin console can show the users at their per-user cap. A user's slots may be
//! spread over several replicas, so the admin report adds up the counts of every replica's status
//! record ([`crate::admin::fleet_status`]). Users are named by a short hash of their id, never the id.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::limits::admission::Slot;

/// One user's slots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Holder {
    /// The first 16 hex digits of the SHA-256 of the user id.
    pub user: String,
    /// Slots held.
    pub slots: u32,
}

/// The per-user slot counts of one replica. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct SlotHolders {
    counts: Arc<Mutex<HashMap<String, u32>>>,
}

/// Short, non-reversible name of a user in the fleet view.
pub fn user_key(user: &str) -> String {
    let digest = Sha256::digest(user.as_bytes());
    hex::encode(&digest[..8])
}

impl SlotHolders {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, u32>> {
        // A panic while holding this lock leaves consistent counts (each update is one statement).
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one slot of `user` until the returned [`Holding`] is dropped.
    pub fn hold(&self, user: &str) -> Holding {
        let key = user_key(user);
        *self.lock().entry(key.clone()).or_insert(0) += 1;
        Holding {
            holders: self.clone(),
            key,
        }
    }

    /// Slots held now, all users together.
    pub fn total(&self) -> u64 {
        self.lock().values().map(|&n| u64::from(n)).sum()
    }

    /// The holders with the most slots first, at most `max`; and whether some were left out.
    pub fn snapshot(&self, max: usize) -> (Vec<Holder>, bool) {
        let mut all: Vec<Holder> = self
            .lock()
            .iter()
            .map(|(user, &slots)| Holder {
                user: user.clone(),
                slots,
            })
            .collect();
        all.sort_by(|a, b| b.slots.cmp(&a.slots).then_with(|| a.user.cmp(&b.user)));
        let truncated = all.len() > max;
        all.truncate(max);
        (all, truncated)
    }
}

/// One counted slot; dropping it uncounts it.
#[derive(Debug)]
pub struct Holding {
    holders: SlotHolders,
    key: String,
}

impl Drop for Holding {
    fn drop(&mut self) {
        let mut counts = self.holders.lock();
        if let Some(n) = counts.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// A granted [`Slot`] counted for its user while it is held (derefs to the slot).
#[derive(Debug)]
pub struct HeldSlot {
    // Field order: the slot is released before its count goes (a reader never sees fewer
    // holders than slots in use).
    slot: Slot,
    _holding: Holding,
}

impl HeldSlot {
    /// Counts `slot` for `user` in `holders`.
    pub fn new(slot: Slot, holders: &SlotHolders, user: &str) -> Self {
        HeldSlot {
            slot,
            _holding: holders.hold(user),
        }
    }
}

impl Deref for HeldSlot {
    type Target = Slot;
    fn deref(&self) -> &Slot {
        &self.slot
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_holdings_and_vanish_at_zero() {
        let h = SlotHolders::default();
        let a1 = h.hold("alice");
        let a2 = h.hold("alice");
        let b = h.hold("bob");
        let (list, truncated) = h.snapshot(10);
        assert!(!truncated);
        assert_eq!(list[0].user, user_key("alice"));
        assert_eq!(list[0].slots, 2);
        assert_eq!(list[1].slots, 1);
        assert_eq!(h.total(), 3);
        drop(a1);
        drop(b);
        assert_eq!(
            h.snapshot(10).0,
            vec![Holder {
                user: user_key("alice"),
                slots: 1
            }]
        );
        drop(a2);
        assert!(h.snapshot(10).0.is_empty());
    }

    #[test]
    fn snapshot_is_bounded() {
        let h = SlotHolders::default();
        let held: Vec<_> = (0..5).map(|i| h.hold(&format!("u{i}"))).collect();
        let (list, truncated) = h.snapshot(3);
        assert_eq!(list.len(), 3);
        assert!(truncated);
        drop(held);
    }

    #[test]
    fn user_key_is_short_and_not_the_id() {
        let k = user_key("demo-user");
        assert_eq!(k.len(), 16);
        assert!(!k.contains("demo"));
    }
}
