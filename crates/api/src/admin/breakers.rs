//! The seam to the circuit breakers: the health endpoint shows their states, `reset-errors`
//! clears their error windows and `force-close-circuits` closes them. [`BreakerControl`] is
//! implemented for `breaker_store::Breakers`; [`build`] makes the replica's breakers for the three
//! upstreams from the configuration (`FLEETGATE_BREAKER_FAILURE_THRESHOLD`,
//! `FLEETGATE_BREAKER_OPEN_MS`), to be shared with the pipeline's `Outbound` and handed to
//! [`crate::AppState::with_breakers`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use breaker_store::{BreakerError, BreakerPolicy, Breakers, BreakersConfig};
use limiter_core::RedisHandle;
use serde::Serialize;
use utoipa::ToSchema;

use crate::config::Config;

/// The upstream services that get a breaker.
pub const SERVICES: [&str; 3] = [
    chat::upstream::service::PUBMED,
    chat::upstream::service::SEMANTIC_SCHOLAR,
    chat::upstream::service::LLM,
];

/// A boxed future.
pub type BreakerFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// One breaker as health shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BreakerStatus {
    /// The protected service (`pubmed`, `semantic_scholar`, `llm`).
    pub service: String,
    /// `closed`, `open` or `half_open`.
    pub state: String,
    /// Failures in the rolling window.
    pub failures: u64,
    /// Calls in the rolling window.
    pub calls: u64,
    /// Whether this view comes from the replica's local fallback (Redis unreachable).
    pub degraded: bool,
    /// End of the open period, Unix ms, while open.
    pub open_until_ms: Option<i64>,
}

/// Read and reset the shared breakers.
pub trait BreakerControl: Send + Sync + 'static {
    /// Every breaker's state.
    fn states(&self) -> BreakerFuture<'_, Vec<BreakerStatus>>;
    /// Forces every breaker closed; returns how many were not closed.
    fn force_close_all(&self) -> BreakerFuture<'_, u64>;
    /// Clears every breaker's error window (admin `reset-errors`).
    fn reset_errors_all(&self) -> BreakerFuture<'_, ()>;
    /// State changes this replica has learned, per service and state entered (monotonic
    /// totals, for metrics).
    fn transitions(&self) -> Vec<(String, &'static str, u64)> {
        Vec::new()
    }
}

/// The breakers of one replica for [`SERVICES`], policy from the configuration. Must run inside a
/// tokio runtime (it starts the state-change subscriber).
pub fn build(config: &Config, redis: RedisHandle) -> Result<Breakers, BreakerError> {
    let policy = BreakerPolicy {
        failure_threshold: config.upstream.breaker_failure_threshold,
        open: Duration::from_millis(config.upstream.breaker_open_ms),
        open_max: Duration::from_millis(config.upstream.breaker_open_ms)
            .max(Duration::from_secs(300)),
        ..BreakerPolicy::default()
    };
    let policies: HashMap<String, BreakerPolicy> = SERVICES
        .iter()
        .map(|s| (s.to_string(), policy.clone()))
        .collect();
    Breakers::new(
        redis,
        BreakersConfig {
            default_policy: policy,
            policies,
            ..BreakersConfig::default()
        },
    )
}

impl BreakerControl for Breakers {
    fn states(&self) -> BreakerFuture<'_, Vec<BreakerStatus>> {
        Box::pin(async move {
            let snaps = self.snapshots().await.map_err(|e| e.to_string())?;
            Ok(snaps
                .into_iter()
                .map(|s| BreakerStatus {
                    service: s.service,
                    state: s.state.as_str().into(),
                    failures: s.failures_in_window,
                    calls: s.calls_in_window,
                    degraded: s.degraded,
                    open_until_ms: s.open_until_ms,
                })
                .collect())
        })
    }

    fn force_close_all(&self) -> BreakerFuture<'_, u64> {
        Box::pin(async move {
            let before = self
                .services()
                .iter()
                .filter(|s| self.state(s).as_str() != "closed")
                .count();
            Breakers::force_close_all(self)
                .await
                .map_err(|e| e.to_string())?;
            Ok(u64::try_from(before).unwrap_or(u64::MAX))
        })
    }

    fn reset_errors_all(&self) -> BreakerFuture<'_, ()> {
        Box::pin(async move {
            Breakers::reset_errors_all(self)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn transitions(&self) -> Vec<(String, &'static str, u64)> {
        self.services()
            .into_iter()
            .flat_map(|s| {
                Breakers::transitions(self, &s)
                    .into_iter()
                    .map(move |(to, n)| (s.clone(), to.as_str(), n))
            })
            .collect()
    }
}
