//! [`Admission`]: the admission queue as seen by one replica, and everything a caller does with it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::background::{heartbeat_loop, listen};
use super::class::{Class, Classes};
use super::config::AdmissionConfig;
use super::inner::Inner;
use super::mode::Mode;
use super::permit::Permit;
use super::rejection::Rejection;
use super::scripts::QueueScripts;
use super::stats::QueueStats;
use super::waiter::Event;
use crate::{LimiterError, RedisHandle};

/// The admission queue as seen by one replica. Cheap to clone.
///
/// ```no_run
/// use std::time::Duration;
/// use limiter_core::{Admission, AdmissionConfig, RedisConfig, RedisHandle};
/// use tokio::time::Instant;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisHandle::new(&RedisConfig::default())?;
/// let cfg = AdmissionConfig {
///     classes: vec!["interactive".into(), "batch".into()],
///     ..AdmissionConfig::default()
/// };
/// let admission = Admission::start(redis, cfg).await?;
/// let batch = admission.classes().get("batch").expect("configured");
/// let deadline = Instant::now() + Duration::from_secs(60);
/// let permit = admission.admit(b"user-42", batch, deadline).await?;
/// // ... do the work; the slot is held (and renewed) until the permit is dropped.
/// drop(permit);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Admission {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("replica", &self.inner.scripts.replica())
            .field("cfg", &self.inner.cfg)
            .finish()
    }
}

