//! Layer 2 behind a small internal interface: [`Gate::admit`] waits for a concurrency slot (per-user
//! cap and fleet-wide cap) until a deadline and returns a [`Slot`] that frees it when dropped.
//!
//! INTERIM BACKEND. The fleet-wide priority wait queue (`limiter_core::admission`) is being written
//! separately. Until it lands, the gate takes its slots with `limiter_core::LeaseManager` (one
//! atomic script over the `user:<id>` and `global` scopes, leases renewed while held, released on
//! drop) and waits by polling with jitter. The caps are therefore enforced fleet-wide for real, but
//! the interim has NO shared queue: no priority between classes, no FIFO, `queue_full` only counts
//! this replica's waiters, and queue depth in health is this replica's. Swapping the backend only
//! touches this file.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use limiter_core::{Acquire, Lease, LeaseManager, LeaseScope, LimiterError, RedisHandle};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;
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
    /// All classes, by priority.
    pub const ALL: [RouteClass; 3] = [RouteClass::Chat, RouteClass::Research, RouteClass::Export];

    /// The name used in keys, headers and health.
    pub fn name(self) -> &'static str {
        match self {
            RouteClass::Chat => "chat",
            RouteClass::Research => "research",
            RouteClass::Export => "export",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Caps and timing of the gate.
#[derive(Debug, Clone)]
pub struct GateConfig {
    /// Lease group (all keys of the gate share its hash tag).
    pub group: String,
    /// Slots per user.
    pub user_cap: u32,
    /// Slots fleet-wide.
    pub global_cap: u32,
    /// Lease TTL (renewed while held).
    pub lease_ttl: Duration,
    /// Waiters allowed before `Full` (interim: this replica's waiters).
    pub max_queue: u32,
}

/// Why no slot was granted.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    /// The deadline passed while waiting.
    #[error("timed out waiting for a slot")]
    Timeout,
    /// Too many waiters.
    #[error("wait queue full")]
    Full,
    /// The queue was reset by an admin or the replica is shutting down.
    #[error("queue reset")]
    Reset,
    /// Redis could not answer.
    #[error("admission unavailable")]
    Unavailable(#[source] LimiterError),
}

/// Queue and slot figures for the health endpoint.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateStats {
    /// Which backend answers (`lease-poll-interim` until the shared queue lands).
    pub backend: &'static str,
    /// Waiters per class (interim: on this replica only).
    pub waiting: WaitingByClass,
    /// Slots held fleet-wide right now.
    pub slots_in_use: u64,
    /// The fleet-wide cap.
    pub global_cap: u32,
    /// The per-user cap.
    pub user_cap: u32,
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
    leases: LeaseManager,
    cfg: GateConfig,
    waiting: [AtomicU64; 3],
    /// Bumped by `reset_queue`: waiters that see it change give up with `Reset`.
    generation: AtomicU64,
    wake: Notify,
    closed: AtomicBool,
    /// Slots not yet released in Redis (held, or their release still in flight).
    outstanding: AtomicUsize,
    released: Notify,
}

/// The admission gate of one replica. Cheap to clone.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("cfg", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

/// A granted slot. Dropping it releases the slot (the release is awaited by [`Gate::shutdown`]).
pub struct Slot {
    lease: Option<Lease>,
    queued: Duration,
    gate: Arc<Inner>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("queued", &self.queued)
            .finish_non_exhaustive()
    }
}

impl Slot {
    /// How long the request waited for its slot.
    pub fn queued(&self) -> Duration {
        self.queued
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        let gate = Arc::clone(&self.gate);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Err(e) = lease.release().await {
                        tracing::warn!(error = %e, "slot release failed; its TTL frees it");
                    }
                    gate.slot_done();
                });
            }
            Err(_) => {
                // No runtime: the lease TTL frees the slot.
                drop(lease);
                gate.slot_done();
            }
        }
    }
}

impl Inner {
    fn slot_done(&self) {
        self.outstanding.fetch_sub(1, Ordering::AcqRel);
        self.released.notify_waiters();
    }
}

struct WaitingGuard<'a>(&'a AtomicU64);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Gate {
    /// Starts the gate on `redis`.
    pub async fn start(redis: RedisHandle, cfg: GateConfig) -> Result<Gate, LimiterError> {
        let leases = LeaseManager::new(redis, &cfg.group, cfg.lease_ttl)?;
        Ok(Gate {
            inner: Arc::new(Inner {
                leases,
                cfg,
                waiting: Default::default(),
                generation: AtomicU64::new(0),
                wake: Notify::new(),
                closed: AtomicBool::new(false),
                outstanding: AtomicUsize::new(0),
                released: Notify::new(),
            }),
        })
    }

