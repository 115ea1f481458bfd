//! `GET /api/system-health` (public: status and score; admin: every component and
//! recommendations) and `POST /api/system-health` (admin actions).
//!
//! One report is computed at a time and served for `FLEETGATE_HEALTH_CACHE_MS` (default 1 s) to
//! every public caller and to `/metrics` ([`HealthCache`]): a flood of probes costs the databases
//! one round of checks per period, not one per probe. An admin (authenticated, wrong tokens
//! throttled) always gets a fresh report, which the others then share.
//!
//! Score: 100 minus a penalty per problem (PostgreSQL down 50, Redis down 25, queue over 90 % of
//! the global cap 15 (70 %: 5), error rate over 10 % 20 (5 %: 10), each open breaker 10 (max 30),
//! pool nearly exhausted 10, a latency over 500 ms 5). Status: PostgreSQL down → `unhealthy`;
//! otherwise `healthy` from 80, `degraded` from 50 (and whenever Redis is down), else `unhealthy`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use utoipa::ToSchema;

use crate::admission::{GateStats, LocalAdmission};
use crate::breakers::BreakerStatus;
use crate::client_ip::ClientIp;
use crate::error::{ApiError, Problem};
use crate::fleet_status::FleetView;
use crate::ip_limit::IpLimitSnapshot;
use crate::json::ValidJson;
use crate::quota::LoadMetric;
use crate::state::AppState;
use crate::stats::RequestSnapshot;

const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// The health report.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthReport {
    /// `healthy`, `degraded` or `unhealthy`.
    pub status: HealthStatus,
    /// 0-100.
    #[schema(minimum = 0, maximum = 100)]
    pub score: u8,
    /// Every component (admin only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub components: Option<Components>,
    /// What to do about it (admin only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recommendations: Option<Vec<String>>,
}

/// Overall status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// All good.
    Healthy,
    /// Serving, with reduced guarantees (e.g. Redis down: local limits).
    Degraded,
    /// Not serving properly.
    Unhealthy,
}

/// The components (admin view).
#[derive(Debug, Serialize, ToSchema)]
pub struct Components {
    /// Redis.
    pub redis: RedisComponent,
    /// PostgreSQL.
    pub postgres: PostgresComponent,
    /// Admission queue and slots, fleet-wide (null if Redis could not be read).
    pub queue: Option<GateStats>,
    /// This replica's admission: mode, local share and what it holds (also while Redis is down).
    pub admission: LocalAdmission,
    /// Every live replica, its mode and its slots; the users at their per-user cap (null if
    /// Redis could not be read).
    pub fleet: Option<FleetView>,
    /// Circuit breakers.
    pub breakers: BreakersComponent,
    /// Per-IP windows of this replica.
    #[serde(rename = "rateLimit")]
    pub rate_limit: IpLimitSnapshot,
    /// Requests and errors of this replica.
    pub errors: RequestSnapshot,
}

/// Redis.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisComponent {
    /// `up` or `down`.
    pub status: String,
    /// PING round trip, ms.
    pub latency_ms: Option<f64>,
    /// `shared` (limits live in Redis) or `degraded` (Redis down: per-IP windows fail open or
    /// closed per configuration).
    pub mode: String,
    /// `standalone` or `cluster`.
    pub topology: String,
}

/// PostgreSQL.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresComponent {
    /// `up` or `down`.
    pub status: String,
    /// `SELECT 1` round trip, ms.
    pub latency_ms: Option<f64>,
    /// Connections open in this replica's pool.
    pub pool_size: u32,
    /// Of which idle.
    pub pool_idle: u32,
    /// Of which in use.
    pub pool_in_use: u32,
    /// The pool's maximum.
    pub pool_max: u32,
    /// `check_system_load()` rows (empty if it failed).
    pub load: Vec<LoadMetric>,
}

/// Circuit breakers.
#[derive(Debug, Serialize, ToSchema)]
pub struct BreakersComponent {
    /// Whether breakers are wired into this replica.
    pub wired: bool,
    /// Their states.
    pub states: Vec<BreakerStatus>,
}

async fn within<T, E: std::fmt::Display>(f: impl Future<Output = Result<T, E>>) -> Option<T> {
    match tokio::time::timeout(PROBE_TIMEOUT, f).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health probe failed");
            None
        }
        Err(_) => None,
    }
}

/// The last report and when it was made: single flight (callers wait for the one being made) and
/// reused while younger than the period.
#[derive(Debug)]
pub struct HealthCache {
    period: Duration,
    last: tokio::sync::Mutex<Option<(Instant, Arc<HealthReport>)>>,
}

