//! Per-client sliding windows (layer 1): at most `limit` admissions in any `window`.
//!
//! Two algorithms behind one type:
//! - [`WindowAlgorithm::Exact`], a log of admission times (`lua/sliding_window.lua`): exact for any
//!   window position, memory `limit` integers per client; used up to 1000.
//! - [`WindowAlgorithm::Counter`], two fixed buckets weighted by overlap
//!   (`lua/sliding_window_counter.lua`): O(1) memory per client, approximate; for larger limits.
//!
//! Denied calls are never recorded, so a client hammering a closed window does not push its own
//! reset further away.
//!
//! Concurrent exact-log checks of one window in one process are coalesced (`coalesce.rs`): while
//! a call is on the wire, the next ones go together as one script call, each with its own exact
//! decision. On Redis Cluster each client's key lives in its own slot, so every call goes alone.

use std::sync::Arc;
use std::time::Duration;

use crate::coalesce::{BatchFn, Coalescer};
use crate::reply::{ints, millis};
use crate::scripts::{LuaScript, SLIDING_WINDOW, SLIDING_WINDOW_COUNTER};
use crate::{LimiterError, RedisHandle};

/// Largest limit the exact log accepts (its memory and cleanup are proportional to the limit).
pub const MAX_EXACT_LIMIT: u32 = 1000;

/// Which algorithm a window uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowAlgorithm {
    /// Exact log of admission times.
    Exact,
    /// Weighted two-bucket counter.
    Counter,
}

/// One policy: a name (a route class such as `search`), a limit and a window.
#[derive(Debug, Clone)]
pub struct WindowPolicy {
    /// Policy name; part of the key and of the `RateLimit-Policy` header.
    pub name: String,
    /// Admissions allowed per window.
    pub limit: u32,
    /// Window length.
    pub window: Duration,
    /// Algorithm (see [`WindowPolicy::new`] for the default choice).
    pub algorithm: WindowAlgorithm,
}

impl WindowPolicy {
    /// A policy using the exact log when `limit <= 1000`, the counter otherwise.
    pub fn new(name: impl Into<String>, limit: u32, window: Duration) -> Self {
        let algorithm = if limit <= MAX_EXACT_LIMIT {
            WindowAlgorithm::Exact
        } else {
            WindowAlgorithm::Counter
        };
        WindowPolicy {
            name: name.into(),
            limit,
            window,
            algorithm,
        }
    }

