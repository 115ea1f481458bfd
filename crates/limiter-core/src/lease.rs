//! Concurrency leases (layer 2): a slot held in several scopes at once (e.g. `user:42` cap 2 and
//! `global` cap 20), granted atomically in all or none (`lua/lease_acquire.lua`).
//!
//! A lease has an id, an expiry in Redis time and a fencing token. The [`Lease`] guard renews it
//! every TTL/3 while held, reports loss when a renewal finds it gone (or when Redis stayed
//! unreachable past its expiry), and releases it when dropped. A holder that dies without releasing
//! stops counting at its expiry: the scripts count only live scores and reclaim expired members.
//!
//! When is "past its expiry" on this side? The expiry is Redis time, and this replica's clock is
//! not Redis's. What is known for sure: the script that set the expiry ran after the call was sent,
//! so the lease lives at least one TTL from the send on this replica's monotonic clock, less what
//! the two clocks' rates may differ ([`drift_margin`]). Loss is reported at that instant, by a
//! timer, even while a renewal is still on its way: a holder that stops then has stopped before
//! Redis can have handed its slot to anyone else.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::lease_keeper::LeaseKeeper;
use crate::reply::{ints, millis};
use crate::scripts::{LEASE_ACQUIRE, LEASE_RELEASE, LEASE_RENEW, LuaScript};
use crate::{LimiterError, RedisHandle};

/// One scope a lease must fit in, with its cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseScope {
    /// Scope name: any bytes (e.g. `user:` + the user id); encoded into the key safely.
    pub name: Vec<u8>,
    /// Live leases allowed in this scope.
    pub cap: u32,
}

impl LeaseScope {
    /// A scope with a cap.
    pub fn new(name: impl AsRef<[u8]>, cap: u32) -> Self {
        LeaseScope {
            name: name.as_ref().to_vec(),
            cap,
        }
    }
}

/// The outcome of an acquire.
#[derive(Debug)]
pub enum Acquire {
    /// Granted in every scope.
    Granted(Lease),
    /// Refused; nothing was taken.
    Refused {
        /// Index (0-based) of the first scope that was full.
        scope: usize,
        /// Until the soonest live lease of that scope expires (an upper bound: releases come sooner).
        retry_after: Duration,
    },
}

/// Leases of one group. All scopes of a group share a hash tag, so one script can check them all.
///
/// ```no_run
/// use std::time::Duration;
/// use limiter_core::{Acquire, LeaseManager, LeaseScope, RedisConfig, RedisHandle};
///
/// # async fn run() -> Result<(), limiter_core::LimiterError> {
/// let redis = RedisHandle::new(&RedisConfig::default())?;
/// let leases = LeaseManager::new(redis, "jobs", Duration::from_secs(15))?;
/// // One slot in the user's scope (cap 2) and in the global one (cap 20), or none.
/// let scopes = [LeaseScope::new("user:42", 2), LeaseScope::new("global", 20)];
/// match leases.try_acquire(&scopes).await? {
///     Acquire::Granted(lease) => {
///         // ... work; the lease renews itself. Writes elsewhere carry lease.fence().
///         lease.release().await?;
///     }
///     Acquire::Refused { scope, retry_after } => {
///         println!("scope {scope} full, retry in {retry_after:?}");
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct LeaseManager {
    redis: RedisHandle,
    group: String,
    ttl: Duration,
}

impl LeaseManager {
    /// Leases in `group` that live `ttl` unless renewed.
    pub fn new(redis: RedisHandle, group: &str, ttl: Duration) -> Result<Self, LimiterError> {
        if ttl < Duration::from_millis(3) {
            return Err(LimiterError::InvalidArgument(
                "lease ttl must be at least 3 ms".into(),
            ));
        }
        Ok(LeaseManager {
            redis,
            group: group.to_string(),
            ttl,
        })
    }

    /// The lease TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The Redis key of a scope (for admin reads and tests).
    pub fn scope_key(&self, scope: &[u8]) -> String {
        self.redis.keys().lease_scope(&self.group, scope)
    }

