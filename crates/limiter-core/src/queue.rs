//! Admission through a priority wait queue that spans every replica (layer 2).
//!
//! [`Admission::admit`] grants a lease in the user's scope and the global scope at once, or queues
//! the request. The queue lives in Redis (`lua/admission_*.lua`, sharing `admission_lib.lua`):
//! strict priority between classes (chat > research > export), FIFO within a class in fleet-wide
//! arrival order, and no head-of-line blocking (a waiter held back only by its own user cap keeps
//! its place while others pass it).
//!
//! A release hands the slot to the next eligible waiter inside the same script and pushes the grant
//! to that waiter's replica over pub/sub, so a slot freed on replica A reaches a waiter on replica B
//! within one pub/sub hop; no waiter polls. The safety nets are per replica, not per waiter: a
//! heartbeat every `heartbeat_ttl / 3` keeps the replica in the registry, collects grants whose push
//! was lost, runs a dispatch (slots freed by lease expiry rather than release are handed on there)
//! and refreshes watched queue positions. A replica that dies stops heartbeating; its waiters are
//! dropped by the next dispatch after `heartbeat_ttl`, and its leases expire after `lease_ttl`.
//!
//! Cancellation is safe at every await: a waiter whose future is dropped leaves the queue (spawned),
//! and if a grant raced with its leaving, the leave script releases the slot and hands it on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::degraded::{Local, LocalCaps, LocalSlot, Unregistered};
use crate::lease::{Lease, LeaseOps, ScriptCall, new_lease_id, ttl_millis};
use crate::redis_handle::ToRedisArgsDyn;
use crate::reply::ints;
use crate::scripts::{
    ADMISSION_ADOPT, ADMISSION_ENTER, ADMISSION_HEARTBEAT, ADMISSION_LEAVE, ADMISSION_RECLAIM,
    ADMISSION_RELEASE, ADMISSION_RENEW, ADMISSION_RESET, ADMISSION_STATS, LuaScript,
};
use crate::{LimiterError, RedisHandle};

/// Request classes, highest priority first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// Interactive chat: served first.
    Chat,
    /// Literature research.
    Research,
    /// Exports: served last.
    Export,
}

impl Class {
    /// All classes in priority order.
    pub const ALL: [Class; 3] = [Class::Chat, Class::Research, Class::Export];

    /// Index in the queue (0 = highest priority).
    pub fn index(self) -> usize {
        match self {
            Class::Chat => 0,
            Class::Research => 1,
            Class::Export => 2,
        }
    }

    /// Lower-case name (`chat`, `research`, `export`), for labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Chat => "chat",
            Class::Research => "research",
            Class::Export => "export",
        }
    }
}

/// Limits and timings of the queue. Every replica of a fleet must use the same values.
#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    /// Lease group: every key of the queue shares this hash tag.
    pub group: String,
    /// Slots one user may hold at once.
    pub user_cap: u32,
    /// Slots the whole fleet may hold at once.
    pub global_cap: u32,
    /// Lease lifetime without renewal (a dead replica's slots return after this).
    pub lease_ttl: Duration,
    /// Waiters allowed in the queue, all classes together; beyond it, `Full` at once.
    pub max_queue: u32,
    /// A replica silent for this long is dead: its waiters are dropped.
    pub heartbeat_ttl: Duration,
    /// While Redis is unreachable, admit locally within this replica's share of the caps
    /// (`max(1, cap / live replicas)`); if false, refuse with `Unavailable` instead.
    pub local_fallback: bool,
    /// Fleet size assumed for the local share when Redis was never reached.
    pub expected_replicas: u32,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            group: "adm".into(),
            user_cap: 2,
            global_cap: 20,
            lease_ttl: Duration::from_secs(15),
            max_queue: 500,
            heartbeat_ttl: Duration::from_secs(3),
            local_fallback: true,
            expected_replicas: 3,
        }
    }
}

/// Why a request was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// The deadline passed while waiting.
    #[error("timed out after waiting {waited:?}")]
    Timeout {
        /// Time spent in the queue.
        waited: Duration,
    },
    /// The queue was at its maximum length.
    #[error("queue full")]
    Full,
    /// An admin reset the queue while this request waited.
    #[error("queue reset by an administrator")]
    Reset,
    /// This replica is shutting down.
    #[error("replica shutting down")]
    ShuttingDown,
    /// Redis could not be reached.
    #[error("redis unavailable")]
    Unavailable(#[source] LimiterError),
}

/// A granted slot. Renews itself while held; released when dropped, which hands the slot to the
/// next eligible waiter anywhere in the fleet.
#[derive(Debug)]
pub struct Permit {
    held: Held,
    class: Class,
    queued: Duration,
    position_at_entry: u32,
    entered_at_ms: i64,
    granted_at_ms: i64,
}