impl Admission {
    /// Joins the fleet's queue as a new replica: starts the pub/sub listener and the heartbeat.
    /// Waits (briefly) for the first subscription so grants pushed right away are not missed; if
    /// Redis is down it returns anyway and the listener keeps retrying. Fails only on a
    /// configuration [`AdmissionConfig::validate`] refuses.
    pub async fn start(redis: RedisHandle, cfg: AdmissionConfig) -> Result<Self, LimiterError> {
        let classes = cfg.validate()?;
        // No dots: lease ids are `<replica>.<random>`, so reclaim can tell whose a lease is.
        let replica = format!("{:016x}", rand::random::<u64>());
        let scripts = QueueScripts::new(redis, &cfg, &classes, replica);
        let inner = Arc::new(Inner::new(cfg, classes, scripts));
        let (subscribed_tx, subscribed_rx) = oneshot::channel();
        let listener = tokio::spawn(listen(
            Arc::downgrade(&inner),
            inner.scripts.redis().clone(),
            inner.scripts.channel(),
            subscribed_tx,
        ));
        let heartbeat = tokio::spawn(heartbeat_loop(Arc::downgrade(&inner)));
        // Not stopped at shutdown: permits still held then go on renewing. It ends with the queue.
        tokio::spawn(inner.scripts.keeper().run());
        if let Ok(mut tasks) = inner.tasks.lock() {
            tasks.extend([listener, heartbeat]);
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), subscribed_rx).await;
        Ok(Admission { inner })
    }

    /// This replica's id in the registry.
    pub fn replica_id(&self) -> &str {
        self.inner.scripts.replica()
    }

    /// The configuration.
    pub fn config(&self) -> &AdmissionConfig {
        &self.inner.cfg
    }

    /// The caps in force: `(per-user, global)`. The configured ones until
    /// [`Admission::set_caps`] changes them.
    pub fn caps(&self) -> (u32, u32) {
        let caps = self.inner.scripts.caps();
        (caps.user(), caps.global())
    }

    /// Changes the per-user and/or global cap on this replica (`None`: unchanged; 0 counts as
    /// 1; a queue without per-user limits keeps none). Every replica of the fleet must be given the same caps: each script call carries them.
    /// Slots running are kept: under a lowered cap nothing is granted until enough of them end.
    /// A raised cap hands the new room to waiters at once (a dispatch runs now, through the
    /// heartbeat). The share each replica admits from while Redis is unreachable follows too.
    pub fn set_caps(&self, user: Option<u32>, global: Option<u32>) {
        if self.inner.scripts.caps().set(user, global) {
            let (user, global) = self.caps();
            tracing::info!(user, global, "admission caps changed");
            self.inner.heartbeat_now.notify_one();
        }
    }

    /// The configured priority classes.
    pub fn classes(&self) -> &Classes {
        &self.inner.classes
    }

    /// Waiters of this replica right now (shared queue and local queue).
    pub fn local_waiters(&self) -> usize {
        self.inner.waiters.len() + self.inner.local.queued()
    }

    /// Whether this replica admits locally because Redis is (or was just) unreachable.
    pub fn degraded(&self) -> bool {
        self.inner.mode() != Mode::Shared
    }

    /// `shared` (caps in Redis), `degraded` (Redis unreachable: the local share) or `recovering`
    /// (Redis back: local grants run only if the shared caps also have room, until the fleet has
    /// registered what it granted during the outage).
    pub fn mode_name(&self) -> &'static str {
        self.inner.mode().name()
    }

    /// This replica's share of the global cap when Redis is unreachable:
    /// `max(1, global_cap / live replicas)`, and during an outage (until shared admission
    /// resumes) at most the limit fixed as it began (room for the shared slots still running on
    /// the other replicas).
    pub fn local_share(&self) -> u32 {
        self.inner.local_caps().global
    }

    /// Live replicas as last read from the registry (the expected fleet size before that).
    pub fn live_replicas(&self) -> u32 {
        self.inner.live_replicas.load(Ordering::Relaxed)
    }

    /// Slots this replica holds under degraded mode right now.
    pub fn local_in_use(&self) -> usize {
        self.inner.local.held_count()
    }

    /// Admits `user` in `class`, waiting in the queue until `deadline` if no slot is free.
    pub async fn admit(
        &self,
        user: &[u8],
        class: Class,
        deadline: Instant,
    ) -> Result<Permit, Rejection> {
        self.admit_inner(user, class, deadline, None).await
    }

    /// Like [`Admission::admit`], publishing the queue position (1-based; 0 once granted) to
    /// `positions` at entry and whenever a heartbeat finds it changed.
    pub async fn admit_watched(
        &self,
        user: &[u8],
        class: Class,
        deadline: Instant,
        positions: watch::Sender<u32>,
    ) -> Result<Permit, Rejection> {
        self.admit_inner(user, class, deadline, Some(positions))
            .await
    }

    async fn admit_inner(
        &self,
        user: &[u8],
        class: Class,
        deadline: Instant,
        positions: Option<watch::Sender<u32>>,
    ) -> Result<Permit, Rejection> {
        let inner = &self.inner;
        if !inner.classes.contains(class) {
            return Err(Rejection::Unavailable(LimiterError::InvalidArgument(
                format!(
                    "class {} out of range: {} configured",
                    class.index(),
                    inner.classes.len()
                ),
            )));
        }
        // Each path answers `None` when the mode changed under it: Redis went away while waiting
        // in the shared queue, or came back while waiting in the local one.
        loop {
            if inner.closing.load(Ordering::Acquire) {
                return Err(Rejection::ShuttingDown);
            }
            inner.follow_failover();
            let admitted = if inner.cfg.local_fallback && inner.mode() != Mode::Shared {
                inner
                    .admit_local(user, class, deadline, positions.clone())
                    .await?
            } else {
                inner
                    .admit_shared(user, class, deadline, positions.clone())
                    .await?
            };
            if let Some(permit) = admitted {
                return Ok(permit);
            }
        }
    }

    /// Fleet-wide queue depth per class, slots in use and live replicas.
    pub async fn stats(&self) -> Result<QueueStats, LimiterError> {
        self.inner.scripts.stats(self.inner.classes.len()).await
    }

    /// Admin: empties the queue; every waiter, on any replica, gets [`Rejection::Reset`].
    pub async fn reset_queue(&self) -> Result<u64, LimiterError> {
        self.inner.scripts.reset().await
    }

    /// Admin: removes leases of replicas whose heartbeat expired (rather than waiting for their
    /// TTL) and hands the slots on.
    pub async fn reclaim_dead_replicas(&self) -> Result<u64, LimiterError> {
        self.inner.scripts.reclaim().await
    }

    /// Runs one heartbeat now (normally every `heartbeat_ttl / 3`).
    pub async fn heartbeat(&self) -> Result<(), LimiterError> {
        self.inner.heartbeat().await
    }

    /// Leaves the fleet: refuses new requests, takes this replica's waiters out of the queue
    /// (each answered with [`Rejection::ShuttingDown`]), stops the background tasks and removes the
    /// replica from the registry. Permits still held are released as their holders drop them.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.closing.store(true, Ordering::Release);
        for (id, w) in inner.waiters.drain() {
            if let Err(e) = inner.scripts.leave(&id, &w.user_key, w.class).await {
                tracing::warn!(waiter = %id, error = %e, "leaving the queue at shutdown failed");
            }
            let _ = w.tx.send(Event::ShuttingDown);
        }
        if let Ok(mut tasks) = inner.tasks.lock() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
        if let Err(e) = inner.scripts.leave_registry().await {
            tracing::warn!(error = %e, "leaving the replica registry failed");
        }
    }
}
