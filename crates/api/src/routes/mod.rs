//! The routes, one module each, with a `router()` merged by [`crate::app`].

pub mod chat;
pub mod export;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod pages;
pub mod probes;
pub mod research;

pub mod parsed;
mod ticket;

pub use ticket::TicketGuard;

/// How long the request waited for its slot (zero on a route built without admission).
pub fn queued(admitted: Option<axum::Extension<limiter_tower::Admitted>>) -> std::time::Duration {
    admitted.map(|a| a.queued()).unwrap_or_default()
}

/// The request id set by the request-id layer (`x-request-id`).
pub fn request_id(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}
