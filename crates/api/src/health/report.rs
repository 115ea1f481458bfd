//! The health report: what `GET /api/system-health` and `/metrics` show (admins see every
//! component and the recommendations, others the status and score).

use serde::Serialize;
use utoipa::ToSchema;

use crate::admin::breakers::BreakerStatus;
use crate::admin::fleet_view::FleetView;
use crate::health::stats::RequestSnapshot;
use crate::limits::admission::{GateStats, LocalAdmission};
use crate::limits::ip_limit::IpLimitSnapshot;
use crate::limits::quota::LoadMetric;

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
    /// `standalone`, `sentinel` or `cluster`.
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
