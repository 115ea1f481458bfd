//! Layer 2 behind a small internal interface: [`Gate::admit`] waits in the fleet-wide priority
//! queue (`limiter_core::Admission`: chat > research > export, FIFO within a class, per-user and
//! global caps, push hand-off of released slots, degraded local share while Redis is down) until a
//! deadline and returns a [`Slot`] that frees its place when dropped.
//!
//! What the gate adds on top: it counts the slots of this replica until their release is
//! confirmed by Redis, so [`Gate::shutdown`] can wait for every one of them (a dropped permit
//! would otherwise release in a detached task, possibly after the process is gone), and it turns
//! waiters away the moment shutdown begins ([`Gate::close`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use limiter_core::{
    Admission, AdmissionConfig, Class, LimiterError, Permit, RedisHandle, Rejection,
};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::Instrument;
use tracing::field::Empty;
use utoipa::ToSchema;

/// The route class of a request: its queue priority (chat > research > export).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteClass {
    /// `POST /api/chat`.
    Chat,
    /// `POST /api/research`.
    Research,
    /// `POST /api/export`.
    Export,
}

impl RouteClass {
    /// Every class, in queue priority order (the order of the admission queue's classes).
    pub const ALL: [RouteClass; 3] = [RouteClass::Chat, RouteClass::Research, RouteClass::Export];

    /// The name used in keys, headers, health and the admission queue's class list.
    pub fn name(self) -> &'static str {
        match self {
            RouteClass::Chat => "chat",
            RouteClass::Research => "research",
            RouteClass::Export => "export",
        }
    }

    /// The queue's class names, highest priority first.
    pub fn queue_classes() -> Vec<String> {
        RouteClass::ALL
            .iter()
            .map(|c| c.name().to_string())
            .collect()
    }

    fn class(self) -> Class {
        Class::new(self as u8)
    }

    /// The route class of a queue class (`None` for one the service does not configure).
    pub fn of(class: Class) -> Option<RouteClass> {
        RouteClass::ALL.into_iter().find(|c| c.class() == class)
    }
}

/// Records how a wait for a slot ended (span fields, decision counter, wait histogram); a wait
/// whose future is dropped (client gone) counts as `cancelled`.
struct WaitRecord {
    class: &'static str,
    started: Instant,
    span: tracing::Span,
    done: bool,
}

impl WaitRecord {
    fn finish(&mut self, outcome: &'static str, local: bool) {
        self.done = true;
        let waited = self.started.elapsed();
        self.span.record(
            "fleetgate.queue.waited_ms",
            u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
        );
        self.span.record("fleetgate.queue.outcome", outcome);
        let m = crate::metrics::get();
        m.decision(
            "admission",
            self.class,
            if local && outcome == "admitted" {
                "admitted_local"
            } else {
                outcome
            },
        );
        m.queue_waited(self.class, outcome, waited);
    }
}

impl Drop for WaitRecord {
    fn drop(&mut self) {
        if !self.done {
            self.finish("cancelled", false);
        }
    }
}

/// Queue and slot figures for the health endpoint.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateStats {
    /// Waiters per class, fleet-wide.
    pub waiting: WaitingByClass,
    /// Slots held fleet-wide right now.
    pub slots_in_use: u64,
    /// The fleet-wide cap.
    pub global_cap: u32,
    /// The per-user cap.
    pub user_cap: u32,
    /// Replicas with a live heartbeat.
    pub live_replicas: u64,
    /// Whether this replica admits from its local share of the caps (Redis unreachable).
    pub degraded: bool,
    /// Waiters of this replica.
    pub local_waiters: u64,
}

/// This replica's admission, read locally (so also while Redis is down).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalAdmission {
    /// This replica's id in the fleet registry (its lease and waiter ids start with it).
    pub replica_id: String,
    /// `shared` (caps in Redis), `degraded` (Redis unreachable: this replica's local share) or
    /// `recovering` (Redis back: a local grant runs only if the shared caps have room too, until
    /// the fleet has registered what it granted during the outage).
    pub mode: String,
    /// Replicas as last read from the registry.
    pub known_replicas: u32,
    /// This replica's share of the global cap while Redis is unreachable.
    pub local_share: u32,
    /// Slots granted from the local share and still held.
    pub local_slots_in_use: u64,
    /// Waiters of this replica (shared and local queues).
    pub local_waiters: u64,
}

/// Waiters per class.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct WaitingByClass {
    /// Chat waiters.
    pub chat: u64,
    /// Research waiters.
    pub research: u64,
    /// Export waiters.
    pub export: u64,
}

