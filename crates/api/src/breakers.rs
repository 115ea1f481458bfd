//! The seam to the circuit breakers (crate `breaker-store`, issue 4): the health endpoint shows
//! their states and `force-close-circuits` closes them. The lead wires an implementation with
//! [`crate::AppState::with_breakers`]; until then health reports `wired: false` and the action
//! closes nothing.

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use utoipa::ToSchema;

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
    /// Recent failures counted.
    pub failures: u64,
}

/// Read and reset the shared breakers.
pub trait BreakerControl: Send + Sync + 'static {
    /// Every breaker's state.
    fn states(&self) -> BreakerFuture<'_, Vec<BreakerStatus>>;
    /// Forces every breaker closed; returns how many were not closed.
    fn force_close_all(&self) -> BreakerFuture<'_, u64>;
}
