//! The quota ticket guard of the chat route (layer 3): a spent query refunded unless kept.

use crate::limits::quota::{QuotaStore, Ticket};

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

    /// No ticket (a route built without the quota): keeping and refunding do nothing.
    pub fn unspent(quota: QuotaStore) -> Self {
        TicketGuard {
            quota,
            ticket: None,
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
