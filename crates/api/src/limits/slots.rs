//! [`SlotSource`]: where the service's admission layers take their slots: the replica's [`Gate`]
//! (which counts them for the shutdown drain, traces and measures each wait, and turns waiters
//! away once shutdown begins), each slot counted for its user in the fleet view while held.

use std::time::Duration;

use limiter_core::{Class, Classes, Rejection};
use limiter_tower::{Admit, LimitRejection};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::admin::slot_holders::{HeldSlot, SlotHolders};
use crate::limits::admission::{Gate, RouteClass};

/// The replica's gate as limiter-tower's slot source.
#[derive(Debug, Clone)]
pub struct SlotSource {
    gate: Gate,
    holders: SlotHolders,
}

impl SlotSource {
    /// Slots from `gate`, counted in `holders`.
    pub fn new(gate: Gate, holders: SlotHolders) -> Self {
        SlotSource { gate, holders }
    }
}

/// The service's `Retry-After` for each refusal of the queue.
fn refusal(r: Rejection) -> LimitRejection {
    match r {
        Rejection::Unavailable(e) => {
            tracing::warn!(error = %e, "admission unavailable");
            LimitRejection::Unavailable {
                retry_after: Duration::from_secs(5),
            }
        }
        other => LimitRejection::from(other),
    }
}

impl Admit for SlotSource {
    type Slot = HeldSlot;

    fn classes(&self) -> &Classes {
        self.gate.classes()
    }

    async fn admit(
        &self,
        key: &str,
        class: Class,
        deadline: Instant,
        positions: Option<watch::Sender<u32>>,
    ) -> Result<HeldSlot, LimitRejection> {
        let Some(class) = RouteClass::of(class) else {
            return Err(LimitRejection::Unavailable {
                retry_after: Duration::from_secs(5),
            });
        };
        self.gate
            .admit_watched(key, class, deadline, positions)
            .await
            // Counted per user while held: the fleet view shows who is at the per-user cap.
            .map(|slot| HeldSlot::new(slot, &self.holders, key))
            .map_err(refusal)
    }

    fn queued(slot: &HeldSlot) -> Duration {
        slot.queued()
    }

    fn revoked(slot: &HeldSlot) -> futures_util::future::BoxFuture<'static, ()> {
        slot.revoked()
    }
}
