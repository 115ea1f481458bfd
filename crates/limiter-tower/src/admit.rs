//! [`Admit`]: where an [`crate::AdmissionLayer`] takes its slots from. limiter-core's
//! [`Admission`] is one; a service wraps it to count, trace or account for its slots (to wait for
//! their release at shutdown, say) and hands the wrapper to
//! [`crate::AdmissionLayer::with_admitter`]. The layer keeps the rest: keys, modes, deadlines,
//! refusals and the slot held until the response body ends.

use std::future::Future;

use futures_util::future::BoxFuture;
use std::time::Duration;

use limiter_core::{Admission, Class, Classes, Permit, Rejection};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::LimitRejection;

/// A source of admission slots.
///
/// ```
/// use std::time::Duration;
/// use limiter_core::{Admission, Class, Classes, Permit};
/// use limiter_tower::{Admit, LimitRejection};
/// use tokio::sync::watch;
/// use tokio::time::Instant;
///
/// /// limiter-core's queue, logging every grant.
/// #[derive(Debug)]
/// struct Logged(Admission);
///
/// impl Admit for Logged {
///     type Slot = Permit;
///
///     fn classes(&self) -> &Classes {
///         self.0.classes()
///     }
///
///     async fn admit(
///         &self,
///         key: &str,
///         class: Class,
///         deadline: Instant,
///         positions: Option<watch::Sender<u32>>,
///     ) -> Result<Permit, LimitRejection> {
///         let permit = Admit::admit(&self.0, key, class, deadline, positions).await?;
///         tracing::info!(queued_ms = permit.queued().as_millis() as u64, "granted");
///         Ok(permit)
///     }
///
///     fn queued(slot: &Permit) -> Duration {
///         slot.queued()
///     }
/// }
/// ```
pub trait Admit: Send + Sync + std::fmt::Debug + 'static {
    /// Holds a slot; dropping it frees the slot.
    type Slot: Send + 'static;

    /// The queue's classes, highest priority first.
    fn classes(&self) -> &Classes;

    /// Waits for a slot for `key` in `class` until `deadline`, publishing the 1-based queue
    /// position (0 once granted) to `positions` when given.
    fn admit(
        &self,
        key: &str,
        class: Class,
        deadline: Instant,
        positions: Option<watch::Sender<u32>>,
    ) -> impl Future<Output = Result<Self::Slot, LimitRejection>> + Send;

    /// How long `slot` waited in the queue.
    fn queued(slot: &Self::Slot) -> Duration;

    /// Resolves when the request holding `slot` must stop: the slot may no longer be counted
    /// fleet-wide (see `limiter_core::Revocation`). Never, by default.
    fn revoked(slot: &Self::Slot) -> BoxFuture<'static, ()> {
        let _ = slot;
        Box::pin(std::future::pending())
    }
}

impl Admit for Admission {
    type Slot = Permit;

    fn classes(&self) -> &Classes {
        Admission::classes(self)
    }

    async fn admit(
        &self,
        key: &str,
        class: Class,
        deadline: Instant,
        positions: Option<watch::Sender<u32>>,
    ) -> Result<Permit, LimitRejection> {
        let admitted = match positions {
            Some(p) => self.admit_watched(key.as_bytes(), class, deadline, p).await,
            None => Admission::admit(self, key.as_bytes(), class, deadline).await,
        };
        admitted.map_err(|e| {
            if let Rejection::Unavailable(cause) = &e {
                tracing::warn!(error = %cause, "admission unavailable");
            }
            LimitRejection::from(&e)
        })
    }

    fn queued(slot: &Permit) -> Duration {
        slot.queued()
    }

    fn revoked(slot: &Permit) -> BoxFuture<'static, ()> {
        Box::pin(slot.revocation().revoked())
    }
}

/// The `Retry-After` of a refusal by a full or slow queue.
pub(crate) const QUEUE_RETRY_AFTER: Duration = Duration::from_secs(10);

impl From<&Rejection> for LimitRejection {
    /// limiter-core's refusal as the client sees it (queue refusals with a 10 s `Retry-After`).
    fn from(r: &Rejection) -> Self {
        let retry_after = QUEUE_RETRY_AFTER;
        match r {
            Rejection::Timeout { .. } => LimitRejection::QueueTimeout { retry_after },
            Rejection::Full => LimitRejection::QueueFull { retry_after },
            Rejection::UserQueueFull => LimitRejection::UserQueueFull { retry_after },
            Rejection::ShuttingDown => LimitRejection::ShuttingDown {
                retry_after: Duration::from_secs(1),
            },
            Rejection::Reset | Rejection::Unavailable(_) => LimitRejection::Unavailable {
                retry_after: Duration::from_secs(1),
            },
            // Redis stayed out of reach past the time this replica's slots are surely counted
            // there: it refuses until Redis answers, which takes longer than a queue reset.
            Rejection::OutageTooLong => LimitRejection::Unavailable {
                retry_after: Duration::from_secs(5),
            },
        }
    }
}

impl From<Rejection> for LimitRejection {
    fn from(r: Rejection) -> Self {
        LimitRejection::from(&r)
    }
}

/// Put in the request's extensions by an [`crate::AdmissionLayer`] before the inner service
/// runs: what the admission cost, for the handler to report.
///
/// ```
/// use limiter_tower::Admitted;
///
/// async fn handler(admitted: Option<axum::Extension<Admitted>>) -> String {
///     let ms = admitted.map_or(0, |a| a.queued().as_millis());
///     format!("waited {ms} ms for a slot")
/// }
/// # let _ = handler;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    pub(crate) queued: Duration,
}

impl Admitted {
    /// How long the request waited for its slot.
    pub fn queued(&self) -> Duration {
        self.queued
    }
}
