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

/// Leaves kept for a retry at most: beyond, the queue entries' own expiry settles them.
const MAX_UNSETTLED: usize = 10_000;

/// This replica's waiters by id, and the script calls to answer for them.
#[derive(Debug)]
pub(crate) struct Waiters {
    map: Mutex<HashMap<String, Waiter>>,
    scripts: Arc<QueueScripts>,
    /// Leaves that failed because Redis was unreachable: (id, user key, class). Retried when it
    /// answers again; left in the queue, such a waiter would be granted a slot nobody uses
    /// (after a failover, or a partition shorter than the entry's expiry) until its lease expires.
    unsettled: Mutex<Vec<(String, String, Class)>>,
}

impl Waiters {
    pub(crate) fn new(scripts: Arc<QueueScripts>) -> Self {
        Waiters {
            map: Mutex::new(HashMap::new()),
            scripts,
            unsettled: Mutex::new(Vec::new()),
        }
    }

    /// Leaves the queue (settling a grant it may have had); kept for [`Waiters::settle`] if
    /// Redis cannot be reached.
    pub(crate) async fn leave(&self, id: &str, user_key: &str, class: Class) {
        match self.scripts.leave(id, user_key, class).await {
            Ok(_) => {}
            Err(e) if e.is_unavailable() => {
                if let Ok(mut u) = self.unsettled.lock()
                    && u.len() < MAX_UNSETTLED
                {
                    u.push((id.to_string(), user_key.to_string(), class));
                }
            }
            Err(e) => tracing::warn!(waiter = %id, error = %e, "leaving the queue failed"),
        }
    }

    /// Redis answers again: the leaves it missed.
    pub(crate) async fn settle(&self) {
        let todo = self
            .unsettled
            .lock()
            .map(|mut u| std::mem::take(&mut *u))
            .unwrap_or_default();
        for (id, user_key, class) in todo {
            self.leave(&id, &user_key, class).await;
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

    /// Routes pushed or collected messages (`g waiter fence expiry` or `r waiter`, a line each: a
    /// dispatch pushes its grants for one replica together) to their waiters.
    pub(crate) fn deliver(&self, msg: &str) {
        for line in msg.split('\n') {
            self.deliver_one(line);
        }
    }

    /// One message. A grant whose waiter vanished is released (spawned), so the slot is handed
    /// on.
    fn deliver_one(&self, msg: &str) {
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
        let waiters = Arc::clone(&self.waiters);
        let (id, user_key, class) = (self.id.clone(), self.user_key.clone(), self.class);
        rt.spawn(async move {
            if still_waiting {
                waiters.leave(&id, &user_key, class).await;
            } else if let Err(e) = waiters.scripts.release(&id, &user_key).await {
                tracing::warn!(waiter = %id, error = %e, "cleanup of an abandoned waiter failed");
                if e.is_unavailable() {
                    // A leave settles the grant too.
                    waiters.leave(&id, &user_key, class).await;
                }
            }
        });
    }
}
