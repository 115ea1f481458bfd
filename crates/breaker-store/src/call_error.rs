//! [`CallError`]: why an outbound call did not succeed.

use std::time::Duration;

/// Why an outbound call did not succeed. Each variant maps to one API error: `Unavailable` and
/// `Paced` → 503 `upstream_unavailable` with `Retry-After`, `Timeout` → 504 `upstream_timeout`,
/// `Upstream` → 502/503, `Rejected` → the caller's own mapping.
#[derive(Debug, thiserror::Error)]
pub enum CallError<E> {
    /// The breaker refused (OPEN, or HALF_OPEN with every probe taken): not called.
    #[error("upstream {service} unavailable (circuit open), retry after {retry_after:?}")]
    Unavailable {
        /// The service.
        service: String,
        /// When to try again.
        retry_after: Duration,
        /// Attempts that reached the upstream before the refusal.
        attempts: u32,
    },
    /// No pacing slot within the configured wait: not called.
    #[error("upstream {service} paced out, retry after {retry_after:?}")]
    Paced {
        /// The service.
        service: String,
        /// When a slot may be free.
        retry_after: Duration,
        /// Attempts that reached the upstream before.
        attempts: u32,
    },
    /// The last attempt timed out.
    #[error("upstream {service} timed out after {attempts} attempts")]
    Timeout {
        /// The service.
        service: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The last attempt failed (5xx, 429, connection error).
    #[error("upstream {service} failed after {attempts} attempts")]
    Upstream {
        /// The service.
        service: String,
        /// The last error.
        error: E,
        /// The upstream's last `Retry-After`.
        retry_after: Option<Duration>,
        /// Attempts made.
        attempts: u32,
    },
    /// The upstream rejected the request (4xx other than 429).
    #[error("upstream {service} rejected the request")]
    Rejected {
        /// The service.
        service: String,
        /// The error.
        error: E,
    },
}

impl<E> CallError<E> {
    /// The `Retry-After` to pass on, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::Unavailable { retry_after, .. } | CallError::Paced { retry_after, .. } => {
                Some(*retry_after)
            }
            CallError::Upstream { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Attempts that reached the upstream.
    pub fn attempts(&self) -> u32 {
        match self {
            CallError::Unavailable { attempts, .. }
            | CallError::Paced { attempts, .. }
            | CallError::Timeout { attempts, .. }
            | CallError::Upstream { attempts, .. } => *attempts,
            CallError::Rejected { .. } => 1,
        }
    }
}