impl Permit {
    /// Redis time (ms) at which the request entered: joined the queue, or was granted at once.
    pub fn entered_at_ms(&self) -> i64 {
        self.entered_at_ms
    }

    /// Redis time (ms) of the grant: the fleet-wide order of grants.
    pub fn granted_at_ms(&self) -> i64 {
        self.granted_at_ms
    }

    /// Time spent waiting before the grant (zero if a slot was free).
    pub fn queued(&self) -> Duration {
        self.queued
    }

    /// Queue position at entry (0 if never queued).
    pub fn position_at_entry(&self) -> u32 {
        self.position_at_entry
    }

    /// The class it was admitted in.
    pub fn class(&self) -> Class {
        self.class
    }

    /// The Redis lease (id, fencing token, loss notification); `None` for a permit granted
    /// locally while Redis was unreachable.
    pub fn lease(&self) -> Option<&Lease> {
        match &self.held {
            Held::Shared(lease, _) => Some(lease),
            Held::Local(_) => None,
        }
    }

    /// Whether this permit was granted in degraded mode (local share of the caps).
    pub fn is_local(&self) -> bool {
        matches!(self.held, Held::Local(_))
    }

    /// Releases now. For a shared permit, waits for Redis to confirm; `Ok(true)` if it was held.
    pub async fn release(self) -> Result<bool, LimiterError> {
        match self.held {
            Held::Shared(lease, counted) => {
                let released = lease.release().await;
                drop(counted);
                released
            }
            Held::Local(local) => {
                drop(local);
                Ok(true)
            }
        }
    }
}

#[derive(Debug)]
enum Held {
    Shared(Lease, SharedCounted),
    Local(LocalPermit),
}

/// Records a shared permit in the local state while it runs (see `Local::shared_taken`).
#[derive(Debug)]
struct SharedCounted(Arc<Local>, String);

impl SharedCounted {
    fn new(local: &Arc<Local>, id: &str, user_key: &str) -> Self {
        local.shared_taken(id, user_key);
        SharedCounted(Arc::clone(local), id.to_string())
    }
}

impl Drop for SharedCounted {
    fn drop(&mut self) {
        self.0.shared_returned(&self.1);
    }
}

/// A slot granted locally; returned to the local queue when dropped (and, if it was adopted into
/// Redis after the outage, released there too).
#[derive(Debug)]
struct LocalPermit {
    local: Arc<Local>,
    slot: Arc<LocalSlot>,
}

impl Drop for LocalPermit {
    fn drop(&mut self) {
        self.local.release(&self.slot);
        // Dropping the adopted lease releases it in Redis (spawned).
        drop(self.slot.adopted.lock().ok().and_then(|mut a| a.take()));
    }
}

/// Whether admission goes through Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Normal: shared caps in Redis.
    Shared = 0,
    /// Redis unreachable: local share of the caps.
    Degraded = 1,
    /// Redis is back and this replica's unregistered permits are registered there; still
    /// admitting locally (each grant registered against the shared caps first) until the fleet
    /// has registered its own (see `after_heartbeat`), before anyone admits by Redis's counts
    /// alone.
    Recovering = 2,
}

/// Queue depth and slot use, fleet-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Waiters per class, in [`Class::ALL`] order.
    pub queued: [u64; 3],
    /// Slots in use in the global scope.
    pub in_use: u64,
    /// Replicas with a live heartbeat.
    pub live_replicas: u64,
}

enum Event {
    Granted {
        fence: i64,
        expiry: i64,
    },
    Reset,
    ShuttingDown,
    /// Redis became unreachable: wait in the local queue instead.
    Degraded,
}

struct LocalWaiter {
    tx: oneshot::Sender<Event>,
    user_key: String,
    class: Class,
    position: Option<watch::Sender<u32>>,
}

struct Inner {
    redis: RedisHandle,
    cfg: AdmissionConfig,
    replica: String,
    /// `T`: the hash tag every key of the queue shares.
    tag: String,
    global_key: String,
    channel: String,
    /// ARGV[1..5] of every admission script.
    base_args: Vec<String>,
    waiters: Mutex<HashMap<String, LocalWaiter>>,
    closing: AtomicBool,
    heartbeat_now: Notify,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    local: Arc<Local>,
    mode: AtomicU8,
    /// Notified on every mode change.
    mode_changed: Notify,
    /// When this replica's recovery registered its permits (`Recovering` since then).
    recovering_since: Mutex<Option<Instant>>,
    /// Replicas in the registry at the last heartbeat.
    registered_now: AtomicU32,
    /// Live replicas as last read from the registry.
    live_replicas: AtomicU32,
}

/// The admission queue as seen by one replica. Cheap to clone.
#[derive(Clone)]
pub struct Admission {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("replica", &self.inner.replica)
            .field("cfg", &self.inner.cfg)
            .finish()
    }
}

