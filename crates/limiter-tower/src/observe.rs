//! [`DecisionObserver`]: a hook that sees every decision of a [`crate::SlidingWindowLayer`], for
//! the service's own counters, metrics and trace spans. The layer decides and answers the same
//! with or without one: an observer only watches.

use std::time::Duration;

use limiter_core::WindowPolicy;

/// What a window decided for one request.
///
/// ```
/// use std::time::Duration;
/// use limiter_tower::WindowDecision;
///
/// let d = WindowDecision::Denied { retry_after: Duration::from_secs(3), cached: true };
/// assert_eq!(d.outcome(), "denied");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WindowDecision {
    /// Admitted and counted in the window.
    Allowed {
        /// Requests the key may still make in the window.
        remaining: u32,
        /// Until the oldest request leaves the window.
        reset: Duration,
    },
    /// Refused: the window is full.
    Denied {
        /// Until the window admits again.
        retry_after: Duration,
        /// Answered from the local denial cache, without a Redis round trip.
        cached: bool,
    },
    /// Redis could not answer; `admitted` tells whether the layer let the request through
    /// (fail-open) or refused it (fail-closed).
    Unavailable {
        /// Whether the request went through.
        admitted: bool,
    },
    /// The key extractor found no key.
    NoKey,
}

impl WindowDecision {
    /// A stable label: `allowed`, `denied`, `fail_open`, `fail_closed` or `no_key`.
    pub fn outcome(&self) -> &'static str {
        match self {
            WindowDecision::Allowed { .. } => "allowed",
            WindowDecision::Denied { .. } => "denied",
            WindowDecision::Unavailable { admitted: true } => "fail_open",
            WindowDecision::Unavailable { admitted: false } => "fail_closed",
            WindowDecision::NoKey => "no_key",
        }
    }
}

/// Watches a window's decisions. Both methods run on the request's path, so keep them cheap
/// (counters, span fields).
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use limiter_core::WindowPolicy;
/// use limiter_tower::{DecisionObserver, WindowDecision};
///
/// /// Counts refusals.
/// #[derive(Debug, Default)]
/// struct Denials(AtomicU64);
///
/// impl DecisionObserver for Denials {
///     fn window_decided(&self, _: &WindowPolicy, d: &WindowDecision, _: &tracing::Span) {
///         if matches!(d, WindowDecision::Denied { .. }) {
///             self.0.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
/// ```
pub trait DecisionObserver: Send + Sync + std::fmt::Debug + 'static {
    /// The span the Redis check runs in (none by default); it is handed back to
    /// [`DecisionObserver::window_decided`] so the decision can be recorded on it.
    fn window_span(&self, policy: &WindowPolicy) -> tracing::Span {
        let _ = policy;
        tracing::Span::none()
    }

    /// The window decided `decision` for a request under `policy`.
    fn window_decided(
        &self,
        policy: &WindowPolicy,
        decision: &WindowDecision,
        span: &tracing::Span,
    );
}

/// The observer of a layer built without one.
#[derive(Debug)]
pub(crate) struct NoObserver;

impl DecisionObserver for NoObserver {
    fn window_decided(&self, _: &WindowPolicy, _: &WindowDecision, _: &tracing::Span) {}
}