    /// Acquires a lease in every scope, or in none.
    pub async fn try_acquire(&self, scopes: &[LeaseScope]) -> Result<Acquire, LimiterError> {
        if scopes.is_empty() {
            return Err(LimiterError::InvalidArgument(
                "a lease needs at least one scope".into(),
            ));
        }
        let mut keys: Vec<String> = scopes.iter().map(|s| self.scope_key(&s.name)).collect();
        keys.push(self.redis.keys().fence(&self.group));
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let id = new_lease_id();
        let ttl_ms = ttl_millis(self.ttl);
        let mut args: Vec<&dyn crate::redis_handle::ToRedisArgsDyn> = vec![&id, &ttl_ms];
        for s in scopes {
            args.push(&s.cap);
        }
        let sent = Instant::now();
        let reply: Vec<i64> = self.redis.eval(&LEASE_ACQUIRE, &key_refs, &args).await?;
        let [granted, a, b] = ints::<3>(LEASE_ACQUIRE.name(), reply)?;
        if granted != 1 {
            return Ok(Acquire::Refused {
                scope: usize::try_from(a - 1).unwrap_or(0),
                retry_after: millis(b),
            });
        }
        keys.pop(); // the fence key is not a scope
        let head = Arc::new(CallHead {
            keys,
            args: Vec::new(),
            caps: None,
        });
        let ops = LeaseOps {
            renew: ScriptCall {
                script: &LEASE_RENEW,
                head: Arc::clone(&head),
                tail: vec![id.clone(), ttl_ms.to_string()],
            },
            release: Release::Call(ScriptCall {
                script: &LEASE_RELEASE,
                head,
                tail: vec![id.clone()],
            }),
            renew_after_loss: false,
        };
        Ok(Acquire::Granted(Lease::start(
            None,
            self.redis.clone(),
            id,
            ops,
            self.ttl,
            a,
            b,
            counted_until(sent, self.ttl),
        )))
    }

    /// Live leases in a scope right now.
    pub async fn in_use(&self, scope: &[u8]) -> Result<u64, LimiterError> {
        let key = self.scope_key(scope);
        let now_ms = redis_now_ms(&self.redis).await?;
        self.redis
            .cmd(
                redis::cmd("ZCOUNT")
                    .arg(&key)
                    .arg(format!("({now_ms}"))
                    .arg("+inf"),
            )
            .await
    }
}

/// Redis server time in ms (the clock every script uses).
pub async fn redis_now_ms(redis: &RedisHandle) -> Result<i64, LimiterError> {
    let (s, us): (i64, i64) = redis.cmd(&redis::cmd("TIME")).await?;
    Ok(s * 1000 + us / 1000)
}

/// What is taken off a lease's lifetime on this replica's clock for the difference between its
/// rate and Redis's (and the scheduling of the timer): a tenth of the TTL.
pub(crate) fn drift_margin(ttl: Duration) -> Duration {
    ttl / 10
}

/// The instant, on this replica's clock, until which a lease whose expiry Redis set `ttl` after a
/// call sent at `sent` is surely still counted there.
pub(crate) fn counted_until(sent: Instant, ttl: Duration) -> Instant {
    sent + ttl - drift_margin(ttl)
}

pub(crate) fn ttl_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

/// A random 128-bit id: unguessable and unique across the fleet without coordination.
pub(crate) fn new_lease_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Keys and leading arguments of a lease's script calls (an admission queue's permits share one).
#[derive(Debug)]
pub(crate) struct CallHead {
    pub(crate) keys: Vec<String>,
    pub(crate) args: Vec<String>,
    /// Admission scripts: the caps in force, written into the arguments at each call (a lease
    /// outlives a cap change).
    pub(crate) caps: Option<crate::admission::Caps>,
}

impl CallHead {
    /// The leading arguments, with the caps in force written in.
    pub(crate) fn args_now(&self) -> Cow<'_, [String]> {
        match &self.caps {
            Some(caps) => {
                let mut args = self.args.clone();
                caps.fill(&mut args);
                Cow::Owned(args)
            }
            None => Cow::Borrowed(&self.args),
        }
    }
}

/// One prepared script call: the same keys and arguments every time. The head is shared, not
/// copied per lease: the copies cost a short admission about a tenth of its client CPU.
#[derive(Debug, Clone)]
pub(crate) struct ScriptCall {
    pub(crate) script: &'static LuaScript,
    pub(crate) head: Arc<CallHead>,
    /// This lease's own arguments, after the head's.
    pub(crate) tail: Vec<String>,
}

impl ScriptCall {
    async fn run(&self, redis: &RedisHandle) -> Result<redis::Value, LimiterError> {
        let keys: Vec<&str> = self.head.keys.iter().map(String::as_str).collect();
        let head_args = self.head.args_now();
        let args: Vec<&dyn crate::redis_handle::ToRedisArgsDyn> = head_args
            .iter()
            .chain(&self.tail)
            .map(|a| a as &dyn crate::redis_handle::ToRedisArgsDyn)
            .collect();
        redis.eval(self.script, &keys, &args).await
    }
}

/// How a lease is renewed and released. Plain leases use `lease_renew`/`lease_release`; leases of
/// the admission queue use scripts that also hand a released slot to the next waiter.
/// Renew scripts reply `{1, expiry_ms} | {0, 0}`, release scripts reply 1 (was held) or 0.
#[derive(Debug, Clone)]
pub(crate) struct LeaseOps {
    pub(crate) renew: ScriptCall,
    pub(crate) release: Release,
    /// Keep renewing after a loss is reported: the holder still runs, and a recovery from a Redis
    /// outage may register the lease again (admission permits), which renewals then keep alive.
    pub(crate) renew_after_loss: bool,
}

