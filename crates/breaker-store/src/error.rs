//! Errors of the breakers. A refusal (`Open`, `HalfOpenBusy`) is an error the caller maps to 503
//! with `Retry-After`; an unreachable Redis is not an error here at all (the breaker falls back to
//! its local copy), so `Redis` only reports admin calls and replies that break the script contract.

use std::time::Duration;

use limiter_core::LimiterError;

/// Why a breaker refused a call or an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BreakerError {
    /// The breaker is OPEN: the upstream is not called.
    #[error("circuit open, retry after {retry_after:?}")]
    Open {
        /// Until the breaker may let a probe through.
        retry_after: Duration,
    },
    /// The breaker is HALF_OPEN and every probe permit is taken fleet-wide.
    #[error("circuit half-open and probing, retry after {retry_after:?}")]
    HalfOpenBusy {
        /// Until the oldest probe permit expires (an upper bound: a probe result comes sooner).
        retry_after: Duration,
    },
    /// Redis failed an operation that has no local fallback (admin actions, snapshots), or
    /// answered outside the script contract.
    #[error("breaker redis operation failed")]
    Redis(#[from] LimiterError),
    /// A policy or configuration that cannot work (caught before any call).
    #[error("invalid breaker configuration: {0}")]
    InvalidConfig(String),
}

impl BreakerError {
    /// The `Retry-After` hint of a refusal.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            BreakerError::Open { retry_after } | BreakerError::HalfOpenBusy { retry_after } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }

    /// Whether the breaker refused the call (as opposed to failing).
    pub fn is_refusal(&self) -> bool {
        self.retry_after().is_some()
    }
}
