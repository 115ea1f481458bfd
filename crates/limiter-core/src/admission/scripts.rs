//! Typed calls of the admission scripts (`lua/admission_*.lua`): their arguments in, their
//! replies decoded. Nothing here decides anything; the scripts do.

use std::sync::Arc;
use std::time::Duration;

use super::caps::Caps;
use super::class::{Class, Classes};
use super::config::AdmissionConfig;
use super::stats::QueueStats;
use crate::coalesce::{BatchFn, Coalescer};
use crate::lease::{CallHead, Lease, LeaseOps, Release, ReleaseBatch, ScriptCall, ttl_millis};
use crate::lease_keeper::LeaseKeeper;
use crate::redis_handle::ToRedisArgsDyn;
use crate::reply::ints;
use crate::scripts::{
    ADMISSION_ADOPT, ADMISSION_ENTER, ADMISSION_HEARTBEAT, ADMISSION_LEAVE, ADMISSION_RECLAIM,
    ADMISSION_RELEASE, ADMISSION_RENEW, ADMISSION_RESET, ADMISSION_STATS, LuaScript,
};
use crate::{LimiterError, RedisHandle};
use tokio::time::Instant;

/// The reply of `admission_enter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entered {
    /// A slot was free: granted at once.
    Granted { expiry: i64, fence: i64 },
    /// Queued at this 1-based position, at this Redis time (ms).
    Queued { position: u32, at_ms: i64 },
    /// The queue is at its maximum length.
    Full,
    /// This user's waiters fill its share of the queue.
    UserFull,
    /// A leave of this id reached Redis first: its caller gave up while the enter was batched.
    Withdrawn,
}

/// What one heartbeat brought back.
#[derive(Debug)]
pub(crate) struct Beat {
    /// Grants for this replica's waiters, as pushed (`"waiter fence expiry"`).
    pub(crate) grants: Vec<String>,
    /// Positions of the watched waiters, in the order given (0: no longer queued).
    pub(crate) positions: Vec<i64>,
    /// Replicas in the registry.
    pub(crate) live: i64,
    /// The most slots in use fleet-wide at once over the last three heartbeat TTLs or more.
    pub(crate) peak: i64,
}

/// The admission scripts of one queue, as called by one replica.
#[derive(Debug)]
pub(crate) struct QueueScripts {
    redis: RedisHandle,
    group: String,
    replica: String,
    lease_ttl: Duration,
    /// `T`: the hash tag every key of the queue shares.
    tag: String,
    /// The caps in force.
    caps: Caps,
    /// Concurrent releases, sent together: one script call and one dispatch for all of them.
    releases: ReleaseBatch,
    /// Concurrent entries, sent together: one script call and one dispatch for all of them.
    entries: Arc<Coalescer<Entry, Entered>>,
    /// Starts the renewal of permits still held a tick after their grant.
    keeper: Arc<LeaseKeeper>,
    /// `T:lease:global` (KEYS[1] of every admission script) and ARGV[1..6] (each call writes the
    /// caps in force into ARGV[2] and ARGV[3]): shared by the batches and every permit's renewal.
    head: Arc<CallHead>,
}

/// One request entering the queue: `admission_enter`'s group of seven arguments.
type Entry = [String; 7];

/// Batches of each kind on the wire at once. One: Redis, not the loopback trip, bounds a busy
/// queue, and requests that arrive while a call runs then go together in the next (`bench/ab`
/// against two at 64 callers: more pairs per second, less Redis CPU per pair; one caller: alike).
const MAX_IN_FLIGHT: usize = 1;
/// Requests per script call: bounds how long one call holds Redis. An entry or a release with its
/// grant costs Redis ~20 µs, so 32 stay near 0.6 ms, under the 1 ms no other client should wait.
const MAX_BATCH: usize = 32;

