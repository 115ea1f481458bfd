//! Health and admin views of a breaker ([`BreakerSnapshot`]), from Redis or from the local
//! fallback.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::entry::{Entry, lock};
use crate::shared::SharedRead;
use crate::state::BreakerState;
use crate::{BreakerError, Breakers};

/// What health and admin views show of one breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerSnapshot {
    /// The upstream service.
    pub service: String,
    /// Its state.
    pub state: BreakerState,
    /// Failures in the rolling window.
    pub failures_in_window: u64,
    /// Calls in the rolling window.
    pub calls_in_window: u64,
    /// Consecutive trips (the open period doubles with each).
    pub consecutive_trips: u32,
    /// Last transition, Unix ms (Redis clock; this replica's clock when degraded). `None`: never.
    pub last_transition_ms: Option<i64>,
    /// Why: `failures`, `probe_failed`, `half_open`, `recovered`, `forced_open`,
    /// `forced_close`, `seeded` (degraded start), or empty.
    pub last_transition_reason: String,
    /// End of the open period, Unix ms, while OPEN.
    pub open_until_ms: Option<i64>,
    /// Probe permits held now.
    pub live_probes: u32,
    /// Whether this comes from the replica's local fallback (Redis unreachable).
    pub degraded: bool,
}

fn shared_snapshot(service: &str, r: &SharedRead) -> BreakerSnapshot {
    let o = &r.observed;
    BreakerSnapshot {
        service: service.to_string(),
        state: o.state,
        failures_in_window: r.failures,
        calls_in_window: r.calls,
        consecutive_trips: r.trips,
        last_transition_ms: (r.changed_at_ms > 0).then_some(r.changed_at_ms),
        last_transition_reason: r.reason.clone(),
        open_until_ms: (o.state == BreakerState::Open).then_some(o.open_until_ms),
        live_probes: r.live_probes,
        degraded: false,
    }
}

fn local_snapshot(entry: &Entry) -> BreakerSnapshot {
    let now = Instant::now();
    let wall_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    // Instants have no epoch: place them on the wall clock relative to now.
    let to_wall = |t: Instant| {
        if t >= now {
            wall_ms.saturating_add(i64::try_from((t - now).as_millis()).unwrap_or(i64::MAX))
        } else {
            wall_ms.saturating_sub(i64::try_from((now - t).as_millis()).unwrap_or(i64::MAX))
        }
    };
    let mut local = lock(&entry.local);
    let (failures, calls) = local.window(&entry.policy, now);
    BreakerSnapshot {
        service: entry.service.clone(),
        state: local.state,
        failures_in_window: failures,
        calls_in_window: calls,
        consecutive_trips: local.trips(),
        last_transition_ms: Some(to_wall(local.changed_at)),
        last_transition_reason: local.reason.to_string(),
        open_until_ms: (local.state == BreakerState::Open).then(|| to_wall(local.open_until)),
        live_probes: u32::try_from(local.live_probes(now)).unwrap_or(u32::MAX),
        degraded: true,
    }
}

impl Breakers {
    /// Health view of one breaker. Reads Redis (one script call) unless degraded; an
    /// unreachable Redis switches to degraded mode and answers from the local breaker.
    pub async fn snapshot(&self, service: &str) -> Result<BreakerSnapshot, BreakerError> {
        let entry = self.entry(service);
        if !self.degraded() {
            match entry.shared.read(&self.inner.redis, &entry.policy).await {
                Ok(r) => {
                    self.apply(&entry, &r.observed, Instant::now(), true);
                    return Ok(shared_snapshot(&entry.service, &r));
                }
                Err(e) if e.is_unavailable() => self.redis_failed(&e, "breaker_read"),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(local_snapshot(&entry))
    }

    /// Snapshots of every service this replica knows, sorted by name.
    pub async fn snapshots(&self) -> Result<Vec<BreakerSnapshot>, BreakerError> {
        let mut out = Vec::new();
        for s in self.services() {
            out.push(self.snapshot(&s).await?);
        }
        Ok(out)
    }
}
