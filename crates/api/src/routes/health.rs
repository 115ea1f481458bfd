//! `GET /api/system-health` (public: status and score; admin: every component and
//! recommendations) and `POST /api/system-health` (admin actions). The report itself is made in
//! [`crate::health`].

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, Problem};
use crate::health::check::report;
use crate::health::report::HealthReport;
use crate::server::client_ip::ClientIp;
use crate::server::json::ValidJson;
use crate::state::AppState;

/// Health: status and score for anyone; with the admin token, components and recommendations.
#[utoipa::path(
    get,
    path = "/api/system-health",
    tag = "health",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The report (components and recommendations only for admins)", body = HealthReport),
    )
)]
pub async fn get_health(
    State(state): State<AppState>,
    client: ClientIp,
    headers: HeaderMap,
) -> Response {
    // A page that sends its user's token with every request asks for the public view: a valid
    // user JWT is no guess at the admin token and is not counted as one.
    let user_token = crate::auth::bearer(&headers)
        .ok()
        .flatten()
        .is_some_and(|t| state.jwt().verify(t).is_ok());
    let admin = !user_token && state.admin_gate().is_admin(client.0, &headers).await;
    let body = if admin {
        let r = state.health_cache().refresh(|| report(&state)).await;
        serde_json::to_value(&*r).map(|mut v| {
            v["limits"] = state.runtime_limits().view();
            serde_json::to_vec(&v).unwrap_or_default()
        })
    } else {
        let r = state.health_cache().get(|| report(&state)).await;
        serde_json::to_vec(&HealthReport {
            status: r.status,
            score: r.score,
            components: None,
            recommendations: None,
        })
    };
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.unwrap_or_default(),
    )
        .into_response()
}

/// Admin actions.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Answer every waiter of the admission queue.
    ResetQueue,
    /// Zero the error and rate-limit counters.
    ResetErrors,
    /// Close every circuit breaker.
    ForceCloseCircuits,
    /// `cleanup_old_sessions()`.
    CleanupSessions,
    /// `emergency_cleanup_connections()`: end idle-in-transaction sessions of this database.
    EmergencyCleanup,
    /// Change limits fleet-wide at runtime: `route` + `limits` (`per_ip_per_min`, and
    /// `daily_quota` on `/api/chat`) and/or `admission` (`global_concurrency`,
    /// `per_user_concurrency`).
    SetLimits,
    /// Switch a layer (`window`, `admission`, `all`) of a `route` (or `*`) to a `mode`
    /// (`enforce`, `shadow`, `off`), fleet-wide.
    SetMode,
    /// Back to the configuration: everything, or one `route` (`*`: the service-wide modes).
    ResetLimits,
}

/// An admin action request.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ActionBody {
    /// The action.
    pub action: Action,
    /// Runtime limits: the route (`/api/chat`, `/api/research`, `/api/export`, or `*`).
    #[serde(default)]
    pub route: Option<String>,
    /// Runtime limits: a route's new limits.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub limits: Option<serde_json::Map<String, serde_json::Value>>,
    /// Runtime limits: new admission caps.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub admission: Option<serde_json::Map<String, serde_json::Value>>,
    /// `set-mode`: the layer.
    #[serde(default)]
    pub layer: Option<String>,
    /// `set-mode`: the mode.
    #[serde(default)]
    pub mode: Option<String>,
    /// Runtime limits: who is making the change (the log and the document; default: the client
    /// address).
    #[serde(default)]
    pub by: Option<String>,
}

/// What an action did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionResult {
    /// The action.
    pub action: Action,
    /// Whether it ran.
    pub ok: bool,
    /// Action-specific figures.
    #[schema(value_type = Object)]
    pub result: serde_json::Value,
}

/// Runs an admin action.
#[utoipa::path(
    post,
    path = "/api/system-health",
    tag = "health",
    request_body = ActionBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Done", body = ActionResult),
        (status = 400, description = "`invalid_request` (unknown action)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`: no token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: not the admin token", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: too many wrong admin tokens from this address", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 408, description = "`request_timeout`: the body did not arrive within `FLEETGATE_HTTP_BODY_TIMEOUT_MS`", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`service_unavailable`: a dependency is down", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
pub async fn post_health(
    State(state): State<AppState>,
    client: ClientIp,
    headers: HeaderMap,
    body: Result<ValidJson<ActionBody>, ApiError>,
) -> Result<Json<ActionResult>, ApiError> {
    state.admin_gate().authorize(client.0, &headers).await?;
    let ValidJson(body) = body?;
    let action = body.action;
    tracing::info!(?action, "admin action");
    let result = match action {
        Action::SetLimits | Action::SetMode | Action::ResetLimits => {
            crate::admin::runtime_limits::change(&state, client.0, body).await?
        }
        Action::ResetQueue => {
            let n = state
                .gate()
                .reset_queue()
                .await
                .map_err(|e| ApiError::unavailable("Redis is unavailable", e))?;
            serde_json::json!({ "waitersReleased": n })
        }
        Action::ResetErrors => {
            state.request_stats().reset();
            state.ip_stats().reset();
            let breakers = match state.breakers() {
                Some(b) => {
                    b.reset_errors_all().await.map_err(|e| {
                        ApiError::unavailable("the breaker store is unavailable", e)
                    })?;
                    true
                }
                None => false,
            };
            serde_json::json!({ "reset": ["errors", "rateLimit"], "breakerWindows": breakers })
        }
        Action::ForceCloseCircuits => match state.breakers() {
            Some(b) => {
                let n = b
                    .force_close_all()
                    .await
                    .map_err(|e| ApiError::unavailable("the breaker store is unavailable", e))?;
                serde_json::json!({ "wired": true, "closed": n })
            }
            None => serde_json::json!({ "wired": false, "closed": 0 }),
        },
        Action::CleanupSessions => {
            let rows = state
                .quota()
                .cleanup_old_sessions(Duration::from_secs(30 * 86_400))
                .await
                .map_err(|e| ApiError::unavailable("the database is unavailable", e))?;
            let m: serde_json::Map<String, serde_json::Value> =
                rows.into_iter().map(|(k, v)| (k, v.into())).collect();
            serde_json::Value::Object(m)
        }
        Action::EmergencyCleanup => {
            let rows = state
                .quota()
                .emergency_cleanup_connections(Duration::from_secs(
                    state.config().database.emergency_idle_secs,
                ))
                .await
                .map_err(|e| ApiError::unavailable("the database is unavailable", e))?;
            let list: Vec<_> = rows
                .into_iter()
                .map(|(pid, idle, t)| serde_json::json!({"pid": pid, "idleSeconds": idle, "terminated": t}))
                .collect();
            serde_json::json!({ "connections": list })
        }
    };
    Ok(Json(ActionResult {
        action,
        ok: true,
        result,
    }))
}