impl QueueScripts {
    pub(crate) fn new(
        redis: RedisHandle,
        cfg: &AdmissionConfig,
        classes: &Classes,
        replica: String,
    ) -> Self {
        let tag = redis.keys().group_tag(&cfg.group);
        let global_key = redis.keys().lease_scope(&cfg.group, b"global");
        let base_args = vec![
            tag.clone(),
            cfg.user_cap.to_string(),
            cfg.global_cap.to_string(),
            ttl_millis(cfg.lease_ttl).to_string(),
            ttl_millis(cfg.heartbeat_ttl).to_string(),
            classes.len().to_string(),
        ];
        let caps = Caps::new(cfg.user_cap, cfg.global_cap);
        let head = Arc::new(CallHead {
            keys: vec![global_key],
            args: base_args,
            caps: Some(caps.clone()),
        });
        // admission_release: (id, user key) per lease, 1 if it was live, else 0.
        let release = |_: &'static str, r: &[i64]| Ok(r[0]);
        let releases = Arc::new(Coalescer::new(
            script_batch(
                &redis,
                &head,
                &ADMISSION_RELEASE,
                every_argument,
                1,
                release,
            ),
            MAX_IN_FLIGHT,
            MAX_BATCH,
        ));
        let entries = Arc::new(
            Coalescer::new(
                script_batch(
                    &redis,
                    &head,
                    &ADMISSION_ENTER,
                    if cfg.per_user() {
                        every_argument
                    } else {
                        without_user_arguments
                    },
                    3,
                    entered,
                ),
                MAX_IN_FLIGHT,
                MAX_BATCH,
            )
            .skipping_abandoned()
            .gathering(),
        );
        QueueScripts {
            head,
            entries,
            caps,
            releases,
            tag,
            group: cfg.group.clone(),
            replica,
            lease_ttl: cfg.lease_ttl,
            keeper: Arc::new(LeaseKeeper::new(cfg.lease_ttl)),
            redis,
        }
    }

    /// What starts the renewal of this queue's permits: its `run` must be spawned.
    pub(crate) fn keeper(&self) -> Arc<LeaseKeeper> {
        Arc::clone(&self.keeper)
    }

    /// The caps in force.
    pub(crate) fn caps(&self) -> &Caps {
        &self.caps
    }

    pub(crate) fn redis(&self) -> &RedisHandle {
        &self.redis
    }

    /// This replica's id in the registry.
    pub(crate) fn replica(&self) -> &str {
        &self.replica
    }

    /// The pub/sub channel grants for this replica are pushed on.
    pub(crate) fn channel(&self) -> String {
        format!("{}:ch:{}", self.tag, self.replica)
    }

    /// The lease scope key of a user.
    pub(crate) fn user_key(&self, user: &[u8]) -> String {
        let mut scope = b"user:".to_vec();
        scope.extend_from_slice(user);
        self.redis.keys().lease_scope(&self.group, &scope)
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        script: &'static LuaScript,
        extra: &[&str],
    ) -> Result<T, LimiterError> {
        let base = self.head.args_now();
        let mut args: Vec<&dyn ToRedisArgsDyn> =
            base.iter().map(|a| a as &dyn ToRedisArgsDyn).collect();
        args.extend(extra.iter().map(|a| a as &dyn ToRedisArgsDyn));
        self.redis.eval(script, &[&self.head.keys[0]], &args).await
    }

