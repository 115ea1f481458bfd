//! What the upstream clients report to their host: the outcome and duration of every attempt, the
//! kind of every failed call, and the trace headers each outbound request carries. The clients
//! know no metrics or tracing backend; the service installs an [`Instrumentation`] once (its
//! Prometheus registry and OpenTelemetry propagator) and every client of the process uses it.

use std::sync::OnceLock;
use std::time::Duration;

use reqwest::header::HeaderMap;

/// Receives what the upstream clients observe. Every method has a do-nothing default.
pub trait Instrumentation: Send + Sync + 'static {
    /// One HTTP attempt at `service` ended with `outcome` after `took`.
    fn attempt(&self, service: &'static str, outcome: &'static str, took: Duration) {
        let _ = (service, outcome, took);
    }

    /// One call to `service` failed for good (after retries); `kind` says how: `breaker_open`,
    /// `paced`, `timeout`, `failure`, `rejected`, `malformed`...
    fn error(&self, service: &'static str, kind: &'static str) {
        let _ = (service, kind);
    }

    /// Headers that continue the current trace (`traceparent`, `tracestate`) on an outbound
    /// request.
    fn trace_headers(&self) -> HeaderMap {
        HeaderMap::new()
    }
}

struct Nothing;
impl Instrumentation for Nothing {}

static INSTALLED: OnceLock<Box<dyn Instrumentation>> = OnceLock::new();

/// Installs the process's instrumentation. Only the first call counts (a process has one metrics
/// registry); later ones are ignored.
pub fn install(i: impl Instrumentation) {
    let _ = INSTALLED.set(Box::new(i));
}

/// The installed instrumentation, or one that does nothing.
pub(crate) fn get() -> &'static dyn Instrumentation {
    INSTALLED.get().map_or(&Nothing, |b| b.as_ref())
}
