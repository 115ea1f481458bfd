//! The records of the fleet view (types only, so the health report can hold them without
//! depending on how they are published and read: [`super::fleet_status`]).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::admin::slot_holders::Holder;

/// What one replica publishes about itself.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaRecord {
    /// Its id in the admission registry.
    pub replica: String,
    /// The address it listens on.
    pub listen: String,
    /// Admission mode: `shared`, `degraded` or `recovering`.
    pub mode: String,
    /// Whether it is shutting down.
    pub draining: bool,
    /// Replicas it last read from the registry.
    pub known_replicas: u32,
    /// Its share of the global cap while Redis is unreachable.
    pub local_share: u32,
    /// Slots it holds (shared and local).
    pub slots_held: u64,
    /// Slots granted from its local share and still held.
    pub local_slots_in_use: u64,
    /// Requests waiting on it.
    pub local_waiters: u64,
    /// Users holding its slots, most slots first (at most 50).
    pub holders: Vec<Holder>,
    /// Whether some holders were left out.
    pub holders_truncated: bool,
    /// The fleetgate version it runs.
    pub version: String,
    /// When it started, Unix ms (its own clock).
    pub started_at_ms: u64,
}

/// One live replica as the fleet view lists it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaView {
    /// What it published.
    #[serde(flatten)]
    pub record: ReplicaRecord,
    /// Time left before its record expires, ms (a live replica refreshes it every third).
    pub expires_in_ms: u64,
}

/// Every live replica and the users at their cap, fleet-wide.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FleetView {
    /// The id of the replica that answered this report.
    pub answered_by: String,
    /// Records live in Redis (may exceed the listed ones).
    pub live_replicas: u64,
    /// The replicas, at most 64, ordered by id.
    pub replicas: Vec<ReplicaView>,
    /// Whether some replicas were left out of the list.
    pub truncated: bool,
    /// How long a record lives unless its replica publishes again, ms.
    pub record_ttl_ms: u64,
    /// The per-user cap.
    pub user_cap: u32,
    /// Users whose slots, added up over the listed replicas, reach the per-user cap.
    pub users_at_cap: Vec<Holder>,
}