    /// Chooses the algorithm explicitly.
    pub fn with_algorithm(mut self, algorithm: WindowAlgorithm) -> Self {
        self.algorithm = algorithm;
        self
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowDecision {
    /// Whether this call was admitted (and recorded).
    pub allowed: bool,
    /// The policy's limit (for headers).
    pub limit: u32,
    /// Calls that would still be admitted right now.
    pub remaining: u32,
    /// Zero if another call would be admitted now; else how long until one would be.
    pub retry_after: Duration,
    /// Until the oldest admission in the window leaves it (the `t` of the `RateLimit` header).
    pub reset: Duration,
    /// Redis time of the decision, ms since the Unix epoch.
    pub at_ms: i64,
}

/// A sliding window bound to a Redis handle.
///
/// ```no_run
/// use std::time::Duration;
/// use limiter_core::{RedisConfig, RedisHandle, SlidingWindow, WindowPolicy};
///
/// # async fn run() -> Result<(), limiter_core::LimiterError> {
/// let redis = RedisHandle::new(&RedisConfig::default())?;
/// let window = SlidingWindow::new(
///     redis,
///     WindowPolicy::new("search", 10, Duration::from_secs(60)),
/// )?;
/// let decision = window.check(b"203.0.113.7").await?;
/// if !decision.allowed {
///     println!("429, retry in {:?}", decision.retry_after);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SlidingWindow {
    redis: RedisHandle,
    policy: WindowPolicy,
    window_ms: u64,
    /// Coalesces concurrent exact-log checks (`None`: each call goes alone).
    batch: Option<Arc<Coalescer<String, WindowDecision>>>,
}

/// Batches on the wire at once per window: one more overlaps Redis's work with a reply's travel.
const MAX_IN_FLIGHT: usize = 2;
/// Decisions per script call (the script's own bound): a batch stays well under a millisecond
/// of Redis time, so other clients' calls are never held up long.
const MAX_BATCH: usize = 128;

impl SlidingWindow {
    /// Checks the policy's bounds up front so every call can go straight to Redis.
    pub fn new(redis: RedisHandle, policy: WindowPolicy) -> Result<Self, LimiterError> {
        let window_ms = u64::try_from(policy.window.as_millis()).unwrap_or(u64::MAX);
        if policy.limit == 0 || window_ms == 0 {
            return Err(LimiterError::InvalidArgument(format!(
                "window {:?}: limit and window must be positive",
                policy.name
            )));
        }
        if policy.algorithm == WindowAlgorithm::Exact && policy.limit > MAX_EXACT_LIMIT {
            return Err(LimiterError::InvalidArgument(format!(
                "window {:?}: the exact log supports limits up to {MAX_EXACT_LIMIT}",
                policy.name
            )));
        }
        let batch =
            (policy.algorithm == WindowAlgorithm::Exact && !redis.is_cluster()).then(|| {
                Arc::new(Coalescer::new(
                    exact_batch(&redis, &policy, window_ms),
                    MAX_IN_FLIGHT,
                    MAX_BATCH,
                ))
            });
        Ok(SlidingWindow {
            redis,
            policy,
            window_ms,
            batch,
        })
    }

    /// The policy.
    pub fn policy(&self) -> &WindowPolicy {
        &self.policy
    }

    fn script(&self) -> &'static LuaScript {
        match self.policy.algorithm {
            WindowAlgorithm::Exact => &SLIDING_WINDOW,
            WindowAlgorithm::Counter => &SLIDING_WINDOW_COUNTER,
        }
    }

    /// Admits and records one call for `client` (an IP, a user id: any bytes), or denies it.
    pub async fn check(&self, client: &[u8]) -> Result<WindowDecision, LimiterError> {
        let key = self.redis.keys().window(&self.policy.name, client);
        if let Some(batch) = &self.batch {
            return batch.call(key).await;
        }
        let script = self.script();
        let reply: Vec<i64> = self
            .redis
            .eval(script, &[&key], &[&self.policy.limit, &self.window_ms])
            .await?;
        let reply = ints::<5>(script.name(), reply)?;
        Ok(decision(self.policy.limit, reply))
    }
}

fn decision(
    limit: u32,
    [allowed, remaining, retry_after, reset, at_ms]: [i64; 5],
) -> WindowDecision {
    WindowDecision {
        allowed: allowed == 1,
        limit,
        remaining: u32::try_from(remaining.max(0)).unwrap_or(0),
        retry_after: millis(retry_after),
        reset: millis(reset),
        at_ms,
    }
}

/// One call of the exact log for many clients (its keys in order), five integers back per client.
fn exact_batch(
    redis: &RedisHandle,
    policy: &WindowPolicy,
    window_ms: u64,
) -> BatchFn<String, WindowDecision> {
    let (redis, limit) = (redis.clone(), policy.limit);
    Arc::new(move |keys: Vec<String>| {
        let redis = redis.clone();
        Box::pin(async move {
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            let reply: Vec<i64> = redis
                .eval(&SLIDING_WINDOW, &refs, &[&limit, &window_ms])
                .await?;
            if reply.len() != 5 * keys.len() {
                return Err(LimiterError::Protocol {
                    script: SLIDING_WINDOW.name(),
                    detail: format!("expected {} integers, got {}", 5 * keys.len(), reply.len()),
                });
            }
            Ok(reply
                .chunks_exact(5)
                .map(|c| decision(limit, [c[0], c[1], c[2], c[3], c[4]]))
                .collect())
        })
    })
}