struct Inner {
    admission: Admission,
    closed: Notify,
    is_closed: std::sync::atomic::AtomicBool,
    /// Slots of this replica not yet released in Redis (held, or their release in flight).
    outstanding: AtomicUsize,
    released: Notify,
}

impl Inner {
    fn slot_done(&self) {
        self.outstanding.fetch_sub(1, Ordering::AcqRel);
        self.released.notify_waiters();
    }
}

/// The admission gate of one replica. Cheap to clone.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("admission", &self.inner.admission)
            .finish_non_exhaustive()
    }
}

/// A granted slot. Dropping it releases the slot and hands it to the next waiter.
pub struct Slot {
    permit: Option<Permit>,
    gate: Arc<Inner>,
    /// The `lease` span: open while the slot is held.
    _span: tracing::Span,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("permit", &self.permit)
            .finish_non_exhaustive()
    }
}

impl Slot {
    /// How long the request waited for its slot.
    pub fn queued(&self) -> Duration {
        self.permit.as_ref().map_or(Duration::ZERO, Permit::queued)
    }

    /// Its place in the queue when it entered (0: granted at once).
    pub fn position_at_entry(&self) -> u32 {
        self.permit.as_ref().map_or(0, Permit::position_at_entry)
    }

    /// Whether the slot came from the local share (degraded mode).
    pub fn is_local(&self) -> bool {
        self.permit.as_ref().is_some_and(Permit::is_local)
    }

    /// Resolves when the request holding the slot must stop (see `limiter_core::Revocation`).
    pub fn revoked(&self) -> futures_util::future::BoxFuture<'static, ()> {
        match &self.permit {
            Some(p) => Box::pin(p.revocation().revoked()),
            None => Box::pin(std::future::pending()),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let gate = Arc::clone(&self.gate);
        let span = std::mem::replace(&mut self._span, tracing::Span::none());
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(
                    async move {
                        if let Err(e) = permit.release().await {
                            tracing::warn!(error = %e, "slot release failed; its lease TTL frees it");
                        }
                        gate.slot_done();
                    }
                    // The release is the lease span's last child; the span ends with it.
                    .instrument(span),
                );
            }
            Err(_) => {
                drop(permit);
                gate.slot_done();
            }
        }
    }
}

impl Gate {
    /// Joins the fleet's queue (starts the admission's background tasks).
    pub async fn start(redis: RedisHandle, cfg: AdmissionConfig) -> Result<Gate, LimiterError> {
        let admission = Admission::start(redis, cfg).await?;
        Ok(Gate {
            inner: Arc::new(Inner {
                admission,
                closed: Notify::new(),
                is_closed: std::sync::atomic::AtomicBool::new(false),
                outstanding: AtomicUsize::new(0),
                released: Notify::new(),
            }),
        })
    }

    /// The fleet-wide queue itself (its caps, for runtime limits).
    pub fn admission(&self) -> &Admission {
        &self.inner.admission
    }

    /// Waits for a slot for `user` until `deadline`.
    pub async fn admit(
        &self,
        user: &str,
        class: RouteClass,
        deadline: Instant,
    ) -> Result<Slot, Rejection> {
        self.admit_watched(user, class, deadline, None).await
    }

    /// Like [`Gate::admit`], publishing the queue position (1-based; 0 once granted) to
    /// `positions` when given (streamed to SSE clients as `queued` events).
    pub async fn admit_watched(
        &self,
        user: &str,
        class: RouteClass,
        deadline: Instant,
        positions: Option<tokio::sync::watch::Sender<u32>>,
    ) -> Result<Slot, Rejection> {
        let span = tracing::info_span!(
            "queue.wait",
            fleetgate.queue.class = class.name(),
            fleetgate.queue.position = Empty,
            fleetgate.queue.waited_ms = Empty,
            fleetgate.queue.outcome = Empty,
        );
        let mut record = WaitRecord {
            class: class.name(),
            started: Instant::now(),
            span: span.clone(),
            done: false,
        };
        let result = self
            .admit_inner(user, class, deadline, positions)
            .instrument(span)
            .await;
        match result {
            Ok(mut slot) => {
                let waited = slot.position_at_entry() > 0;
                record.finish(if waited { "granted" } else { "admitted" }, slot.is_local());
                // A sibling of the wait, open for as long as the slot is held.
                slot._span = tracing::info_span!(
                    "lease",
                    fleetgate.lease.class = class.name(),
                    fleetgate.lease.local = slot.is_local(),
                    fleetgate.lease.queued = waited,
                );
                Ok(slot)
            }
            Err(e) => {
                record.finish(e.outcome(), false);
                Err(e)
            }
        }
    }

