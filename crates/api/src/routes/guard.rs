//! The steps the user routes share after auth and the per-IP window: admission (layer 2) and the
//! quota ticket guard (layer 3).

use std::time::Duration;

use tokio::time::Instant;

use limiter_core::Rejection;

use crate::admin::slot_holders::HeldSlot;
use crate::error::ApiError;
use crate::limits::admission::RouteClass;
use crate::limits::quota::{QuotaStore, Ticket};
use crate::state::AppState;

/// Waits for a slot (per-user and global caps) until the queue timeout.
pub async fn admit(state: &AppState, user: &str, class: RouteClass) -> Result<HeldSlot, ApiError> {
    admit_watched(state, user, class, None).await
}

/// [`admit`], reporting queue positions to `positions` (for SSE `queued` events).
pub async fn admit_watched(
    state: &AppState,
    user: &str,
    class: RouteClass,
    positions: Option<tokio::sync::watch::Sender<u32>>,
) -> Result<HeldSlot, ApiError> {
    if state.is_shutting_down() {
        return Err(shutting_down());
    }
    let deadline = Instant::now() + state.config().queue_timeout();
    state
        .gate()
        .admit_watched(user, class, deadline, positions)
        .await
        // Counted per user while held: the fleet view shows who is at the per-user cap.
        .map(|slot| HeldSlot::new(slot, state.slot_holders(), user))
        .map_err(|e| match e {
            Rejection::Timeout { .. } => ApiError::QueueTimeout {
                retry_after: Duration::from_secs(10),
            },
            Rejection::Full => ApiError::QueueFull {
                retry_after: Duration::from_secs(10),
            },
            Rejection::UserQueueFull => ApiError::UserQueueFull {
                retry_after: Duration::from_secs(10),
            },
            Rejection::ShuttingDown => shutting_down(),
            Rejection::Reset => ApiError::ServiceUnavailable {
                retry_after: Duration::from_secs(1),
                detail: "the wait queue was reset; retry",
                cause: "queue reset by an admin".into(),
            },
            Rejection::OutageTooLong => ApiError::ServiceUnavailable {
                retry_after: Duration::from_secs(5),
                detail: "the shared limits are unreachable; retry",
                cause: "Redis unreachable for longer than a lease (outage policy: safety)".into(),
            },
            Rejection::Unavailable(e) => {
                ApiError::unavailable("admission is temporarily unavailable", e)
            }
        })
}

/// The 503 of a replica that is shutting down.
pub fn shutting_down() -> ApiError {
    ApiError::ServiceUnavailable {
        retry_after: Duration::from_secs(1),
        detail: "this server is shutting down; retry",
        cause: "shutdown in progress".into(),
    }
}

/// A spent query that is refunded unless kept: explicitly with [`TicketGuard::refund`] on a
/// failure that is not the user's doing, and by `Drop` if the handler panics or if the request is
/// abandoned (client gone) before the pipeline started working on it.
#[derive(Debug)]
pub struct TicketGuard {
    quota: QuotaStore,
    ticket: Option<Ticket>,
    /// Set once the pipeline has the request: from then on a client disconnect keeps the spend
    /// (the upstream work is being paid for).
    started: bool,
}

impl TicketGuard {
    /// Guards a ticket.
    pub fn new(quota: QuotaStore, ticket: Ticket) -> Self {
        TicketGuard {
            quota,
            ticket: Some(ticket),
            started: false,
        }
    }

    /// The ticket.
    pub fn ticket(&self) -> Option<&Ticket> {
        self.ticket.as_ref()
    }

    /// Marks that the pipeline is about to work on the request.
    pub fn start(&mut self) {
        self.started = true;
    }

    /// Keeps the spend (the request succeeded or failed by the user's doing).
    pub fn keep(mut self) {
        self.ticket = None;
    }

    /// Gives the query back.
    pub async fn refund(mut self) {
        if let Some(t) = self.ticket.take() {
            self.quota.refund_eventually(t).await;
        }
    }
}

impl Drop for TicketGuard {
    fn drop(&mut self) {
        // Reached with a ticket only on a panic, or when the client went away (the handler future
        // is dropped): before the pipeline started, nothing was served, so the query is given back.
        if (std::thread::panicking() || !self.started)
            && let Some(t) = self.ticket.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let quota = self.quota.clone();
            rt.spawn(async move { quota.refund_eventually(t).await });
        }
    }
}
