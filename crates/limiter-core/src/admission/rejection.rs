//! [`Rejection`]: why a request was not admitted. The one error type of admission.

use std::time::Duration;

use crate::LimiterError;

/// Why a request was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// The deadline passed while waiting.
    #[error("timed out after waiting {waited:?}")]
    Timeout {
        /// Time spent in the queue.
        waited: Duration,
    },
    /// The queue was at its maximum length.
    #[error("queue full")]
    Full,
    /// This user already had its maximum number of waiters in the queue.
    #[error("this user's share of the queue is full")]
    UserQueueFull,
    /// An admin reset the queue while this request waited.
    #[error("queue reset by an administrator")]
    Reset,
    /// This replica is shutting down.
    #[error("replica shutting down")]
    ShuttingDown,
    /// Redis has been unreachable for longer than this replica's slots stay counted there
    /// ([`crate::OutagePolicy::Safety`]): it refuses rather than admit beyond what the other
    /// replicas, which may still reach Redis, can see. Retry later.
    #[error("Redis unreachable for longer than a lease; refusing until it answers")]
    OutageTooLong,
    /// No decision could be reached: Redis unreachable with local fallback off, an error from
    /// Redis, or an argument the queue was not configured for (a class out of range).
    #[error("admission unavailable")]
    Unavailable(#[source] LimiterError),
}

impl Rejection {
    /// A short stable label (`timeout`, `full`, `user_queue_full`, `reset`, `shutting_down`,
    /// `outage_too_long`, `unavailable`) for metrics and logs.
    pub fn outcome(&self) -> &'static str {
        match self {
            Rejection::Timeout { .. } => "timeout",
            Rejection::Full => "full",
            Rejection::UserQueueFull => "user_queue_full",
            Rejection::Reset => "reset",
            Rejection::ShuttingDown => "shutting_down",
            Rejection::OutageTooLong => "outage_too_long",
            Rejection::Unavailable(_) => "unavailable",
        }
    }
}