/// How a lease is released.
#[derive(Debug, Clone)]
pub(crate) enum Release {
    /// A script call of its own.
    Call(ScriptCall),
    /// Admission leases: together with the queue's other releases, as (id, this user key) pairs.
    Batch(ReleaseBatch, String),
}

/// One admission queue's coalesced releases: (lease id, user key) in, the script's answer out.
pub(crate) type ReleaseBatch = Arc<crate::coalesce::Coalescer<[String; 2], i64>>;

/// A lease's renewal task. A deferred one is started by a [`LeaseKeeper`] tick if the lease is
/// still held then: most admission leases end within milliseconds, and a task with two timers
/// per lease cost a short request more CPU than the script call that granted it.
enum Renewer {
    Deferred {
        start: Instant,
        counted_until: Instant,
    },
    Running(JoinHandle<()>),
    Stopped,
}

pub(crate) struct LeaseShared {
    redis: RedisHandle,
    id: String,
    ops: LeaseOps,
    ttl: Duration,
    fence: i64,
    /// Latest expiry confirmed by Redis (ms, Redis time).
    expiry_ms: AtomicI64,
    lost: watch::Sender<bool>,
    released: AtomicBool,
    renewer: Mutex<Renewer>,
}

impl LeaseShared {
    /// Starts the renewal task unless it runs already or the lease was released. Its schedule
    /// and its loss timer keep the instants set when the lease was granted.
    pub(crate) fn start_deferred_renewer(self: &Arc<Self>) {
        let mut renewer = self.renewer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Renewer::Deferred {
            start,
            counted_until,
        } = *renewer
        {
            *renewer = Renewer::Running(tokio::spawn(
                Arc::clone(self).renew_loop(start, counted_until),
            ));
        }
    }

    /// Stops renewing for good (a deferred renewer never starts).
    fn stop_renewing(&self) {
        let mut renewer = self.renewer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Renewer::Running(task) = std::mem::replace(&mut *renewer, Renewer::Stopped) {
            task.abort();
        }
    }

    async fn renew(&self) -> Result<Option<i64>, LimiterError> {
        let name = self.ops.renew.script.name();
        let value = self.ops.renew.run(&self.redis).await?;
        let reply: Vec<i64> =
            redis::FromRedisValue::from_redis_value(value).map_err(|e| LimiterError::Protocol {
                script: name,
                detail: e.to_string(),
            })?;
        let [ok, expiry] = ints::<2>(name, reply)?;
        Ok((ok == 1).then_some(expiry))
    }

    async fn release(&self) -> Result<bool, LimiterError> {
        if self.released.swap(true, Ordering::AcqRel) {
            return Ok(false);
        }
        let call = match &self.ops.release {
            Release::Batch(batch, user_key) => {
                return Ok(batch.call([self.id.clone(), user_key.clone()]).await? == 1);
            }
            Release::Call(call) => call,
        };
        let name = call.script.name();
        let value = call.run(&self.redis).await?;
        let held: i64 =
            redis::FromRedisValue::from_redis_value(value).map_err(|e| LimiterError::Protocol {
                script: name,
                detail: e.to_string(),
            })?;
        Ok(held == 1)
    }

    /// Reports the lease lost (once); whether to stop renewing.
    fn declare_lost(&self, why: &str) -> bool {
        if !self.lost.send_replace(true) {
            tracing::warn!(lease = %self.id, why, "lease lost");
        }
        !self.ops.renew_after_loss
    }

    /// Renews every TTL/3 until released or lost. Redis being unreachable is not loss by itself;
    /// the lease is declared lost when a renewal finds it gone, or at `counted_until` (see the
    /// module doc) if no renewal confirmed it by then, whether or not a renewal is still pending.
    async fn renew_loop(self: Arc<Self>, start: Instant, mut counted_until: Instant) {
        let period = self.ttl / 3;
        let mut next = start + period;
        loop {
            // Waiting for the next renewal, then for its reply, the loss timer runs.
            if !*self.lost.borrow() {
                tokio::select! {
                    () = tokio::time::sleep_until(next) => {}
                    () = tokio::time::sleep_until(counted_until) => {
                        if self.declare_lost("not renewed within its lifetime") {
                            return;
                        }
                        continue;
                    }
                }
            } else {
                tokio::time::sleep_until(next).await;
            }
            let sent = Instant::now();
            next = sent + period;
            let renewal = self.renew();
            tokio::pin!(renewal);
            let result = loop {
                if *self.lost.borrow() {
                    break (&mut renewal).await;
                }
                tokio::select! {
                    r = &mut renewal => break r,
                    () = tokio::time::sleep_until(counted_until) => {
                        if self.declare_lost("renewal still pending at the end of its lifetime") {
                            return;
                        }
                    }
                }
            };
            let lost = *self.lost.borrow();
            match result {
                Ok(Some(expiry)) => {
                    self.expiry_ms.store(expiry, Ordering::Release);
                    counted_until = self::counted_until(sent, self.ttl);
                    if lost {
                        tracing::info!(lease = %self.id, "lease registered again; renewing");
                    }
                }
                Ok(None) if lost => {}
                Ok(None) => {
                    if self.declare_lost("renewal found it gone") {
                        return;
                    }
                }
                Err(err) if lost => {
                    tracing::debug!(lease = %self.id, error = %err, "renewal of a lost lease failed");
                }
                Err(err) => {
                    tracing::warn!(lease = %self.id, error = %err, "lease renewal failed");
                }
            }
        }
    }
}

