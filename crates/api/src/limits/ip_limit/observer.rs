//! [`IpWindowObserver`]: what the service records of each per-IP window decision: the health
//! endpoint's counters, the `ip_window` decision metric and the `ratelimit.ip_window` span.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use limiter_core::WindowPolicy;
use limiter_tower::{DecisionObserver, WindowDecision};

use super::IpLimitStats;

/// The route class of a window policy as a metric label (a closed set).
fn policy_label(name: &str) -> &'static str {
    match name {
        "chat" => "chat",
        "research" => "research",
        "export" => "export",
        _ => "other",
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Counts, measures and traces the decisions of the per-IP windows.
#[derive(Debug, Clone)]
pub struct IpWindowObserver {
    stats: Arc<IpLimitStats>,
}

impl IpWindowObserver {
    /// Counting into `stats`.
    pub fn new(stats: Arc<IpLimitStats>) -> Self {
        IpWindowObserver { stats }
    }
}

impl DecisionObserver for IpWindowObserver {
    fn window_span(&self, policy: &WindowPolicy) -> tracing::Span {
        tracing::info_span!(
            "ratelimit.ip_window",
            fleetgate.ratelimit.policy = policy_label(&policy.name),
            fleetgate.ratelimit.outcome = tracing::field::Empty,
            fleetgate.ratelimit.remaining = tracing::field::Empty,
            fleetgate.ratelimit.cached = tracing::field::Empty,
        )
    }

    fn window_decided(&self, policy: &WindowPolicy, d: &WindowDecision, span: &tracing::Span) {
        let s = &self.stats;
        match *d {
            WindowDecision::Allowed { remaining, .. } => {
                IpLimitStats::bump(&s.allowed);
                span.record("fleetgate.ratelimit.remaining", remaining);
            }
            WindowDecision::Denied { cached, .. } => {
                IpLimitStats::bump(&s.denied);
                if cached {
                    IpLimitStats::bump(&s.denied_locally);
                }
                span.record("fleetgate.ratelimit.cached", cached);
            }
            WindowDecision::Unavailable { admitted } => {
                IpLimitStats::bump(&s.redis_errors);
                s.last_redis_error_ms.store(now_ms(), Ordering::Relaxed);
                if admitted {
                    IpLimitStats::bump(&s.failed_open);
                }
            }
            // The client key always exists (see `ClientKey`).
            _ => {}
        }
        let outcome = d.outcome();
        span.record("fleetgate.ratelimit.outcome", outcome);
        crate::metrics::get().decision("ip_window", policy_label(&policy.name), outcome);
    }
}
