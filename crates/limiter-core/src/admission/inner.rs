//! The state one replica's admission shares between its handle and its background tasks, and the
//! mode changes every path needs.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::class::{Class, Classes};
use super::config::{AdmissionConfig, OutagePolicy};
use super::local::Local;
use super::local_queue::LocalCaps;
use super::mode::{Mode, ModeCell};
use super::outage::OutageCap;
use super::permit::{Held, Permit, SharedCounted, SharedHold};
use super::rejection::Rejection;
use super::released::Released;
use super::revocation::Revocation;
use super::scripts::QueueScripts;
use super::waiter::{Event, Waiters};

pub(crate) struct Inner {
    pub(crate) cfg: AdmissionConfig,
    pub(crate) classes: Classes,
    pub(crate) scripts: Arc<QueueScripts>,
    /// This replica's waiters in the shared queue.
    pub(crate) waiters: Arc<Waiters>,
    pub(crate) closing: AtomicBool,
    /// Wakes the heartbeat loop for an immediate heartbeat (after a pub/sub reconnect).
    pub(crate) heartbeat_now: Notify,
    pub(crate) tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The local queue (degraded mode) and the count of running shared permits.
    pub(crate) local: Arc<Local>,
    pub(crate) mode: ModeCell,
    /// When this replica's recovery registered its permits (`Recovering` since then).
    pub(crate) recovering_since: Mutex<Option<Instant>>,
    /// Replicas in the registry at the last heartbeat.
    pub(crate) registered_now: AtomicU32,
    /// Live replicas as last read from the registry.
    pub(crate) live_replicas: AtomicU32,
    /// The fleet's recent peak of slots in use, and this replica's limit during an outage.
    pub(crate) outage: OutageCap,
    /// The Redis handle's failover count already acted upon.
    pub(crate) failovers_seen: AtomicU64,
    /// Shared permits ended within the last lease TTL.
    pub(crate) released: Arc<Released>,
}

impl Inner {
    pub(crate) fn new(cfg: AdmissionConfig, classes: Classes, scripts: QueueScripts) -> Self {
        let scripts = Arc::new(scripts);
        let released = Arc::new(Released::new(cfg.lease_ttl));
        Inner {
            live_replicas: AtomicU32::new(cfg.expected_replicas.max(1)),
            waiters: Arc::new(Waiters::new(Arc::clone(&scripts))),
            scripts,
            classes,
            cfg,
            closing: AtomicBool::new(false),
            heartbeat_now: Notify::new(),
            tasks: Mutex::new(Vec::new()),
            local: Arc::default(),
            mode: ModeCell::default(),
            recovering_since: Mutex::new(None),
            registered_now: AtomicU32::new(0),
            outage: OutageCap::default(),
            failovers_seen: AtomicU64::new(0),
            released,
        }
    }

    /// If Redis moved to another master since the last call (a Sentinel failover): the new one
    /// may lack what this replica holds (writes lost with the old one, replication being
    /// asynchronous), so it is registered again as after an empty Redis, through degraded mode
    /// and the recovery the heartbeat runs next (woken here).
    pub(crate) fn follow_failover(&self) {
        let now = self.scripts.redis().failovers();
        if self.failovers_seen.swap(now, Ordering::AcqRel) == now {
            return;
        }
        tracing::warn!("Redis master moved: registering again what this replica holds");
        self.enter_degraded();
        self.heartbeat_now.notify_one();
    }

    pub(crate) fn mode(&self) -> Mode {
        self.mode.get()
    }

    pub(crate) fn set_mode(&self, mode: Mode) {
        if self.mode.set(mode) {
            tracing::warn!(replica = %self.scripts.replica(), mode = mode.name(), "admission mode changed");
        }
    }

