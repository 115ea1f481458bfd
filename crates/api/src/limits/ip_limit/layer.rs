//! [`IpRateLimitLayer`]: one per-IP policy (a route class) wrapped around any axum service.

use std::sync::Arc;

use axum::http::HeaderValue;
use limiter_core::{CachedWindow, SlidingWindow};
use tower::Layer;

use super::{IpLimitStats, IpRateLimit, policy_header};

/// What every clone of the service shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) window: CachedWindow,
    pub(crate) policy: HeaderValue,
    /// Admit (true) or refuse with 503 (false) when Redis cannot answer.
    pub(crate) fail_open: bool,
    pub(crate) stats: Arc<IpLimitStats>,
}

/// Builds [`IpRateLimit`] services enforcing one sliding window per client IP.
#[derive(Debug, Clone)]
pub struct IpRateLimitLayer {
    shared: Arc<Shared>,
}

impl IpRateLimitLayer {
    /// A layer for `window` (its policy name is the route class, e.g. `chat`).
    pub fn new(window: SlidingWindow, fail_open: bool, stats: Arc<IpLimitStats>) -> Self {
        let p = window.policy();
        let policy = policy_header(&p.name, p.limit, p.window);
        IpRateLimitLayer {
            shared: Arc::new(Shared {
                window: CachedWindow::new(window),
                policy,
                fail_open,
                stats,
            }),
        }
    }
}

impl<S> Layer<S> for IpRateLimitLayer {
    type Service = IpRateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IpRateLimit::new(inner, Arc::clone(&self.shared))
    }
}