    /// Takes a slot or queues (`admission_enter`, with any other requests entering at the same
    /// time). `budget`: how long after its arrival the waiter may be granted (its wait
    /// budget plus a margin; also in its id), which is how long its queue entries live.
    /// A call dropped before its batch left is not sent.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn enter(
        &self,
        id: &str,
        user_key: &str,
        class: Class,
        max_queue: u32,
        max_queued_per_user: u32,
        budget: Duration,
    ) -> Result<Entered, LimiterError> {
        self.entries
            .call([
                id.to_string(),
                user_key.to_string(),
                self.replica.clone(),
                class.index().to_string(),
                max_queue.to_string(),
                max_queued_per_user.to_string(),
                ttl_millis(budget).to_string(),
            ])
            .await
    }

    /// A waiter leaves (`admission_leave`); a grant that raced with it is handed on.
    pub(crate) async fn leave(
        &self,
        id: &str,
        user_key: &str,
        class: Class,
    ) -> Result<i64, LimiterError> {
        let class = class.index().to_string();
        self.run(&ADMISSION_LEAVE, &[id, user_key, &class, &self.replica])
            .await
    }

    /// Releases a lease and hands the slot on (`admission_release`, with any other releases
    /// made at the same time).
    pub(crate) async fn release(&self, id: &str, user_key: &str) -> Result<(), LimiterError> {
        self.releases
            .call([id.to_string(), user_key.to_string()])
            .await?;
        Ok(())
    }

    /// This replica's heartbeat; `watched`: (waiter id, class) whose positions are wanted.
    pub(crate) async fn heartbeat(
        &self,
        watched: &[(String, Class)],
    ) -> Result<Beat, LimiterError> {
        let classes: Vec<String> = watched.iter().map(|(_, c)| c.index().to_string()).collect();
        let mut extra: Vec<&str> = vec![&self.replica];
        for ((id, _), class) in watched.iter().zip(&classes) {
            extra.push(id);
            extra.push(class);
        }
        let (grants, positions, live, peak) = self.run(&ADMISSION_HEARTBEAT, &extra).await?;
        Ok(Beat {
            grants,
            positions,
            live,
            peak,
        })
    }

    /// Queue depth per class, slots in use, live replicas.
    pub(crate) async fn stats(&self, classes: usize) -> Result<QueueStats, LimiterError> {
        let r: Vec<i64> = self.run(&ADMISSION_STATS, &[]).await?;
        if r.len() != classes + 2 {
            return Err(LimiterError::Protocol {
                script: ADMISSION_STATS.name(),
                detail: format!("expected {} integers, got {}", classes + 2, r.len()),
            });
        }
        let u = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(QueueStats {
            queued: r[..classes].iter().map(|v| u(*v)).collect(),
            in_use: u(r[classes]),
            live_replicas: u(r[classes + 1]),
        })
    }

    /// Empties the queue; returns how many waited.
    pub(crate) async fn reset(&self) -> Result<u64, LimiterError> {
        let n: i64 = self.run(&ADMISSION_RESET, &[]).await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Removes the leases of dead replicas; returns how many.
    pub(crate) async fn reclaim(&self) -> Result<u64, LimiterError> {
        let n: i64 = self.run(&ADMISSION_RECLAIM, &[]).await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Registers running permits (lease id, user key) without a cap check; returns their expiry.
    pub(crate) async fn adopt_all(&self, pairs: &[(&str, &str)]) -> Result<i64, LimiterError> {
        let mut extra: Vec<&str> = vec!["all"];
        for (id, user_key) in pairs {
            extra.push(id);
            extra.push(user_key);
        }
        let reply: Vec<i64> = self.run(&ADMISSION_ADOPT, &extra).await?;
        Ok(reply.first().copied().unwrap_or(0))
    }

    /// Registers one permit if the shared caps have room; `Some(expiry)` if registered.
    pub(crate) async fn adopt_checked(
        &self,
        id: &str,
        user_key: &str,
    ) -> Result<Option<i64>, LimiterError> {
        let reply: Vec<i64> = self
            .run(&ADMISSION_ADOPT, &["checked", id, user_key])
            .await?;
        let [expiry, adopted] = ints::<2>(ADMISSION_ADOPT.name(), reply)?;
        Ok((adopted == 1).then_some(expiry))
    }

    /// The self-renewing guard of an admission lease. It keeps renewing after a loss: a recovery
    /// from a Redis outage may register the permit again while it runs. `sent`: when the call
    /// that set `expiry` (one lease TTL after it ran) was sent.
    pub(crate) fn lease(
        &self,
        id: String,
        user_key: &str,
        expiry: i64,
        fence: i64,
        sent: Instant,
    ) -> Lease {
        let ops = LeaseOps {
            renew: ScriptCall {
                script: &ADMISSION_RENEW,
                head: Arc::clone(&self.head),
                tail: vec![id.clone(), user_key.to_string()],
            },
            release: Release::Batch(Arc::clone(&self.releases), user_key.to_string()),
            renew_after_loss: true,
        };
        let until = crate::lease::counted_until(sent, self.lease_ttl);
        Lease::start(
            Some(&self.keeper),
            self.redis.clone(),
            id,
            ops,
            self.lease_ttl,
            expiry,
            fence,
            until,
        )
    }

    /// Takes this replica out of the registry (at shutdown).
    pub(crate) async fn leave_registry(&self) -> Result<(), LimiterError> {
        let zrem = redis::cmd("ZREM")
            .arg(format!("{}:replicas", self.tag))
            .arg(&self.replica)
            .clone();
        let _: i64 = self.redis.cmd(&zrem).await?;
        Ok(())
    }
}

/// How a batch's requests become a script's arguments after ARGV[1..6].
type Shape<const W: usize> = fn(Vec<[String; W]>, &mut Vec<String>);

/// Each request's arguments, in order.
fn every_argument<const W: usize>(requests: Vec<[String; W]>, args: &mut Vec<String>) {
    args.extend(requests.into_iter().flatten());
}

/// `admission_enter` of a queue without per-user limits: the replica and the queue limit once,
/// then id and class per request (no user key or per-user limit; the budget is in the id).
fn without_user_arguments(requests: Vec<Entry>, args: &mut Vec<String>) {
    if let Some([_, _, replica, _, max_queue, ..]) = requests.first() {
        args.extend([replica.clone(), max_queue.clone()]);
    }
    for [id, _, _, class, ..] in requests {
        args.extend([id, class]);
    }
}

/// One call of an admission script for a batch of requests: ARGV[1..6] with the caps in force,
/// then the requests' arguments as `shape` lays them out; the reply holds `ints` integers per
/// request, which `decode` turns into that request's answer.
fn script_batch<const W: usize, R: Send + 'static>(
    redis: &RedisHandle,
    head: &Arc<CallHead>,
    script: &'static LuaScript,
    shape: Shape<W>,
    ints: usize,
    decode: fn(&'static str, &[i64]) -> Result<R, LimiterError>,
) -> BatchFn<[String; W], R> {
    let (redis, head) = (redis.clone(), Arc::clone(head));
    Arc::new(move |requests: Vec<[String; W]>| {
        let redis = redis.clone();
        let head = Arc::clone(&head);
        let mut args = head.args_now().into_owned();
        Box::pin(async move {
            let n = requests.len();
            shape(requests, &mut args);
            let argv: Vec<&dyn ToRedisArgsDyn> =
                args.iter().map(|a| a as &dyn ToRedisArgsDyn).collect();
            let reply: Vec<i64> = redis.eval(script, &[head.keys[0].as_str()], &argv).await?;
            let name = script.name();
            if reply.len() != ints * n {
                return Err(LimiterError::Protocol {
                    script: name,
                    detail: format!("expected {} integers, got {}", ints * n, reply.len()),
                });
            }
            reply.chunks_exact(ints).map(|r| decode(name, r)).collect()
        })
    })
}

/// One request's three integers of an `admission_enter` reply.
fn entered(name: &'static str, r: &[i64]) -> Result<Entered, LimiterError> {
    Ok(match *r {
        [1, expiry, fence] => Entered::Granted { expiry, fence },
        [0, position, at_ms] => Entered::Queued {
            position: u32::try_from(position).unwrap_or(u32::MAX),
            at_ms,
        },
        [-1, ..] => Entered::Full,
        [-2, ..] => Entered::UserFull,
        [-3, ..] => Entered::Withdrawn,
        _ => {
            return Err(LimiterError::Protocol {
                script: name,
                detail: format!("unexpected reply {r:?}"),
            });
        }
    })
}