/// A held lease. Renews itself in the background; released when dropped (best effort, the TTL is
/// the backstop) or explicitly with [`Lease::release`].
pub struct Lease {
    shared: Arc<LeaseShared>,
    lost_rx: watch::Receiver<bool>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("id", &self.shared.id)
            .field("fence", &self.shared.fence)
            .field("expiry_ms", &self.expiry_ms())
            .finish()
    }
}

impl Lease {
    /// A held lease. Its renewal task starts now, or with `keeper`'s next tick if the lease is
    /// still held then (see [`LeaseKeeper`]); either way it renews every TTL/3 from now.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        keeper: Option<&LeaseKeeper>,
        redis: RedisHandle,
        id: String,
        ops: LeaseOps,
        ttl: Duration,
        expiry_ms: i64,
        fence: i64,
        counted_until: Instant,
    ) -> Self {
        let (lost, lost_rx) = watch::channel(false);
        let shared = Arc::new(LeaseShared {
            redis,
            id,
            ops,
            ttl,
            fence,
            expiry_ms: AtomicI64::new(expiry_ms),
            lost,
            released: AtomicBool::new(false),
            renewer: Mutex::new(Renewer::Deferred {
                start: Instant::now(),
                counted_until,
            }),
        });
        match keeper {
            Some(keeper) => keeper.defer(&shared),
            None => shared.start_deferred_renewer(),
        }
        Lease { shared, lost_rx }
    }

    /// The lease id (a member of every scope's set).
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// Fencing token: strictly greater than that of every lease granted before it in this group,
    /// also across a lost counter (deleted, or a Redis restarted empty): tokens never fall below
    /// Redis time in µs, so they stay increasing as long as the Redis host's clock does not step
    /// back.
    pub fn fence(&self) -> i64 {
        self.shared.fence
    }

    /// Latest expiry Redis confirmed (ms since the epoch, Redis time).
    pub fn expiry_ms(&self) -> i64 {
        self.shared.expiry_ms.load(Ordering::Acquire)
    }

    /// Whether the lease is known to be lost.
    pub fn is_lost(&self) -> bool {
        *self.lost_rx.borrow()
    }

    /// The loss flag, owned (for a waiter that outlives a borrow of the lease).
    pub(crate) fn lost_receiver(&self) -> watch::Receiver<bool> {
        self.lost_rx.clone()
    }

    /// Resolves when the lease is lost (never, while it is renewed).
    pub async fn lost(&self) {
        let mut rx = self.lost_rx.clone();
        // An error means the renewer is gone without reporting loss (released): wait forever.
        if rx.wait_for(|lost| *lost).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Renews now (outside the background schedule). `Ok(false)` if the lease was lost.
    pub async fn renew(&self) -> Result<bool, LimiterError> {
        match self.shared.renew().await? {
            Some(expiry) => {
                self.shared.expiry_ms.store(expiry, Ordering::Release);
                Ok(true)
            }
            None => {
                self.shared.lost.send_replace(true);
                Ok(false)
            }
        }
    }

    /// Releases the slot in every scope. `Ok(true)` if it was still held.
    pub async fn release(self) -> Result<bool, LimiterError> {
        self.shared.stop_renewing();
        self.shared.release().await
    }

    /// Stops renewing without releasing: Redis counts the slot until the lease expires there.
    /// For a replica cut off from Redis that reuses the slot locally, which is safe only while
    /// Redis still counts it (a release sent now might still reach Redis later).
    pub(crate) fn abandon(self) {
        self.shared.stop_renewing();
        self.shared.released.store(true, Ordering::Release);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.shared.stop_renewing();
        if self.shared.released.load(Ordering::Acquire) {
            return;
        }
        // Best effort: without a runtime (process teardown) the TTL frees the slot.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let shared = Arc::clone(&self.shared);
            rt.spawn(async move {
                if let Err(err) = shared.release().await {
                    tracing::warn!(lease = %shared.id, error = %err, "lease release on drop failed");
                }
            });
        }
    }
}
