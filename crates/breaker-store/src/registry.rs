//! [`Breakers`]: every breaker of one replica. Each service's state is shared in Redis and cached
//! here; the cache is kept fresh by pub/sub pushes (see `subscriber.rs`), so the hot path asks
//! Redis nothing for a permit while CLOSED or OPEN:
//!
//! - cached CLOSED: the call goes; its outcome costs one `breaker_record` script call.
//! - cached OPEN with the open period still running: refused at once, zero Redis calls.
//! - cached HALF_OPEN, or OPEN past its end: one `breaker_permit` script call decides (at most
//!   `probe_permits` probes fleet-wide). After a "probes busy" refusal the replica refuses locally
//!   for `half_open_recheck` (the probe's result is pushed anyway), so waiting callers do not
//!   hammer Redis.
//!
//! Every success is recorded (one script call), not only failures: the ratio rule needs the call
//! count, and batching would delay trips by the batch period. [`Breakers::record_in_background`]
//! takes that call off the caller's path for successes (see BENCHMARKS.md).
//!
//! Degraded mode: when a Redis call fails as unavailable, the replica switches every breaker to its
//! local copy (seeded from the last shared state, same policy) and makes no further Redis calls on
//! the hot path; the background task notices Redis answering again, re-reads every breaker and
//! switches back to shared state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use limiter_core::{LimiterError, RedisHandle};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tracing::Instrument;

use crate::cache::{Cached, cached_refusal};
use crate::config::{MAX_BACKGROUND_RECORDS, TALLY_EVERY};
use crate::entry::{Entry, lock, read, state_index};
use crate::local::{LocalBreaker, LocalVerdict};
use crate::permit::{Outcome, Permit, PermitSource};
use crate::shared::{Ended, SharedBreaker, SharedVerdict, channel};
use crate::state::{BreakerState, MAX_HOLD, Observed};
use crate::subscriber::{self, Listener};
use crate::{BreakerError, BreakersConfig};

/// Every breaker of one replica.
///
/// ```no_run
/// use breaker_store::{Breakers, BreakersConfig, Outcome};
/// use limiter_core::{RedisConfig, RedisHandle};
///
/// # async fn run() -> Result<(), breaker_store::BreakerError> {
/// # let redis = RedisHandle::new(&RedisConfig::default()).expect("config");
/// let breakers = Breakers::new(redis, BreakersConfig::default())?;
/// // Refused at once (503 with `Retry-After`) while the breaker is open on any replica.
/// let permit = breakers.acquire("payments").await?;
/// let ok = true; // ... make the call
/// let outcome = if ok { Outcome::Success } else { Outcome::Failure };
/// breakers.record(permit, outcome).await;
/// # Ok(())
/// # }
/// ```
///
/// Cheap to clone; the background pub/sub task stops when the last
/// clone is dropped.
#[derive(Debug, Clone)]
pub struct Breakers {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) redis: RedisHandle,
    pub(crate) config: BreakersConfig,
    entries: RwLock<HashMap<String, Arc<Entry>>>,
    degraded: AtomicBool,
    changes: watch::Sender<u64>,
    /// Outcomes being recorded by background tasks.
    background_records: AtomicUsize,
    task: Mutex<Option<AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

