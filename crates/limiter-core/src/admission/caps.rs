//! The caps in force: the per-user and global caps, changeable while the queue runs.
//!
//! The scripts take the caps as arguments (ARGV[2] and ARGV[3] of every admission script), not
//! from Redis, so a change is just a different argument on the next call; each replica must be
//! told (a runtime-limits document every replica follows, say). Read at every call, including
//! the renewals and releases of leases granted before the change: a release hands the slot on
//! under the cap in force then, so lowering a cap below what runs grants nothing until enough
//! leases end, and nothing running is revoked.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Debug)]
struct Values {
    user: AtomicU32,
    global: AtomicU32,
}

/// The caps of one replica's admission, shared by its script calls and leases.
#[derive(Debug, Clone)]
pub(crate) struct Caps(Arc<Values>);

impl Caps {
    pub(crate) fn new(user: u32, global: u32) -> Self {
        Caps(Arc::new(Values {
            user: AtomicU32::new(user),
            global: AtomicU32::new(global),
        }))
    }

    pub(crate) fn user(&self) -> u32 {
        self.0.user.load(Ordering::Relaxed)
    }

    pub(crate) fn global(&self) -> u32 {
        self.0.global.load(Ordering::Relaxed)
    }

    /// Sets the caps given (each at least 1); whether one changed. A queue without per-user
    /// limits (user cap 0) keeps none: its layout in Redis has no user dimension to cap.
    pub(crate) fn set(&self, user: Option<u32>, global: Option<u32>) -> bool {
        let mut changed = false;
        if let Some(u) = user
            && self.user() != 0
        {
            changed |= self.0.user.swap(u.max(1), Ordering::Relaxed) != u.max(1);
        }
        if let Some(g) = global {
            changed |= self.0.global.swap(g.max(1), Ordering::Relaxed) != g.max(1);
        }
        changed
    }

    /// Writes the caps into the arguments of an admission script (ARGV[2], ARGV[3]).
    pub(crate) fn fill(&self, args: &mut [String]) {
        if let [_, user, global, ..] = args {
            *user = self.user().to_string();
            *global = self.global().to_string();
        }
    }
}
