//! `GET /healthz` (the process answers) and `GET /readyz` (it should get traffic: not shutting
//! down and PostgreSQL reachable; Redis down is served in degraded mode and stays ready).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Liveness {
    /// Always `ok`.
    pub status: String,
}

/// Readiness.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    /// Whether to route traffic here.
    pub ready: bool,
    /// Shutdown has begun.
    pub shutting_down: bool,
    /// `ok` or `degraded`.
    pub redis: String,
    /// `ok` or `unavailable`.
    pub postgres: String,
}

/// Liveness probe.
#[utoipa::path(get, path = "/healthz", tag = "probes",
    responses((status = 200, description = "Alive", body = Liveness)))]
pub async fn healthz() -> Json<Liveness> {
    Json(Liveness {
        status: "ok".into(),
    })
}

/// Readiness probe.
#[utoipa::path(get, path = "/readyz", tag = "probes",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready (shutting down or PostgreSQL unreachable)", body = Readiness,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let t = Duration::from_millis(1000);
    let (redis, pg) = tokio::join!(
        tokio::time::timeout(t, state.redis().ping()),
        tokio::time::timeout(t, state.quota().ping()),
    );
    let redis_ok = matches!(redis, Ok(Ok(_)));
    let pg_ok = matches!(pg, Ok(Ok(_)));
    let shutting_down = state.is_shutting_down();
    let ready = !shutting_down && pg_ok;
    let body = Readiness {
        ready,
        shutting_down,
        redis: if redis_ok { "ok" } else { "degraded" }.into(),
        postgres: if pg_ok { "ok" } else { "unavailable" }.into(),
    };
    if ready {
        (StatusCode::OK, Json(body)).into_response()
    } else {
        let mut r = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        r
    }
}
