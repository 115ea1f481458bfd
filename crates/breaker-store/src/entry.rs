//! [`Entry`]: one service's breaker on this replica (its shared state handle, cached view and local
//! fallback), and the lock helpers every part of the crate uses.

use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};

use crate::cache::Cached;
use crate::local::LocalBreaker;
use crate::policy::BreakerPolicy;
use crate::shared::SharedBreaker;
use crate::state::BreakerState;

/// One service's breaker on this replica.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) service: String,
    pub(crate) policy: BreakerPolicy,
    pub(crate) shared: SharedBreaker,
    pub(crate) cache: Mutex<Cached>,
    pub(crate) local: Mutex<LocalBreaker>,
    /// State changes this replica learned, by state entered (closed, open, half-open): metrics.
    pub(crate) transitions: [AtomicU64; 3],
    /// Plain successes not yet written to the shared window (see `Breakers::tally`).
    pub(crate) tally: AtomicU64,
}

pub(crate) fn state_index(s: BreakerState) -> usize {
    match s {
        BreakerState::Closed => 0,
        BreakerState::Open => 1,
        BreakerState::HalfOpen => 2,
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}