impl HealthCache {
    /// Reports reused for `period`.
    pub fn new(period: Duration) -> Self {
        HealthCache {
            period,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// A report at most `period` old (counted from when it was finished, so a new one starts at
    /// least a period after the previous one ended).
    pub async fn get(&self, state: &AppState) -> Arc<HealthReport> {
        let mut last = self.last.lock().await;
        if let Some((at, r)) = last.as_ref()
            && at.elapsed() < self.period
        {
            return Arc::clone(r);
        }
        let r = Arc::new(report(state).await);
        *last = Some((Instant::now(), Arc::clone(&r)));
        r
    }

    /// A report made now (still one at a time), which the next callers of [`HealthCache::get`]
    /// share.
    pub async fn refresh(&self, state: &AppState) -> Arc<HealthReport> {
        let mut last = self.last.lock().await;
        let r = Arc::new(report(state).await);
        *last = Some((Instant::now(), Arc::clone(&r)));
        r
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 100.0).round() / 100.0
}

/// Builds the full report (admin view); the public view strips it.
pub async fn report(state: &AppState) -> HealthReport {
    let redis_ping = within(state.redis().ping());
    let pg_ping = within(state.quota().ping());
    let gate = within(state.gate().stats());
    let load = within(state.quota().check_system_load());
    let breakers = async {
        match state.breakers() {
            Some(b) => (true, within(b.states()).await.unwrap_or_default()),
            None => (false, Vec::new()),
        }
    };
    let fleet = within(crate::fleet_status::read(state));
    let (redis_ping, pg_ping, gate, load, (wired, breaker_states), fleet) =
        tokio::join!(redis_ping, pg_ping, gate, load, breakers, fleet);
    let pool = state.quota().pool();
    let pool_size = pool.size();
    let pool_idle = u32::try_from(pool.num_idle()).unwrap_or(0);
    let pool_max = state.config().database.max_connections;
    let rate_limit = state.ip_stats().snapshot();
    let errors = state.request_stats().snapshot();

    let mut score: i32 = 100;
    let mut recs = Vec::new();
    if pg_ping.is_none() {
        score -= 50;
        recs.push("PostgreSQL is unreachable: chat answers 503 and no quota is spent; check the database and FLEETGATE_DATABASE_URL.".to_string());
    }
    if redis_ping.is_none() {
        score -= 25;
        recs.push(format!(
            "Redis is unreachable: per-IP windows fail {}, admission {}; check Redis.",
            if state.config().limits.fail_open {
                "open"
            } else {
                "closed"
            },
            if state.config().admission.local_fallback {
                "uses this replica's local share of the caps"
            } else {
                "refuses requests"
            }
        ));
    }
    for (lat, name) in [(redis_ping, "Redis"), (pg_ping, "PostgreSQL")] {
        if lat.is_some_and(|d| d > Duration::from_millis(500)) {
            score -= 5;
            recs.push(format!("{name} latency is high (over 500 ms)."));
        }
    }
    if let Some(g) = &gate {
        let use_pct = g.slots_in_use as f64 / f64::from(g.global_cap.max(1));
        if use_pct >= 0.9 {
            score -= 15;
            recs.push("Nearly all global slots are in use: consider raising FLEETGATE_MAX_CONCURRENT_GLOBAL if upstreams allow it.".into());
        } else if use_pct >= 0.7 {
            score -= 5;
        }
        let waiting = g.waiting.chat + g.waiting.research + g.waiting.export;
        if waiting > 50 {
            recs.push(format!("{waiting} requests are waiting for a slot."));
        }
    }
    if errors.error_rate > 0.10 {
        score -= 20;
        recs.push(
            "More than 10 % of responses are server errors: check upstreams and logs.".into(),
        );
    } else if errors.error_rate > 0.05 {
        score -= 10;
        recs.push("More than 5 % of responses are server errors.".into());
    }
    let open = breaker_states
        .iter()
        .filter(|b| b.state != "closed")
        .count();
    if open > 0 {
        score -= i32::try_from(open.min(3) * 10).unwrap_or(30);
        recs.push(format!(
            "{open} circuit breaker(s) not closed: an upstream is failing."
        ));
    }
    if pool_max > 0 && pool_size >= pool_max && pool_idle == 0 {
        score -= 10;
        recs.push("The database pool is exhausted: raise FLEETGATE_DATABASE_MAX_CONNECTIONS or look for slow queries (emergency-cleanup ends idle-in-transaction sessions).".into());
    }
    for m in load.iter().flatten() {
        if m.status != "ok" {
            recs.push(format!("database {}: {} ({})", m.metric, m.value, m.status));
        }
    }
    let score = u8::try_from(score.clamp(0, 100)).unwrap_or(0);
    let status = if pg_ping.is_none() || score < 50 {
        HealthStatus::Unhealthy
    } else if redis_ping.is_none() || score < 80 {
        HealthStatus::Degraded
    } else {
        HealthStatus::Healthy
    };
    HealthReport {
        status,
        score,
        components: Some(Components {
            redis: RedisComponent {
                status: if redis_ping.is_some() { "up" } else { "down" }.into(),
                latency_ms: redis_ping.map(ms),
                mode: if redis_ping.is_some() && !state.gate().degraded() {
                    "shared"
                } else {
                    "degraded"
                }
                .into(),
                topology: if state.redis().is_cluster() {
                    "cluster"
                } else {
                    "standalone"
                }
                .into(),
            },
            postgres: PostgresComponent {
                status: if pg_ping.is_some() { "up" } else { "down" }.into(),
                latency_ms: pg_ping.map(ms),
                pool_size,
                pool_idle,
                pool_in_use: pool_size.saturating_sub(pool_idle),
                pool_max,
                load: load.unwrap_or_default(),
            },
            queue: gate,
            admission: state.gate().local(),
            fleet,
            breakers: BreakersComponent {
                wired,
                states: breaker_states,
            },
            rate_limit,
            errors,
        }),
        recommendations: Some(recs),
    }
}

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
        serde_json::to_vec(&*state.health_cache().refresh(&state).await)
    } else {
        let r = state.health_cache().get(&state).await;
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
}

/// An admin action request.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ActionBody {
    /// The action.
    pub action: Action,
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