    /// Waits for a slot for `user` until `deadline`.
    pub async fn admit(
        &self,
        user: &str,
        class: RouteClass,
        deadline: Instant,
    ) -> Result<Slot, AdmitError> {
        let inner = &self.inner;
        let start = Instant::now();
        let generation = inner.generation.load(Ordering::Acquire);
        let total: u64 = inner
            .waiting
            .iter()
            .map(|w| w.load(Ordering::Relaxed))
            .sum();
        if total >= u64::from(inner.cfg.max_queue) {
            return Err(AdmitError::Full);
        }
        let counter = &inner.waiting[class.index()];
        counter.fetch_add(1, Ordering::Relaxed);
        let _waiting = WaitingGuard(counter);
        let scopes = [
            LeaseScope::new(format!("user:{user}"), inner.cfg.user_cap),
            LeaseScope::new("global", inner.cfg.global_cap),
        ];
        loop {
            if inner.closed.load(Ordering::Acquire)
                || inner.generation.load(Ordering::Acquire) != generation
            {
                return Err(AdmitError::Reset);
            }
            // Counted before the lease exists so that shutdown never misses a slot being granted.
            inner.outstanding.fetch_add(1, Ordering::AcqRel);
            let acquired = inner.leases.try_acquire(&scopes).await;
            let retry_after = match acquired {
                Ok(Acquire::Granted(lease)) => {
                    return Ok(Slot {
                        lease: Some(lease),
                        queued: start.elapsed(),
                        gate: Arc::clone(inner),
                    });
                }
                Ok(Acquire::Refused { retry_after, .. }) => {
                    inner.slot_done();
                    retry_after
                }
                Err(e) => {
                    inner.slot_done();
                    return Err(AdmitError::Unavailable(e));
                }
            };
            // Poll soon (releases come before expiries), with jitter so waiters spread out.
            let jitter = Duration::from_millis(rand::random_range(0..40));
            let pause = retry_after.min(Duration::from_millis(40)) + jitter;
            let wake_at = (Instant::now() + pause).min(deadline);
            if Instant::now() >= deadline {
                return Err(AdmitError::Timeout);
            }
            tokio::select! {
                _ = tokio::time::sleep_until(wake_at) => {}
                _ = inner.wake.notified() => {}
            }
            if Instant::now() >= deadline {
                return Err(AdmitError::Timeout);
            }
        }
    }

    /// Queue depth and slot use.
    pub async fn stats(&self) -> Result<GateStats, LimiterError> {
        let inner = &self.inner;
        let slots_in_use = inner.leases.in_use(b"global").await?;
        let w = |c: RouteClass| inner.waiting[c.index()].load(Ordering::Relaxed);
        Ok(GateStats {
            backend: "lease-poll-interim",
            waiting: WaitingByClass {
                chat: w(RouteClass::Chat),
                research: w(RouteClass::Research),
                export: w(RouteClass::Export),
            },
            slots_in_use,
            global_cap: inner.cfg.global_cap,
            user_cap: inner.cfg.user_cap,
        })
    }

    /// Answers every waiter with `Reset` (admin `reset-queue`); returns how many were waiting.
    pub async fn reset_queue(&self) -> Result<u64, LimiterError> {
        let inner = &self.inner;
        let n = inner
            .waiting
            .iter()
            .map(|w| w.load(Ordering::Relaxed))
            .sum();
        inner.generation.fetch_add(1, Ordering::AcqRel);
        inner.wake.notify_waiters();
        Ok(n)
    }

    /// Stops admitting: current waiters get `Reset`. Held slots stay held until dropped.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.wake.notify_waiters();
    }

    /// Closes the gate and waits (up to `timeout`) until every slot of this replica is released
    /// in Redis. Returns whether all were.
    pub async fn shutdown(&self, timeout: Duration) -> bool {
        self.close();
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

    /// Slots of this replica not yet released.
    pub fn outstanding(&self) -> usize {
        self.inner.outstanding.load(Ordering::Acquire)
    }

    /// The Redis key of a lease scope (tests read it directly).
    pub fn scope_key(&self, scope: &[u8]) -> String {
        self.inner.leases.scope_key(scope)
    }
}
