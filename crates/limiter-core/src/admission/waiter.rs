//! This replica's waiters in the shared queue: how a grant pushed by Redis (or collected by a
//! heartbeat) reaches the waiting request, and how a waiter that gives up leaves the queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, watch};

use super::class::Class;
use super::scripts::QueueScripts;

/// What ends a wait in the shared queue.
#[derive(Debug)]
pub(crate) enum Event {
    Granted {
        fence: i64,
        expiry: i64,
    },
    Reset,
    ShuttingDown,
    /// Redis became unreachable: wait in the local queue instead.
    Degraded,
}

/// One waiting request of this replica.
#[derive(Debug)]
pub(crate) struct Waiter {
    pub(crate) tx: oneshot::Sender<Event>,
    pub(crate) user_key: String,
    pub(crate) class: Class,
    /// Where its queue position is published, if watched.
    pub(crate) position: Option<watch::Sender<u32>>,
}

/// This replica's waiters by id, and the script calls to answer for them.
#[derive(Debug)]
pub(crate) struct Waiters {
    map: Mutex<HashMap<String, Waiter>>,
    scripts: Arc<QueueScripts>,
}

impl Waiters {
    pub(crate) fn new(scripts: Arc<QueueScripts>) -> Self {
        Waiters {
            map: Mutex::new(HashMap::new()),
            scripts,
        }
    }

    pub(crate) fn insert(&self, id: String, w: Waiter) {
        if let Ok(mut m) = self.map.lock() {
            m.insert(id, w);
        }
    }

    pub(crate) fn remove(&self, id: &str) -> Option<Waiter> {
        self.map.lock().ok().and_then(|mut m| m.remove(id))
    }

    /// Takes every waiter out (shutdown, degraded mode).
    pub(crate) fn drain(&self) -> Vec<(String, Waiter)> {
        self.map
            .lock()
            .map(|mut m| m.drain().collect())
            .unwrap_or_default()
    }

    pub(crate) fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// The waiters whose position is watched: (id, class, where to publish it).
    pub(crate) fn watched(&self) -> Vec<(String, Class, watch::Sender<u32>)> {
        self.map
            .lock()
            .map(|m| {
                m.iter()
                    .filter_map(|(id, w)| w.position.clone().map(|p| (id.clone(), w.class, p)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Routes a pushed or collected message (`g waiter fence expiry` or `r waiter`) to its
    /// waiter. A grant whose waiter vanished is released (spawned), so the slot is handed on.
    pub(crate) fn deliver(&self, msg: &str) {
        let mut parts = msg.split(' ');
        let (kind, id) = match (parts.next(), parts.next()) {
            (Some(k), Some(id)) => (k, id),
            _ => return,
        };
        let event = match kind {
            "g" => {
                let fence = parts.next().and_then(|v| v.parse().ok());
                let expiry = parts.next().and_then(|v| v.parse().ok());
                match (fence, expiry) {
                    (Some(fence), Some(expiry)) => Event::Granted { fence, expiry },
                    _ => return,
                }
            }
            "r" => Event::Reset,
            _ => return,
        };
        let Some(w) = self.remove(id) else {
            // Not waiting here any more: its leave (in flight) settles any grant.
            return;
        };
        if let Err(Event::Granted { .. }) = w.tx.send(event) {
            // The waiter vanished between lookup and send: give the slot back.
            let scripts = Arc::clone(&self.scripts);
            let id = id.to_string();
            tokio::spawn(async move {
                if let Err(e) = scripts.release(&id, &w.user_key).await {
                    tracing::warn!(waiter = %id, error = %e, "returning an orphaned grant failed");
                }
            });
        }
    }
}

/// Takes a waiter out of the queue if its `admit` future ends without a decision (dropped by a
/// disconnecting client, or timed out). If a grant reached it meanwhile, the slot is handed on.
pub(crate) struct WaiterGuard {
    pub(crate) waiters: Arc<Waiters>,
    pub(crate) id: String,
    pub(crate) user_key: String,
    pub(crate) class: Class,
    pub(crate) rx: Option<oneshot::Receiver<Event>>,
    pub(crate) armed: bool,
}

impl WaiterGuard {
    /// The decision is in: nothing to clean up.
    pub(crate) fn disarm(&mut self) {
        self.armed = false;
        self.waiters.remove(&self.id);
    }

    /// Leaves now (awaited): used on timeout so the caller's rejection means "out of the queue".
    pub(crate) async fn leave_now(&mut self) {
        self.disarm();
        let scripts = &self.waiters.scripts;
        if let Err(e) = scripts.leave(&self.id, &self.user_key, self.class).await {
            tracing::warn!(waiter = %self.id, error = %e, "leaving the queue failed");
        }
        // A grant delivered locally before the leave is settled by the leave script.
    }
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let still_waiting = self.waiters.remove(&self.id).is_some();
        let granted_unclaimed = !still_waiting
            && matches!(
                self.rx.as_mut().map(|rx| rx.try_recv()),
                Some(Ok(Event::Granted { .. }))
            );
        if !(still_waiting || granted_unclaimed) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let scripts = Arc::clone(&self.waiters.scripts);
        let (id, user_key, class) = (self.id.clone(), self.user_key.clone(), self.class);
        rt.spawn(async move {
            let res = if still_waiting {
                scripts.leave(&id, &user_key, class).await.map(|_| ())
            } else {
                scripts.release(&id, &user_key).await
            };
            if let Err(e) = res {
                tracing::warn!(waiter = %id, error = %e, "cleanup of an abandoned waiter failed");
            }
        });
    }
}
