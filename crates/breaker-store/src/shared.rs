//! The shared breaker: typed calls of the `breaker_*` scripts for one service, and their replies.

use std::time::Duration;

use limiter_core::{Keys, LimiterError, RedisHandle};

use crate::policy::{BreakerPolicy, millis};
use crate::scripts::{ADMIN, PERMIT, READ, RECORD};
use crate::state::{BreakerState, Observed};

/// What one record adds to the window: `count` calls that ended alike (a failure is always one;
/// several successes come from a replica's tally).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ended {
    pub(crate) failure: bool,
    pub(crate) count: u64,
}

/// The keys of one service's breaker; all share the hash tag `{breaker.<service>}`.
#[derive(Debug, Clone)]
pub(crate) struct SharedBreaker {
    service: String,
    /// Hash: st, generation, until, trips, ok, at, why.
    state: String,
    /// Hash of window buckets: `c<bucket>` calls, `f<bucket>` failures.
    window: String,
    /// Sorted set of probe permits, scored by expiry.
    probes: String,
    channel: String,
}

/// A permit decision from Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SharedVerdict {
    Refused(Duration),
    Go,
    Probe,
    Busy(Duration),
}

/// A full read, for caches and snapshots.
#[derive(Debug, Clone)]
pub(crate) struct SharedRead {
    pub(crate) observed: Observed,
    pub(crate) failures: u64,
    pub(crate) calls: u64,
    pub(crate) trips: u32,
    pub(crate) changed_at_ms: i64,
    pub(crate) reason: String,
    pub(crate) live_probes: u32,
}

/// Which admin action to run.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AdminAction {
    Close,
    Open(Duration),
    Reset,
}

/// The pub/sub channel every transition is published on.
pub(crate) fn channel(keys: &Keys) -> String {
    format!("{}:breaker", keys.prefix())
}

impl SharedBreaker {
    pub(crate) fn new(keys: &Keys, service: &str) -> Self {
        let group = format!("breaker.{service}");
        SharedBreaker {
            service: service.to_string(),
            state: keys.group_key(&group, "state"),
            window: keys.group_key(&group, "win"),
            probes: keys.group_key(&group, "probes"),
            channel: channel(keys),
        }
    }

    pub(crate) async fn permit(
        &self,
        redis: &RedisHandle,
        probe_id: &str,
        probe_ttl: Duration,
        probe_permits: u32,
        state_ttl: Duration,
    ) -> Result<(SharedVerdict, Observed), LimiterError> {
        let reply: Vec<i64> = redis
            .eval_with(&PERMIT, &[&self.state, &self.probes], |c| {
                c.arg(&self.channel)
                    .arg(&self.service)
                    .arg(probe_id)
                    .arg(millis(probe_ttl).max(1))
                    .arg(probe_permits)
                    .arg(millis(state_ttl).max(1));
            })
            .await?;
        let [verdict, st, generation, until, now, retry] = ints::<6>(PERMIT.name(), reply)?;
        let observed = observed(PERMIT.name(), st, generation, until, now)?;
        let retry = Duration::from_millis(retry.max(1) as u64);
        let verdict = match verdict {
            0 => SharedVerdict::Refused(retry),
            1 => SharedVerdict::Go,
            2 => SharedVerdict::Probe,
            3 => SharedVerdict::Busy(retry),
            v => return Err(protocol(PERMIT.name(), format!("verdict {v}"))),
        };
        Ok((verdict, observed))
    }

    /// Records one outcome; returns the breaker after it and the window's (failures, calls).
    /// Records `ended` (see [`Ended`]) and applies the transitions it causes.
    pub(crate) async fn record(
        &self,
        redis: &RedisHandle,
        policy: &BreakerPolicy,
        ended: Ended,
        probe_id: Option<&str>,
        rnd: f64,
        state_ttl: Duration,
    ) -> Result<(Observed, u64, u64), LimiterError> {
        let rnd_permille = ((rnd * 1000.0) as u64).min(999);
        let reply: Vec<i64> = redis
            .eval_with(&RECORD, &[&self.state, &self.window, &self.probes], |c| {
                c.arg(&self.channel)
                    .arg(&self.service)
                    .arg(u8::from(ended.failure))
                    .arg(probe_id.unwrap_or(""))
                    .arg(policy.window_ms())
                    .arg(policy.bucket_ms())
                    .arg(policy.failure_threshold)
                    .arg(policy.ratio_permille())
                    .arg(policy.min_calls)
                    .arg(millis(policy.open).max(1))
                    .arg(millis(policy.open_max).max(1))
                    .arg(policy.jitter_permille())
                    .arg(rnd_permille)
                    .arg(policy.success_threshold)
                    .arg(millis(state_ttl).max(1))
                    .arg(ended.count.max(1));
            })
            .await?;
        let [st, generation, until, now, fails, calls] = ints::<6>(RECORD.name(), reply)?;
        let observed = observed(RECORD.name(), st, generation, until, now)?;
        Ok((observed, fails.max(0) as u64, calls.max(0) as u64))
    }

    pub(crate) async fn admin(
        &self,
        redis: &RedisHandle,
        action: AdminAction,
        state_ttl: Duration,
    ) -> Result<Observed, LimiterError> {
        let (verb, hold) = match action {
            AdminAction::Close => ("close", 1),
            AdminAction::Open(hold) => ("open", millis(hold).max(1)),
            AdminAction::Reset => ("reset", 1),
        };
        let reply: Vec<i64> = redis
            .eval_with(&ADMIN, &[&self.state, &self.window, &self.probes], |c| {
                c.arg(&self.channel)
                    .arg(&self.service)
                    .arg(verb)
                    .arg(hold)
                    .arg(millis(state_ttl).max(1));
            })
            .await?;
        let [st, generation, until, now] = ints::<4>(ADMIN.name(), reply)?;
        observed(ADMIN.name(), st, generation, until, now)
    }

    pub(crate) async fn read(
        &self,
        redis: &RedisHandle,
        policy: &BreakerPolicy,
    ) -> Result<SharedRead, LimiterError> {
        type Reply = (i64, i64, i64, i64, i64, i64, i64, i64, String, i64);
        let (st, generation, until, now, fails, calls, trips, at, why, probes): Reply = redis
            .eval_with(&READ, &[&self.state, &self.window, &self.probes], |c| {
                c.arg(policy.window_ms()).arg(policy.bucket_ms());
            })
            .await?;
        Ok(SharedRead {
            observed: observed(READ.name(), st, generation, until, now)?,
            failures: fails.max(0) as u64,
            calls: calls.max(0) as u64,
            trips: u32::try_from(trips.max(0)).unwrap_or(u32::MAX),
            changed_at_ms: at,
            reason: why,
            live_probes: u32::try_from(probes.max(0)).unwrap_or(u32::MAX),
        })
    }
}

fn observed(
    script: &'static str,
    st: i64,
    generation: i64,
    open_until_ms: i64,
    now_ms: i64,
) -> Result<Observed, LimiterError> {
    let state =
        BreakerState::from_code(st).ok_or_else(|| protocol(script, format!("state {st}")))?;
    Ok(Observed {
        state,
        generation,
        open_until_ms,
        now_ms,
    })
}

fn ints<const N: usize>(script: &'static str, reply: Vec<i64>) -> Result<[i64; N], LimiterError> {
    let len = reply.len();
    <[i64; N]>::try_from(reply)
        .map_err(|_| protocol(script, format!("expected {N} integers, got {len}")))
}

fn protocol(script: &'static str, detail: String) -> LimiterError {
    LimiterError::Protocol { script, detail }
}