    async fn admit_inner(
        &self,
        user: &str,
        class: RouteClass,
        deadline: Instant,
        positions: Option<tokio::sync::watch::Sender<u32>>,
    ) -> Result<Slot, Rejection> {
        let inner = &self.inner;
        let closed = inner.closed.notified();
        tokio::pin!(closed);
        closed.as_mut().enable();
        if inner.is_closed.load(Ordering::Acquire) {
            return Err(Rejection::ShuttingDown);
        }
        // Counted before the grant exists so that shutdown never misses one being granted.
        inner.outstanding.fetch_add(1, Ordering::AcqRel);
        let result = tokio::select! {
            r = async {
                match positions {
                    Some(p) => {
                        inner
                            .admission
                            .admit_watched(user.as_bytes(), class.class(), deadline, p)
                            .await
                    }
                    None => inner.admission.admit(user.as_bytes(), class.class(), deadline).await,
                }
            } => r,
            // Dropping the admit future takes the waiter out of the queue (or hands on a grant
            // that raced in).
            () = &mut closed => Err(Rejection::ShuttingDown),
        };
        match result {
            Ok(permit) => Ok(Slot {
                _span: tracing::Span::none(),
                permit: Some(permit),
                gate: Arc::clone(inner),
            }),
            Err(r) => {
                inner.slot_done();
                Err(r)
            }
        }
    }

    /// Queue depth and slot use.
    pub async fn stats(&self) -> Result<GateStats, LimiterError> {
        let a = &self.inner.admission;
        let s = a.stats().await?;
        Ok(GateStats {
            waiting: WaitingByClass {
                chat: s.queued_in(RouteClass::Chat.class()),
                research: s.queued_in(RouteClass::Research.class()),
                export: s.queued_in(RouteClass::Export.class()),
            },
            slots_in_use: s.in_use,
            global_cap: a.config().global_cap,
            user_cap: a.config().user_cap,
            live_replicas: s.live_replicas,
            degraded: a.degraded(),
            local_waiters: u64::try_from(a.local_waiters()).unwrap_or(u64::MAX),
        })
    }

    /// This replica's admission state, without Redis.
    pub fn local(&self) -> LocalAdmission {
        let a = &self.inner.admission;
        LocalAdmission {
            replica_id: a.replica_id().to_string(),
            mode: a.mode_name().into(),
            known_replicas: a.live_replicas(),
            local_share: a.local_share(),
            local_slots_in_use: u64::try_from(a.local_in_use()).unwrap_or(u64::MAX),
            local_waiters: u64::try_from(a.local_waiters()).unwrap_or(u64::MAX),
        }
    }

    /// Whether this replica admits from its local share (Redis unreachable).
    pub fn degraded(&self) -> bool {
        self.inner.admission.degraded()
    }

    /// Empties the queue fleet-wide (admin `reset-queue`); returns how many were waiting.
    pub async fn reset_queue(&self) -> Result<u64, LimiterError> {
        self.inner.admission.reset_queue().await
    }

    /// Begins shutdown: no new admissions; this replica's waiters are answered and leave the
    /// queue. Slots already held stay held until their requests finish.
    pub async fn close(&self) {
        self.inner.is_closed.store(true, Ordering::Release);
        self.inner.closed.notify_waiters();
        self.inner.admission.shutdown().await;
    }

    /// Closes the gate and waits (up to `timeout`) until every slot of this replica is released
    /// in Redis. Returns whether all were.
    pub async fn shutdown(&self, timeout: Duration) -> bool {
        self.close().await;
        let inner = &self.inner;
        let deadline = Instant::now() + timeout;
        loop {
            let released = inner.released.notified();
            tokio::pin!(released);
            // Registered before the check, so a release in between is not missed.
            released.as_mut().enable();
            if inner.outstanding.load(Ordering::Acquire) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return inner.outstanding.load(Ordering::Acquire) == 0;
            }
        }
    }

    /// The queue's classes, highest priority first.
    pub fn classes(&self) -> &limiter_core::Classes {
        self.inner.admission.classes()
    }

    /// This replica's id in the fleet registry (its leases and waiters carry it).
    pub fn replica_id(&self) -> &str {
        self.inner.admission.replica_id()
    }

    /// Slots of this replica not yet released.
    pub fn outstanding(&self) -> usize {
        self.inner.outstanding.load(Ordering::Acquire)
    }
}