impl Breakers {
    /// The breakers of one replica, sharing state through `redis` (its prefix namespaces the
    /// keys and the pub/sub channel). Must be called inside a tokio runtime: it starts the
    /// background task that subscribes to state changes. Does not touch Redis itself.
    pub fn new(redis: RedisHandle, config: BreakersConfig) -> Result<Self, BreakerError> {
        config.default_policy.validate()?;
        for p in config.policies.values() {
            p.validate()?;
        }
        let day = Duration::from_secs(86_400);
        let ok = !config.refresh_interval.is_zero()
            && config.refresh_interval <= Duration::from_secs(60)
            && config.probe_ttl >= Duration::from_millis(1)
            && config.probe_ttl <= day
            && config.state_ttl >= Duration::from_secs(1)
            && config.state_ttl <= MAX_HOLD
            && config.half_open_recheck <= Duration::from_secs(60);
        if !ok {
            return Err(BreakerError::InvalidConfig(
                "refresh_interval in (0, 60 s], probe_ttl in [1 ms, 1 day], state_ttl in \
                 [1 s, 30 days], half_open_recheck <= 60 s"
                    .into(),
            ));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            BreakerError::InvalidConfig("Breakers::new must run inside a tokio runtime".into())
        })?;
        let inner = Arc::new(Inner {
            redis,
            config,
            entries: RwLock::new(HashMap::new()),
            degraded: AtomicBool::new(false),
            changes: watch::channel(0).0,
            background_records: AtomicUsize::new(0),
            task: Mutex::new(None),
        });
        let services: Vec<String> = inner.config.policies.keys().cloned().collect();
        let breakers = Breakers { inner };
        for s in &services {
            breakers.entry(s);
        }
        let task = subscriber::spawn(
            &runtime,
            &breakers.inner,
            breakers.inner.redis.clone(),
            channel(breakers.inner.redis.keys()),
            breakers.inner.config.refresh_interval,
        );
        *lock(&breakers.inner.task) = Some(task);
        Ok(breakers)
    }

    /// State changes of `service` this replica has learned since start, by state entered
    /// (monotonic; the service's metrics turn them into counters).
    pub fn transitions(&self, service: &str) -> [(BreakerState, u64); 3] {
        let entry = read(&self.inner.entries).get(service).cloned();
        let n = |i: usize| {
            entry
                .as_ref()
                .map_or(0, |e| e.transitions[i].load(Ordering::Relaxed))
        };
        [
            (BreakerState::Closed, n(0)),
            (BreakerState::Open, n(1)),
            (BreakerState::HalfOpen, n(2)),
        ]
    }

    /// The Redis handle the breakers use.
    pub fn redis(&self) -> &RedisHandle {
        &self.inner.redis
    }

    /// Whether this replica runs on local breakers because Redis is unreachable.
    pub fn degraded(&self) -> bool {
        self.inner.degraded.load(Ordering::Acquire)
    }

    /// A counter bumped on every state change this replica learns (and on degraded-mode
    /// switches): wait on it instead of polling.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Services this replica knows (configured or used).
    pub fn services(&self) -> Vec<String> {
        let mut v: Vec<String> = read(&self.inner.entries).keys().cloned().collect();
        v.sort();
        v
    }

    /// The state this replica sees, without a Redis call: the cached shared state, or the local
    /// breaker's when degraded. An unknown service is CLOSED.
    pub fn state(&self, service: &str) -> BreakerState {
        let Some(entry) = read(&self.inner.entries).get(service).cloned() else {
            return BreakerState::Closed;
        };
        if self.degraded() {
            return lock(&entry.local).state;
        }
        lock(&entry.cache).state
    }

    /// Refuses at once if this replica already knows the call would be refused (cached OPEN, or
    /// probes busy). No Redis call, no side effect: callers use it before paying for pacing.
    pub fn check(&self, service: &str) -> Result<(), BreakerError> {
        let Some(entry) = read(&self.inner.entries).get(service).cloned() else {
            return Ok(());
        };
        let now = Instant::now();
        if self.degraded() {
            let local = lock(&entry.local);
            if local.state == BreakerState::Open && now < local.open_until {
                return Err(BreakerError::Open {
                    retry_after: local.open_until - now,
                });
            }
            return Ok(());
        }
        cached_refusal(&lock(&entry.cache), now)
    }

    /// Asks for permission to call `service` now.
    ///
    /// `Err(Open)` / `Err(HalfOpenBusy)` mean: do not call, answer 503 with `Retry-After`. Never
    /// fails because Redis is down (the local breaker decides then).
    pub async fn acquire(&self, service: &str) -> Result<Permit, BreakerError> {
        let entry = self.entry(service);
        let now = Instant::now();
        if self.degraded() {
            return self.local_permit(entry, now);
        }
        {
            let cache = lock(&entry.cache);
            cached_refusal(&cache, now)?;
            if cache.known && cache.state == BreakerState::Closed {
                drop(cache);
                return Ok(shared_permit(entry, None, now));
            }
        }
        let probe_id = format!("{:016x}", rand::random::<u64>());
        let cfg = &self.inner.config;
        let res = entry
            .shared
            .permit(
                &self.inner.redis,
                &probe_id,
                cfg.probe_ttl,
                entry.policy.probe_permits,
                cfg.state_ttl,
            )
            .await;
        let received = Instant::now();
        match res {
            Ok((verdict, obs)) => {
                self.apply(&entry, &obs, received, false);
                match verdict {
                    SharedVerdict::Go => Ok(shared_permit(entry, None, received)),
                    SharedVerdict::Probe => Ok(shared_permit(entry, Some(probe_id), received)),
                    SharedVerdict::Refused(retry_after) => Err(BreakerError::Open { retry_after }),
                    SharedVerdict::Busy(retry_after) => {
                        let recheck = retry_after.min(cfg.half_open_recheck);
                        lock(&entry.cache).busy_until = Some(received + recheck);
                        Err(BreakerError::HalfOpenBusy { retry_after })
                    }
                }
            }
            Err(e) => {
                self.redis_failed(&e, "breaker_permit");
                self.local_permit(entry, received)
            }
        }
    }

    /// Records how a permitted call ended and returns the state after it. One script call
    /// (none when degraded). Never fails: an unreachable Redis switches to degraded mode and
    /// the outcome is recorded locally.
    pub async fn record(&self, permit: Permit, outcome: Outcome) -> BreakerState {
        let Permit {
            entry,
            source,
            started,
        } = permit;
        let now = Instant::now();
        let slow = entry
            .policy
            .slow_call
            .is_some_and(|limit| now.duration_since(started) > limit);
        let failure = outcome == Outcome::Failure || slow;
        let rnd = rand::random::<f64>();
        let probe = match source {
            PermitSource::Local { probe } => probe,
            PermitSource::Shared { probe } if !self.degraded() => {
                let cfg = &self.inner.config;
                let res = entry
                    .shared
                    .record(
                        &self.inner.redis,
                        &entry.policy,
                        Ended { failure, count: 1 },
                        probe.as_deref(),
                        rnd,
                        cfg.state_ttl,
                    )
                    .await;
                match res {
                    Ok((obs, _, _)) => {
                        self.apply(&entry, &obs, Instant::now(), false);
                        return obs.state;
                    }
                    Err(e) => {
                        self.redis_failed(&e, "breaker_record");
                        None
                    }
                }
            }
            // Degraded since the permit was granted: the local breaker counts the outcome.
            PermitSource::Shared { .. } => None,
        };
        let mut local = lock(&entry.local);
        local.record(&entry.policy, Instant::now(), failure, probe, rnd);
        local.state
    }

    /// Records an outcome without waiting for Redis: the script call runs in a background task.
    /// For successes of non-probe calls, whose record changes nothing the caller waits for; the
    /// outbound wrapper uses it so a successful call pays only for pacing. The task is bounded by
    /// the Redis response timeout.
    /// At most [`MAX_BACKGROUND_RECORDS`] run at once; beyond that the caller waits (backpressure
    /// instead of an unbounded pile of tasks when Redis is slow).
    ///
    /// Without a failure ratio in the policy, a plain success (closed, not a probe, not slow)
    /// cannot trip anything: it only adds to the window's call count, which the health view
    /// shows. Such successes are tallied and written together, one script call per breaker every
    /// [`TALLY_EVERY`] at most, instead of one each.
    pub async fn record_in_background(&self, permit: Permit, outcome: Outcome) {
        if outcome == Outcome::Success && self.tally(&permit) {
            return;
        }
        let inflight = &self.inner.background_records;
        if inflight.fetch_add(1, Ordering::AcqRel) >= MAX_BACKGROUND_RECORDS {
            inflight.fetch_sub(1, Ordering::AcqRel);
            self.record(permit, outcome).await;
            return;
        }
        let me = self.clone();
        tokio::spawn(
            async move {
                me.record(permit, outcome).await;
                me.inner.background_records.fetch_sub(1, Ordering::AcqRel);
            }
            // Its script call belongs to the call's trace.
            .in_current_span(),
        );
    }

    /// Re-reads every breaker from Redis (after a pub/sub (re)connect, periodically, and to leave
    /// degraded mode). Returns whether every read succeeded; only then is degraded mode left.
    pub(crate) async fn resync(&self) -> bool {
        let entries: Vec<Arc<Entry>> = read(&self.inner.entries).values().cloned().collect();
        for entry in entries {
            match entry.shared.read(&self.inner.redis, &entry.policy).await {
                Ok(r) => {
                    self.apply(&entry, &r.observed, Instant::now(), true);
                }
                Err(e) => {
                    tracing::debug!(service = %entry.service, error = %e, "breaker resync failed");
                    return false;
                }
            }
        }
        if self.inner.degraded.swap(false, Ordering::AcqRel) {
            tracing::info!("redis reachable again: breakers back on shared state");
            self.bump();
        }
        true
    }

    /// Applies a pushed message.
    pub(crate) fn on_message(&self, payload: &str) {
        let Some((obs, service)) = Observed::parse_message(payload) else {
            tracing::warn!(payload, "malformed breaker message");
            return;
        };
        let entry = read(&self.inner.entries).get(service).cloned();
        if let Some(entry) = entry {
            self.apply(&entry, &obs, Instant::now(), false);
        }
    }

    /// Adds a plain success to its breaker's tally if it can wait (see `record_in_background`);
    /// the first one of a period schedules the write.
    fn tally(&self, permit: &Permit) -> bool {
        let entry = &permit.entry;
        let plain = entry.policy.failure_ratio.is_none()
            && matches!(permit.source, PermitSource::Shared { probe: None })
            && !permit.is_slow()
            && !self.degraded();
        if !plain {
            return false;
        }
        if entry.tally.fetch_add(1, Ordering::AcqRel) == 0 {
            let me = self.clone();
            let entry = Arc::clone(entry);
            tokio::spawn(
                async move {
                    tokio::time::sleep(TALLY_EVERY).await;
                    me.flush_tally(&entry).await;
                }
                .in_current_span(),
            );
        }
        true
    }

    /// Writes a breaker's tallied successes as one record.
    async fn flush_tally(&self, entry: &Entry) {
        let n = entry.tally.swap(0, Ordering::AcqRel);
        if n == 0 || self.degraded() {
            // Degraded meanwhile: without a ratio rule successes decide nothing, and the shared
            // count is re-read when Redis answers again.
            return;
        }
        let cfg = &self.inner.config;
        let res = entry
            .shared
            .record(
                &self.inner.redis,
                &entry.policy,
                Ended {
                    failure: false,
                    count: n,
                },
                None,
                0.0,
                cfg.state_ttl,
            )
            .await;
        match res {
            Ok((obs, _, _)) => self.apply(entry, &obs, Instant::now(), false),
            Err(e) => self.redis_failed(&e, "breaker_record"),
        }
    }

    pub(crate) fn apply(
        &self,
        entry: &Entry,
        obs: &Observed,
        received: Instant,
        authoritative: bool,
    ) {
        let (changed, entered) = {
            let mut c = lock(&entry.cache);
            let before = c.known.then_some(c.state);
            let changed = c.apply(obs, received, authoritative);
            (changed, before.filter(|b| *b != c.state).map(|_| c.state))
        };
        if let Some(to) = entered {
            entry.transitions[state_index(to)].fetch_add(1, Ordering::Relaxed);
        }
        if changed {
            tracing::debug!(service = %entry.service, state = %obs.state, generation = obs.generation,
                "breaker state learned");
            self.bump();
        }
    }

    fn bump(&self) {
        self.inner.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A Redis call failed: unavailability switches to degraded mode; anything else is a bug
    /// worth a log line, and that one call falls back to the local breaker.
    pub(crate) fn redis_failed(&self, e: &LimiterError, op: &str) {
        if !e.is_unavailable() {
            tracing::warn!(error = %e, op, "breaker script failed");
            return;
        }
        if self.inner.degraded.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::warn!(error = %e, op, "redis unreachable: breakers degraded to local state");
        let now = Instant::now();
        for entry in read(&self.inner.entries).values() {
            let (state, open_until) = {
                let c = lock(&entry.cache);
                (c.state, c.open_until)
            };
            lock(&entry.local).seed(now, state, open_until);
        }
        self.bump();
    }

    fn local_permit(&self, entry: Arc<Entry>, now: Instant) -> Result<Permit, BreakerError> {
        let verdict = lock(&entry.local).permit(&entry.policy, now, self.inner.config.probe_ttl);
        match verdict {
            LocalVerdict::Go => Ok(Permit {
                entry,
                source: PermitSource::Local { probe: None },
                started: now,
            }),
            LocalVerdict::Probe(id) => Ok(Permit {
                entry,
                source: PermitSource::Local { probe: Some(id) },
                started: now,
            }),
            LocalVerdict::Open(retry_after) => Err(BreakerError::Open { retry_after }),
            LocalVerdict::Busy(retry_after) => Err(BreakerError::HalfOpenBusy { retry_after }),
        }
    }

    /// The entry of a service, created on first use with its configured (or the default) policy.
    pub(crate) fn entry(&self, service: &str) -> Arc<Entry> {
        if let Some(e) = read(&self.inner.entries).get(service) {
            return e.clone();
        }
        let mut map = self
            .inner
            .entries
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(service.to_string())
            .or_insert_with(|| {
                let policy = self
                    .inner
                    .config
                    .policies
                    .get(service)
                    .unwrap_or(&self.inner.config.default_policy)
                    .clone();
                let now = Instant::now();
                Arc::new(Entry {
                    service: service.to_string(),
                    shared: SharedBreaker::new(self.inner.redis.keys(), service),
                    policy,
                    cache: Mutex::new(Cached {
                        known: false,
                        state: BreakerState::Closed,
                        generation: 0,
                        open_until: None,
                        busy_until: None,
                    }),
                    local: Mutex::new(LocalBreaker::new(now)),
                    transitions: Default::default(),
                    tally: AtomicU64::new(0),
                })
            })
            .clone()
    }
}

fn shared_permit(entry: Arc<Entry>, probe: Option<String>, now: Instant) -> Permit {
    Permit {
        entry,
        source: PermitSource::Shared { probe },
        started: now,
    }
}

impl Listener for Inner {
    fn on_message(self: Arc<Self>, payload: &str) {
        Breakers { inner: self }.on_message(payload);
    }

    fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    async fn resync(self: Arc<Self>) -> bool {
        Breakers { inner: self }.resync().await
    }
}
