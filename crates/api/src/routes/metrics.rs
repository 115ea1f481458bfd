//! `GET /metrics`: the process's Prometheus metrics, with the shared-state gauges (queue depth,
//! slots, breakers, degraded mode, health score) read at scrape time.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::metrics;
use crate::state::AppState;

/// Prometheus scrape.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text"))
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // The health report reads everything the gauges need, each probe under its own timeout,
    // so a scrape during an outage still answers (with what it could read).
    // The report of the last second (shared with the health route: a scrape flood costs the
    // databases nothing more); breaker states are read now, from Redis, so that they are current.
    let report = state
        .health_cache()
        .get(|| crate::health::check::report(&state))
        .await;
    let breaker_states = match state.breakers() {
        Some(b) => b.states().await.unwrap_or_default(),
        None => Vec::new(),
    };
    let transitions = state
        .breakers()
        .map(|b| b.transitions())
        .unwrap_or_default();
    let gate = state.gate();
    let body = metrics::get().encode(|m| {
        m.health_score(report.score);
        m.degraded(gate.degraded());
        m.in_flight(state.request_stats().snapshot().in_flight);
        let outstanding = u64::try_from(gate.outstanding()).unwrap_or(u64::MAX);
        let cap = state.config().admission.max_concurrent_global;
        match report.components.as_ref().and_then(|c| c.queue.as_ref()) {
            Some(q) => {
                m.queue_depth("chat", q.waiting.chat);
                m.queue_depth("research", q.waiting.research);
                m.queue_depth("export", q.waiting.export);
                m.slots(Some(q.slots_in_use), outstanding, cap);
                m.live_replicas(q.live_replicas);
            }
            None => m.slots(None, outstanding, cap),
        }
        for b in &breaker_states {
            let st = match b.state.as_str() {
                "open" => "open",
                "half_open" => "half_open",
                _ => "closed",
            };
            m.breaker(&b.service, st);
        }
        for (service, to, n) in &transitions {
            m.breaker_transitions(service, to, *n);
        }
    });
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body)
}
