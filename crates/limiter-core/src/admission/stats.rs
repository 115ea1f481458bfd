//! [`QueueStats`]: queue depth and slot use, fleet-wide.

use super::class::Class;

/// Queue depth and slot use, fleet-wide.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Waiters per class, in the configured class order.
    pub queued: Vec<u64>,
    /// Slots in use in the global scope.
    pub in_use: u64,
    /// Replicas with a live heartbeat.
    pub live_replicas: u64,
}

impl QueueStats {
    /// Waiters of one class (0 for a class the queue does not have).
    pub fn queued_in(&self, class: Class) -> u64 {
        self.queued.get(class.index()).copied().unwrap_or(0)
    }

    /// Waiters of every class together.
    pub fn total_queued(&self) -> u64 {
        self.queued.iter().sum()
    }
}
