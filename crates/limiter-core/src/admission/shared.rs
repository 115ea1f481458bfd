//! Admission through the shared queue in Redis: enter, then wait for a grant pushed by whichever
//! replica released a slot (or collected by a heartbeat), until the deadline.

use std::sync::Arc;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::class::Class;
use super::inner::{Inner, ttl_ms_i64};
use super::permit::Permit;
use super::rejection::Rejection;
use super::scripts::Entered;
use super::waiter::{Event, Waiter, WaiterGuard};

impl Inner {
    /// Admission through the shared queue; `None` when Redis became unreachable (with local
    /// fallback): the caller waits in the local queue instead.
    pub(crate) async fn admit_shared(
        self: &Arc<Self>,
        user: &[u8],
        class: Class,
        deadline: Instant,
        positions: Option<watch::Sender<u32>>,
    ) -> Result<Option<Permit>, Rejection> {
        let started = Instant::now();
        // How long after its arrival the waiter may be granted: its wait budget and a margin of
        // two heartbeats.
        let budget = deadline.saturating_duration_since(started) + self.cfg.heartbeat_ttl * 2;
        let id = self.waiter_id(budget);
        let user_key = self.scripts.user_key(user);

        // Registered before entering: a grant can be pushed before the enter reply arrives.
        let (tx, rx) = oneshot::channel();
        self.waiters.insert(
            id.clone(),
            Waiter {
                tx,
                user_key: user_key.clone(),
                class,
                position: positions.clone(),
            },
        );
        let mut guard = WaiterGuard {
            waiters: Arc::clone(&self.waiters),
            id: id.clone(),
            user_key: user_key.clone(),
            class,
            rx: Some(rx),
            armed: true,
        };

        let entered = self
            .scripts
            .enter(
                &id,
                &user_key,
                class,
                self.cfg.max_queue,
                self.cfg.max_queued_per_user,
                budget,
            )
            .await;
        let (position_at_entry, entered_at_ms) = match entered {
            Ok(Entered::Granted { expiry, fence }) => {
                guard.disarm();
                if let Some(p) = &positions {
                    p.send_replace(0);
                }
                let at = expiry - ttl_ms_i64(self.cfg.lease_ttl);
                let permit =
                    self.shared_permit(id, &user_key, class, expiry, fence, started, 0, at)?;
                return Ok(Some(permit));
            }
            Ok(Entered::Full) => {
                guard.disarm();
                return Err(Rejection::Full);
            }
            Ok(Entered::UserFull) => {
                guard.disarm();
                return Err(Rejection::UserQueueFull);
            }
            // Only a caller that already went away left before entering: nobody reads this.
            Ok(Entered::Withdrawn) => {
                guard.disarm();
                return Err(Rejection::Timeout {
                    waited: started.elapsed(),
                });
            }
            Ok(Entered::Queued { position, at_ms }) => (position, at_ms),
            // The guard leaves the queue (best effort) in case the call did run.
            Err(e) if e.is_unavailable() && self.cfg.local_fallback => {
                drop(guard);
                self.enter_degraded();
                return Ok(None);
            }
            Err(e) => return Err(Rejection::Unavailable(e)),
        };
        // For the caller's queue-wait span, when it declares the field.
        tracing::Span::current().record("fleetgate.queue.position", position_at_entry);
        if let Some(p) = &positions {
            p.send_replace(position_at_entry);
        }

        let Some(rx) = guard.rx.as_mut() else {
            return Err(Rejection::ShuttingDown);
        };
        tokio::select! {
            event = rx => {
                guard.disarm();
                match event {
                    Ok(Event::Granted { fence, expiry }) => {
                        if let Some(p) = &positions {
                            p.send_replace(0);
                        }
                        self.shared_permit(
                            id,
                            &user_key,
                            class,
                            expiry,
                            fence,
                            started,
                            position_at_entry,
                            entered_at_ms,
                        )
                        .map(Some)
                    }
                    Ok(Event::Reset) => Err(Rejection::Reset),
                    Ok(Event::Degraded) => {
                        // Leave the shared queue, best effort (Redis is likely down; one that
                        // comes back empty has forgotten us anyway), and wait out the rest of
                        // the budget in the local one.
                        let waiters = Arc::clone(&self.waiters);
                        tokio::spawn(async move {
                            waiters.leave(&id, &user_key, class).await;
                        });
                        Ok(None)
                    }
                    Ok(Event::ShuttingDown) | Err(_) => Err(Rejection::ShuttingDown),
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                guard.leave_now().await;
                Err(Rejection::Timeout { waited: started.elapsed() })
            }
        }
    }
}