impl Admission {
    /// Joins the fleet's queue as a new replica: starts the pub/sub listener and the heartbeat.
    /// Waits (briefly) for the first subscription so grants pushed right away are not missed; if
    /// Redis is down it returns anyway and the listener keeps retrying.
    pub async fn start(redis: RedisHandle, cfg: AdmissionConfig) -> Result<Self, LimiterError> {
        if cfg.user_cap == 0 || cfg.global_cap == 0 {
            return Err(LimiterError::InvalidArgument(
                "admission caps must be positive".into(),
            ));
        }
        if cfg.lease_ttl < Duration::from_millis(30)
            || cfg.heartbeat_ttl < Duration::from_millis(30)
        {
            return Err(LimiterError::InvalidArgument(
                "admission ttls must be at least 30 ms".into(),
            ));
        }
        let tag = redis.keys().group_tag(&cfg.group);
        // No dots: lease ids are `<replica>.<random>`, so reclaim can tell whose a lease is.
        let replica = format!("{:016x}", rand::random::<u64>());
        let inner = Arc::new(Inner {
            global_key: redis.keys().lease_scope(&cfg.group, b"global"),
            channel: format!("{tag}:ch:{replica}"),
            base_args: vec![
                tag.clone(),
                cfg.user_cap.to_string(),
                cfg.global_cap.to_string(),
                ttl_millis(cfg.lease_ttl).to_string(),
                ttl_millis(cfg.heartbeat_ttl).to_string(),
            ],
            tag,
            replica,
            cfg,
            redis,
            waiters: Mutex::new(HashMap::new()),
            closing: AtomicBool::new(false),
            heartbeat_now: Notify::new(),
            tasks: Mutex::new(Vec::new()),
            local: Arc::default(),
            mode: AtomicU8::new(Mode::Shared as u8),
            mode_changed: Notify::new(),
            recovering_since: Mutex::new(None),
            registered_now: AtomicU32::new(0),
            live_replicas: AtomicU32::new(0),
        });
        inner
            .live_replicas
            .store(inner.cfg.expected_replicas.max(1), Ordering::Relaxed);
        let (subscribed_tx, subscribed_rx) = oneshot::channel();
        let listener = tokio::spawn(listen(
            Arc::downgrade(&inner),
            inner.redis.client().clone(),
            inner.channel.clone(),
            subscribed_tx,
        ));
        let heartbeat = tokio::spawn(heartbeat_loop(Arc::downgrade(&inner)));
        if let Ok(mut tasks) = inner.tasks.lock() {
            tasks.extend([listener, heartbeat]);
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), subscribed_rx).await;
        Ok(Admission { inner })
    }

    /// This replica's id in the registry.
    pub fn replica_id(&self) -> &str {
        &self.inner.replica
    }

    /// The configuration.
    pub fn config(&self) -> &AdmissionConfig {
        &self.inner.cfg
    }

    /// Waiters of this replica right now (shared queue and local queue).
    pub fn local_waiters(&self) -> usize {
        self.inner.waiters.lock().map(|w| w.len()).unwrap_or(0) + self.inner.local.queued()
    }

    /// Whether this replica admits locally because Redis is (or was just) unreachable.
    pub fn degraded(&self) -> bool {
        self.inner.mode() != Mode::Shared
    }

    /// `shared` (caps in Redis), `degraded` (Redis unreachable: the local share) or `recovering`
    /// (Redis back: local grants run only if the shared caps also have room, until the fleet has
    /// registered what it granted during the outage).
    pub fn mode_name(&self) -> &'static str {
        match self.inner.mode() {
            Mode::Shared => "shared",
            Mode::Degraded => "degraded",
            Mode::Recovering => "recovering",
        }
    }

    /// This replica's share of the global cap when Redis is unreachable:
    /// `max(1, global_cap / live replicas)`.
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
        // Each path answers `None` when the mode changed under it: Redis went away while waiting
        // in the shared queue, or came back while waiting in the local one.
        loop {
            let inner = &self.inner;
            if inner.closing.load(Ordering::Acquire) {
                return Err(Rejection::ShuttingDown);
            }
            let admitted = if inner.cfg.local_fallback && inner.mode() != Mode::Shared {
                inner
                    .admit_local(user, class, deadline, positions.clone())
                    .await?
            } else {
                self.admit_shared(user, class, deadline, positions.clone())
                    .await?
            };
            if let Some(permit) = admitted {
                return Ok(permit);
            }
        }
    }

    /// Admission through the shared queue in Redis; `None` when Redis became unreachable (with
    /// local fallback): the caller waits in the local queue instead.
    async fn admit_shared(
        &self,
        user: &[u8],
        class: Class,
        deadline: Instant,
        positions: Option<watch::Sender<u32>>,
    ) -> Result<Option<Permit>, Rejection> {
        let inner = &self.inner;
        let started = Instant::now();
        let id = format!("{}.{}", inner.replica, new_lease_id());
        let mut scope = b"user:".to_vec();
        scope.extend_from_slice(user);
        let user_key = inner.redis.keys().lease_scope(&inner.cfg.group, &scope);

        // Registered before entering: a grant can be pushed before the enter reply arrives.
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = inner.waiters.lock() {
            w.insert(
                id.clone(),
                LocalWaiter {
                    tx,
                    user_key: user_key.clone(),
                    class,
                    position: positions.clone(),
                },
            );
        }
        let mut guard = WaiterGuard {
            inner: Arc::clone(inner),
            id: id.clone(),
            user_key: user_key.clone(),
            class,
            rx: Some(rx),
            armed: true,
        };

        let budget = deadline.saturating_duration_since(started);
        let record_ttl = ttl_millis(budget + inner.cfg.heartbeat_ttl * 2);
        let class_arg = class.index().to_string();
        let max_queue = inner.cfg.max_queue.to_string();
        let record_ttl = record_ttl.to_string();
        let extra = [
            &id,
            &user_key,
            &inner.replica,
            &class_arg,
            &max_queue,
            &record_ttl,
        ];
        let reply = inner.run::<Vec<i64>>(&ADMISSION_ENTER, &extra).await;
        let reply = match reply.and_then(|r| ints::<3>(ADMISSION_ENTER.name(), pad3(r))) {
            Ok(r) => r,
            // The guard leaves the queue (best effort) in case the call did run.
            Err(e) if e.is_unavailable() && inner.cfg.local_fallback => {
                drop(guard);
                inner.enter_degraded();
                return Ok(None);
            }
            Err(e) => return Err(Rejection::Unavailable(e)),
        };
        match reply {
            [1, expiry, fence] => {
                guard.disarm();
                if let Some(p) = &positions {
                    p.send_replace(0);
                }
                let at = expiry - ttl_ms_i64(inner.cfg.lease_ttl);
                let mut permit = inner.permit(id, user_key, class, expiry, fence, started, 0);
                permit.entered_at_ms = at;
                return Ok(Some(permit));
            }
            [-1, _, _] => {
                guard.disarm();
                return Err(Rejection::Full);
            }
            _ => {}
        }
        let position_at_entry = u32::try_from(reply[1]).unwrap_or(u32::MAX);
        let entered_at_ms = reply[2];
        // For the caller's queue-wait span, when it declares the field.
        tracing::Span::current().record("fleetgate.queue.position", position_at_entry);
        if let Some(p) = &positions {
            p.send_replace(position_at_entry);
        }

        let rx = guard.rx.as_mut().expect("receiver present until disarmed");
        tokio::select! {
            event = rx => {
                guard.disarm();
                match event {
                    Ok(Event::Granted { fence, expiry }) => {
                        if let Some(p) = &positions {
                            p.send_replace(0);
                        }
                        let mut permit =
                            inner.permit(id, user_key, class, expiry, fence, started, position_at_entry);
                        permit.entered_at_ms = entered_at_ms;
                        Ok(Some(permit))
                    }
                    Ok(Event::Reset) => Err(Rejection::Reset),
                    Ok(Event::Degraded) => {
                        // Leave the shared queue, best effort (Redis is likely down; one that
                        // comes back empty has forgotten us anyway), and wait out the rest of
                        // the budget in the local one.
                        let leaving = Arc::clone(inner);
                        tokio::spawn(async move {
                            let _ = leaving.leave(&id, &user_key, class).await;
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

    /// Fleet-wide queue depth per class, slots in use and live replicas.
    pub async fn stats(&self) -> Result<QueueStats, LimiterError> {
        let r: Vec<i64> = self.inner.run(&ADMISSION_STATS, &[]).await?;
        let [q0, q1, q2, in_use, replicas] = ints::<5>(ADMISSION_STATS.name(), r)?;
        let u = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(QueueStats {
            queued: [u(q0), u(q1), u(q2)],
            in_use: u(in_use),
            live_replicas: u(replicas),
        })
    }

    /// Admin: empties the queue; every waiter, on any replica, gets [`Rejection::Reset`].
    pub async fn reset_queue(&self) -> Result<u64, LimiterError> {
        let n: i64 = self.inner.run(&ADMISSION_RESET, &[]).await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Admin: removes leases of replicas whose heartbeat expired (rather than waiting for their
    /// TTL) and hands the slots on.
    pub async fn reclaim_dead_replicas(&self) -> Result<u64, LimiterError> {
        let n: i64 = self.inner.run(&ADMISSION_RECLAIM, &[]).await?;
        Ok(u64::try_from(n).unwrap_or(0))
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
        let waiters: Vec<(String, LocalWaiter)> = inner
            .waiters
            .lock()
            .map(|mut w| w.drain().collect())
            .unwrap_or_default();
        for (id, w) in waiters {
            if let Err(e) = inner.leave(&id, &w.user_key, w.class).await {
                tracing::warn!(waiter = %id, error = %e, "leaving the queue at shutdown failed");
            }
            let _ = w.tx.send(Event::ShuttingDown);
        }
        if let Ok(mut tasks) = inner.tasks.lock() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
        let zrem = redis::cmd("ZREM")
            .arg(format!("{}:replicas", inner.tag))
            .arg(&inner.replica)
            .clone();
        if let Err(e) = inner.redis.cmd::<i64>(&zrem).await {
            tracing::warn!(error = %e, "leaving the replica registry failed");
        }
    }
}

fn ttl_ms_i64(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Pads short replies (`{0, position}`, `{-1, 0}`) to three integers.
fn pad3(mut r: Vec<i64>) -> Vec<i64> {
    while r.len() < 3 {
        r.push(0);
    }
    r
}

impl Inner {
    fn mode(&self) -> Mode {
        match self.mode.load(Ordering::Acquire) {
            0 => Mode::Shared,
            1 => Mode::Degraded,
            _ => Mode::Recovering,
        }
    }

    fn set_mode(&self, mode: Mode) {
        let old = self.mode.swap(mode as u8, Ordering::AcqRel);
        if old != mode as u8 {
            self.mode_changed.notify_waiters();
            tracing::warn!(replica = %self.replica, ?mode, "admission mode changed");
        }
    }

    fn enter_degraded(&self) {
        if !self.cfg.local_fallback {
            return;
        }
        // Before the mode: a local grant seen as degraded is always registered by a recovery.
        self.local.enter_degraded();
        self.set_mode(Mode::Degraded);
        // Waiters in the shared queue would wait for a grant that cannot come (and a Redis that
        // returns empty has forgotten them) until their deadline: they move to the local queue.
        let moved: Vec<LocalWaiter> = self
            .waiters
            .lock()
            .map(|mut m| m.drain().map(|(_, w)| w).collect())
            .unwrap_or_default();
        for w in moved {
            let _ = w.tx.send(Event::Degraded);
        }
    }

    fn local_caps(&self) -> LocalCaps {
        LocalCaps::share(
            self.cfg.global_cap,
            self.cfg.user_cap,
            self.cfg.max_queue,
            self.live_replicas.load(Ordering::Relaxed),
        )
    }

    async fn admit_local(
        self: &Arc<Self>,
        user: &[u8],
        class: Class,
        deadline: Instant,
        positions: Option<watch::Sender<u32>>,
    ) -> Result<Option<Permit>, Rejection> {
        let started = Instant::now();
        let id = format!("{}.{}", self.replica, new_lease_id());
        let mut scope = b"user:".to_vec();
        scope.extend_from_slice(user);
        let user_key = self.redis.keys().lease_scope(&self.cfg.group, &scope);
        let Some(slot) = self
            .local
            .admit(self.local_caps(), &id, user, &user_key, class, deadline)
            .await?
        else {
            return Ok(None);
        };
        let permit = Permit {
            held: Held::Local(LocalPermit {
                local: Arc::clone(&self.local),
                slot: Arc::clone(&slot),
            }),
            class,
            queued: started.elapsed(),
            position_at_entry: 0,
            entered_at_ms: 0,
            granted_at_ms: 0,
        };
        // Granted while degraded: the recovery registers it (unchecked: the local share bounds it).
        if !slot.granted_degraded {
            if self.mode() == Mode::Shared {
                // Shared admission resumed while this slot was being granted: give it back
                // (dropping the permit) and queue in Redis.
                return Ok(None);
            }
            // Redis is back: another replica may already admit by Redis's counts, so this slot
            // runs only if the shared caps have room for it too.
            let mode_changed = self.mode_changed.notified();
            tokio::pin!(mode_changed);
            mode_changed.as_mut().enable();
            // Spawned: a registration that succeeds after this future is dropped is still seen
            // (and released) rather than left counted in Redis until its TTL.
            let adopting = {
                let (inner, slot) = (Arc::clone(self), Arc::clone(&slot));
                tokio::spawn(async move { inner.adopt_checked(&slot).await })
            };
            // A join error: the runtime is going away.
            let Ok(adopted) = adopting.await else {
                return Err(Rejection::ShuttingDown);
            };
            match adopted {
                Ok(true) => {}
                Ok(false) => {
                    // Full fleet-wide: wait for shared admission (a heartbeat TTL at most) and
                    // queue in Redis then.
                    drop(permit);
                    if self.mode() == Mode::Recovering {
                        tokio::select! {
                            () = mode_changed => {}
                            () = tokio::time::sleep_until(deadline) => {
                                return Err(Rejection::Timeout { waited: started.elapsed() });
                            }
                        }
                    }
                    return Ok(None);
                }
                Err(e) if e.is_unavailable() => {
                    // Gone again: the slot runs on the local share; the next recovery
                    // registers it.
                    self.local.unclaim(std::slice::from_ref(&slot));
                    self.enter_degraded();
                }
                Err(e) => return Err(Rejection::Unavailable(e)),
            }
        }
        if let Some(p) = &positions {
            p.send_replace(0);
        }
        Ok(Some(permit))
    }

    /// Registers one local slot in Redis if the shared caps have room for it (after a dispatch,
    /// so it never overtakes an eligible shared waiter). `Ok(false)`: no room.
    async fn adopt_checked(&self, slot: &Arc<LocalSlot>) -> Result<bool, LimiterError> {
        let checked = "checked".to_string();
        let reply: Vec<i64> = self
            .run(&ADMISSION_ADOPT, &[&checked, &slot.id, &slot.user_key])
            .await?;
        let [expiry, adopted] = ints::<2>(ADMISSION_ADOPT.name(), reply)?;
        if adopted != 1 {
            return Ok(false);
        }
        let lease = self.adopted_lease(&slot.id, &slot.user_key, expiry);
        if let Ok(mut a) = slot.adopted.lock() {
            *a = Some(lease);
        }
        // Set before this check: a holder that let go meanwhile took no lease, so release it.
        if !self.local.holds(&slot.id) {
            drop(slot.adopted.lock().ok().and_then(|mut a| a.take()));
        }
        Ok(true)
    }

    /// A lease for a permit registered by `admission_adopt` (no fencing token).
    fn adopted_lease(&self, id: &str, user_key: &str, expiry: i64) -> Lease {
        self.lease(id.to_string(), user_key, expiry, 0)
    }

    /// The self-renewing guard of an admission lease. It keeps renewing after a loss: a recovery
    /// from a Redis outage may register the permit again while it runs.
    fn lease(&self, id: String, user_key: &str, expiry: i64, fence: i64) -> Lease {
        let ops = LeaseOps {
            renew: self.call(&ADMISSION_RENEW, &id, user_key),
            release: self.call(&ADMISSION_RELEASE, &id, user_key),
            renew_after_loss: true,
        };
        Lease::start(
            self.redis.clone(),
            id,
            ops,
            self.cfg.lease_ttl,
            expiry,
            fence,
        )
    }

    /// Registers in Redis, unchecked, what runs outside its counts: local slots granted while it
    /// was unreachable and shared permits it may have lost (a restart without persistence). They
    /// are running already, within the local share. `false` (logged) if Redis failed: the slots
    /// go back to pending.
    async fn adopt_all(&self, todo: Unregistered) -> bool {
        if todo.slots.is_empty() && todo.shared.is_empty() {
            return true;
        }
        let all = "all".to_string();
        let mut extra: Vec<&String> = vec![&all];
        for s in &todo.slots {
            extra.push(&s.id);
            extra.push(&s.user_key);
        }
        for (id, user_key) in &todo.shared {
            extra.push(id);
            extra.push(user_key);
        }
        let reply = match self.run::<Vec<i64>>(&ADMISSION_ADOPT, &extra).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "registering local permits failed");
                self.local.unclaim(&todo.slots);
                return false;
            }
        };
        let expiry = reply.first().copied().unwrap_or(0);
        for s in todo.slots {
            let lease = self.adopted_lease(&s.id, &s.user_key, expiry);
            if self.local.holds(&s.id) {
                if let Ok(mut a) = s.adopted.lock() {
                    *a = Some(lease);
                }
            } else {
                // Finished while being registered: release it in Redis right away.
                drop(lease);
            }
        }
        // A shared permit keeps its own lease (same id: its renewals find it again); one that
        // ended meanwhile was released before this registration, so release it again.
        for (id, user_key) in todo.shared {
            if !self.local.holds_shared(&id)
                && let Err(e) = self.release(&id, &user_key).await
            {
                tracing::warn!(lease = %id, error = %e, "releasing a finished permit failed");
            }
        }
        true
    }

    /// Degraded, before a heartbeat: if Redis answers, registers what this replica runs outside
    /// its counts and starts recovering. Before the heartbeat, so that a replica back in the
    /// registry has registered its permits (other replicas wait for that, see `after_heartbeat`).
    async fn try_recover(&self) {
        if self.redis.cmd::<String>(&redis::cmd("PING")).await.is_err() {
            return;
        }
        // From here a local grant registers itself against the shared caps; what was granted
        // before is handed over here.
        if self.adopt_all(self.local.begin_recovery()).await {
            if let Ok(mut since) = self.recovering_since.lock() {
                *since = Some(Instant::now());
            }
            self.set_mode(Mode::Recovering);
        } else {
            self.enter_degraded();
        }
    }

    /// Leaves recovery for shared admission, or enters degraded mode, after a heartbeat.
    ///
    /// Shared admission trusts Redis's counts, so it waits until every replica has registered
    /// what it granted during the outage: at least one heartbeat TTL (a replica that cannot
    /// reach Redis for that long is dead to the registry too) and until the registry holds as many
    /// replicas as before the outage (they register their permits before rejoining it), or three
    /// heartbeat TTLs if it never does (a replica died meanwhile, or the fleet shrank).
    async fn after_heartbeat(&self, ok: bool) {
        if !ok {
            if self.mode() != Mode::Degraded {
                self.enter_degraded();
            }
            return;
        }
        if self.mode() != Mode::Recovering {
            return;
        }
        let elapsed = self
            .recovering_since
            .lock()
            .ok()
            .and_then(|since| *since)
            .map_or(Duration::MAX, |since| since.elapsed());
        let everyone = self.registered_now.load(Ordering::Relaxed)
            >= self.live_replicas.load(Ordering::Relaxed);
        let ttl = self.cfg.heartbeat_ttl;
        if elapsed < ttl || (!everyone && elapsed < ttl * 3) {
            return;
        }
        // Nothing should be pending here; registered anyway rather than left uncounted.
        let leftover = Unregistered {
            slots: self.local.claim_pending(),
            shared: Vec::new(),
        };
        if self.adopt_all(leftover).await {
            self.set_mode(Mode::Shared);
            self.local.requeue_all();
        }
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        script: &'static LuaScript,
        extra: &[&String],
    ) -> Result<T, LimiterError> {
        let mut args: Vec<&dyn ToRedisArgsDyn> = self
            .base_args
            .iter()
            .map(|a| a as &dyn ToRedisArgsDyn)
            .collect();
        args.extend(extra.iter().map(|a| *a as &dyn ToRedisArgsDyn));
        self.redis.eval(script, &[&self.global_key], &args).await
    }

    fn call(&self, script: &'static LuaScript, id: &str, user_key: &str) -> ScriptCall {
        let mut args = self.base_args.clone();
        args.push(id.to_string());
        args.push(user_key.to_string());
        ScriptCall {
            script,
            keys: vec![self.global_key.clone()],
            args,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn permit(
        &self,
        id: String,
        user_key: String,
        class: Class,
        expiry: i64,
        fence: i64,
        started: Instant,
        position_at_entry: u32,
    ) -> Permit {
        let counted = SharedCounted::new(&self.local, &id, &user_key);
        Permit {
            held: Held::Shared(self.lease(id, &user_key, expiry, fence), counted),
            class,
            queued: started.elapsed(),
            position_at_entry,
            entered_at_ms: 0,
            granted_at_ms: expiry - ttl_ms_i64(self.cfg.lease_ttl),
        }
    }

    async fn leave(&self, id: &str, user_key: &str, class: Class) -> Result<i64, LimiterError> {
        let class_arg = class.index().to_string();
        let (id, user_key) = (id.to_string(), user_key.to_string());
        self.run(
            &ADMISSION_LEAVE,
            &[&id, &user_key, &class_arg, &self.replica],
        )
        .await
    }

    async fn release(&self, id: &str, user_key: &str) -> Result<(), LimiterError> {
        let (id, user_key) = (id.to_string(), user_key.to_string());
        let _: i64 = self.run(&ADMISSION_RELEASE, &[&id, &user_key]).await?;
        Ok(())
    }

    /// Routes a pushed or collected message to its local waiter.
    fn deliver(self: &Arc<Self>, msg: &str) {
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
        let Some(w) = self.waiters.lock().ok().and_then(|mut m| m.remove(id)) else {
            // Not waiting here any more: its leave (in flight) settles any grant.
            return;
        };
        if let Err(Event::Granted { .. }) = w.tx.send(event) {
            // The waiter vanished between lookup and send: give the slot back.
            let inner = Arc::clone(self);
            let id = id.to_string();
            tokio::spawn(async move {
                if let Err(e) = inner.release(&id, &w.user_key).await {
                    tracing::warn!(waiter = %id, error = %e, "returning an orphaned grant failed");
                }
            });
        }
    }

    async fn heartbeat(self: &Arc<Self>) -> Result<(), LimiterError> {
        let watched: Vec<(String, String, watch::Sender<u32>)> = self
            .waiters
            .lock()
            .map(|m| {
                m.iter()
                    .filter_map(|(id, w)| {
                        w.position
                            .clone()
                            .map(|p| (id.clone(), w.class.index().to_string(), p))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut extra: Vec<&String> = vec![&self.replica];
        for (id, class, _) in &watched {
            extra.push(id);
            extra.push(class);
        }
        let (grants, positions, live): (Vec<String>, Vec<i64>, i64) =
            self.run(&ADMISSION_HEARTBEAT, &extra).await?;
        if live > 0 {
            let live = u32::try_from(live).unwrap_or(u32::MAX);
            self.registered_now.store(live, Ordering::Relaxed);
            if self.mode() == Mode::Shared {
                self.live_replicas.store(live, Ordering::Relaxed);
            } else {
                // A Redis that came back empty refills its registry as replicas heartbeat: a
                // count read now may miss replicas still admitting from their local shares, and
                // lowering it would raise this replica's share. Only raise it until shared
                // admission resumes.
                self.live_replicas.fetch_max(live, Ordering::Relaxed);
            }
        }
        for g in grants {
            self.deliver(&format!("g {g}"));
        }
        for ((_, _, tx), pos) in watched.iter().zip(positions) {
            let pos = u32::try_from(pos).unwrap_or(0);
            // Position 0 means granted: the grant itself reports that.
            if pos > 0 {
                tx.send_if_modified(|p| std::mem::replace(p, pos) != pos);
            }
        }
        Ok(())
    }
}

/// Takes a waiter out of the queue if its `admit` future ends without a decision (dropped by a
/// disconnecting client, or timed out). If a grant reached it meanwhile, the slot is handed on.
struct WaiterGuard {
    inner: Arc<Inner>,
    id: String,
    user_key: String,
    class: Class,
    rx: Option<oneshot::Receiver<Event>>,
    armed: bool,
}

impl WaiterGuard {
    fn disarm(&mut self) {
        self.armed = false;
        if let Ok(mut m) = self.inner.waiters.lock() {
            m.remove(&self.id);
        }
    }

    /// Leaves now (awaited): used on timeout so the caller's rejection means "out of the queue".
    async fn leave_now(&mut self) {
        self.disarm();
        if let Err(e) = self.inner.leave(&self.id, &self.user_key, self.class).await {
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
        let still_waiting = self
            .inner
            .waiters
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&self.id))
            .is_some();
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
        let inner = Arc::clone(&self.inner);
        let (id, user_key, class) = (self.id.clone(), self.user_key.clone(), self.class);
        rt.spawn(async move {
            let res = if still_waiting {
                inner.leave(&id, &user_key, class).await.map(|_| ())
            } else {
                inner.release(&id, &user_key).await
            };
            if let Err(e) = res {
                tracing::warn!(waiter = %id, error = %e, "cleanup of an abandoned waiter failed");
            }
        });
    }
}

/// Keeps a pub/sub subscription to this replica's channel, reconnecting with backoff. After each
/// (re)subscription it triggers a heartbeat, which collects grants pushed while unsubscribed.
async fn listen(
    inner: Weak<Inner>,
    client: redis::Client,
    channel: String,
    subscribed: oneshot::Sender<()>,
) {
    let mut subscribed = Some(subscribed);
    let mut backoff = Duration::from_millis(50);
    loop {
        let connected =
            tokio::time::timeout(Duration::from_secs(2), client.get_async_pubsub()).await;
        if let Ok(Ok(mut pubsub)) = connected
            && pubsub.subscribe(&channel).await.is_ok()
        {
            backoff = Duration::from_millis(50);
            if let Some(tx) = subscribed.take() {
                let _ = tx.send(());
            }
            match inner.upgrade() {
                Some(i) => i.heartbeat_now.notify_one(),
                None => return,
            }
            let mut messages = pubsub.on_message();
            while let Some(msg) = messages.next().await {
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                if let Ok(payload) = msg.get_payload::<String>() {
                    inner.deliver(&payload);
                }
            }
            tracing::warn!("admission pub/sub connection lost; reconnecting");
        }
        if inner.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

async fn heartbeat_loop(inner: Weak<Inner>) {
    let period = match inner.upgrade() {
        Some(i) => i.cfg.heartbeat_ttl / 3,
        None => return,
    };
    loop {
        let notified = match inner.upgrade() {
            Some(i) => {
                let i2 = Arc::clone(&i);
                drop(i);
                tokio::select! {
                    () = tokio::time::sleep(period) => {}
                    () = i2.heartbeat_now.notified() => {}
                }
                i2
            }
            None => return,
        };
        if notified.mode() == Mode::Degraded {
            notified.try_recover().await;
            if notified.mode() == Mode::Degraded {
                // Still unreachable: a heartbeat would fail the same way.
                continue;
            }
        }
        let result = notified.heartbeat().await;
        if let Err(e) = &result {
            tracing::debug!(error = %e, "admission heartbeat failed");
        }
        let ok = match &result {
            Ok(()) => true,
            Err(e) => !e.is_unavailable(),
        };
        notified.after_heartbeat(ok).await;
    }
}