    /// Redis is unreachable: admit from the local share (if configured to).
    pub(crate) fn enter_degraded(&self) {
        if !self.cfg.local_fallback {
            return;
        }
        // Before the mode: a local grant seen as degraded is always registered by a recovery.
        self.local.enter_degraded();
        // Before the mode too: no local grant without the limit. Fixed once per outage, from
        // what this replica runs as it begins (no shared slot is granted during it).
        if self.mode() != Mode::Degraded {
            let replicas = self.live_replicas.load(Ordering::Relaxed);
            let share = self.shares().global;
            let own = self.local.running();
            // Safety: this replica cannot tell a Redis down for everyone from a partition of
            // itself, in which the others go on admitting by Redis's counts; so it only reuses
            // the slots Redis counts for it. A replica that never reached Redis has none there.
            let counted = (self.cfg.outage_policy == OutagePolicy::Safety
                && self.outage.counted_until(self.cfg.lease_ttl).is_some())
            .then(|| self.local.begin_counted());
            let limit =
                self.outage
                    .begin(self.scripts.caps().global(), share, replicas, own, counted);
            let peak = self.outage.peak();
            tracing::warn!(
                own,
                share,
                ?peak,
                limit,
                "Redis unreachable: local admission limit"
            );
        }
        self.set_mode(Mode::Degraded);
        // Waiters in the shared queue would wait for a grant that cannot come (and a Redis that
        // returns empty has forgotten them) until their deadline: they move to the local queue.
        for (_, w) in self.waiters.drain() {
            let _ = w.tx.send(Event::Degraded);
        }
    }

    /// This replica's caps while Redis is unreachable: its share, and of the global cap at most
    /// the limit fixed when the outage began (see `outage.rs`).
    pub(crate) fn local_caps(&self) -> LocalCaps {
        let mut caps = self.shares();
        if let Some(limit) = self.outage.limit() {
            caps.global = caps.global.min(limit);
        }
        caps
    }

    /// This replica's share of the caps: `max(1, cap / live replicas)` each (no per-user
    /// limits: none locally either).
    fn shares(&self) -> LocalCaps {
        let unlimited_if_0 = |v: u32| if v == 0 { u32::MAX } else { v };
        LocalCaps {
            global: self.scripts.caps().global(),
            user: unlimited_if_0(self.scripts.caps().user()),
            queue: self.cfg.max_queue,
            user_queue: unlimited_if_0(self.cfg.max_queued_per_user),
        }
        .share(self.live_replicas.load(Ordering::Relaxed))
    }

    /// A new waiter/lease id: `<replica>.<random>` (reclaim tells a lease's replica by it).
    pub(crate) fn new_id(&self) -> String {
        format!(
            "{}.{}",
            self.scripts.replica(),
            crate::lease::new_lease_id()
        )
    }

    /// A new id for a waiter of the shared queue that may be granted for `budget` after it
    /// entered. The queue keeps no record beside its entries: the id ends with that time in ms
    /// (`<replica>.<random>.<ms>`), and starts with the replica its grant is pushed to.
    pub(crate) fn waiter_id(&self, budget: Duration) -> String {
        format!("{}.{}", self.new_id(), crate::lease::ttl_millis(budget))
    }

    /// A permit for a lease Redis granted. `started`: when this replica sent the call that
    /// entered the queue at Redis time `entered_at_ms` (or took the slot at once).
    ///
    /// Under the safety policy a grant that arrives when its lease may already have expired in
    /// Redis (this replica was paused, or cut off, while the grant waited for it) is refused:
    /// the slot may be someone else's by now. Redis time runs at most as fast as this clock
    /// since the entry, so the grant happened no earlier, on this clock, than `started` plus
    /// the Redis time between the entry and the grant.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn shared_permit(
        &self,
        id: String,
        user_key: &str,
        class: Class,
        expiry: i64,
        fence: i64,
        started: Instant,
        position_at_entry: u32,
        entered_at_ms: i64,
    ) -> Result<Permit, Rejection> {
        let granted_at_ms = expiry - ttl_ms_i64(self.cfg.lease_ttl);
        let after_entry = u64::try_from(granted_at_ms - entered_at_ms).unwrap_or(0);
        let granted = started + Duration::from_millis(after_entry);
        let counted = SharedCounted::new(&self.local, &self.released, &id, user_key);
        let lease = self.scripts.lease(id, user_key, expiry, fence, granted);
        let revocation = Revocation::lease(self.cfg.outage_policy, lease.lost_receiver());
        let stale = crate::lease::counted_until(granted, self.cfg.lease_ttl) <= Instant::now();
        if stale && self.cfg.outage_policy == OutagePolicy::Safety {
            tracing::warn!(
                late_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                "a grant arrived after its lease's lifetime: refused, the slot handed on"
            );
            // Dropping the lease releases it; the request is refused like one during an outage.
            drop((lease, counted));
            return Err(Rejection::OutageTooLong);
        }
        Ok(Permit {
            held: Held::Shared(SharedHold {
                lease: Some(lease),
                counted,
            }),
            class,
            queued: started.elapsed(),
            position_at_entry,
            entered_at_ms,
            granted_at_ms,
            revocation,
        })
    }
}

pub(crate) fn ttl_ms_i64(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
