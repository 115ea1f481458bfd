//! The fleet view of the admin console. Health is answered by one replica, but an admin wants every
//! replica: so each replica publishes a small status record to Redis every heartbeat_ttl / 3 (its
//! admission mode, what it holds and waits for, who holds its slots), kept one heartbeat TTL
//! (`lua/fleet_status_publish.lua`); the admin health report lists the live records, at most
//! [`MAX_LISTED`] (`lua/fleet_status_read.lua`), and adds up the per-user slot counts of all of
//! them to find the users at their per-user cap. A replica that stops takes its record out
//! (`lua/fleet_status_leave.lua`); one that dies drops out when its record expires.
//!
//! A replica that cannot reach Redis cannot publish either: while Redis is down the view is
//! `null` and the console shows the answering replica's own admission only.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use limiter_core::scripts::LuaScript;
use limiter_core::{LimiterError, RedisHandle};
use tokio::task::JoinHandle;

use crate::admin::fleet_view::{FleetView, ReplicaRecord, ReplicaView};
use crate::admin::slot_holders::Holder;
use crate::state::AppState;

static PUBLISH: LuaScript = LuaScript::new(
    "fleet_status_publish",
    include_str!("../../../../lua/fleet_status_publish.lua"),
);
static READ: LuaScript = LuaScript::new(
    "fleet_status_read",
    include_str!("../../../../lua/fleet_status_read.lua"),
);
static LEAVE: LuaScript = LuaScript::new(
    "fleet_status_leave",
    include_str!("../../../../lua/fleet_status_leave.lua"),
);

/// Most records the fleet view lists (the rest are counted in `liveReplicas`; the field docs
/// repeat the number for the OpenAPI document).
pub const MAX_LISTED: usize = 64;
/// Most records kept in Redis at once: a runaway fleet cannot grow the keys without bound.
pub const MAX_KEPT: usize = 1024;
/// Most holders one record names.
pub const MAX_HOLDERS: usize = 50;

/// Where the records live: `{prefix}:{fleet-status}:live` and `...:records`, one hash tag so the
/// scripts run unchanged on Redis Cluster.
fn keys(redis: &RedisHandle) -> [String; 2] {
    let k = redis.keys();
    [
        k.group_key("fleet-status", "live"),
        k.group_key("fleet-status", "records"),
    ]
}

fn ttl(state: &AppState) -> Duration {
    Duration::from_millis(state.config().admission.heartbeat_ttl_ms)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(millis).unwrap_or(0)
}

/// This replica's record now.
pub fn record(state: &AppState, listen: SocketAddr, started: SystemTime) -> ReplicaRecord {
    let local = state.gate().local();
    let (holders, holders_truncated) = state.slot_holders().snapshot(MAX_HOLDERS);
    ReplicaRecord {
        replica: state.gate().replica_id().to_string(),
        listen: listen.to_string(),
        mode: local.mode,
        draining: state.is_shutting_down(),
        known_replicas: local.known_replicas,
        local_share: local.local_share,
        // Granted slots only (the gate's outstanding count includes requests still waiting).
        slots_held: state.slot_holders().total(),
        local_slots_in_use: local.local_slots_in_use,
        local_waiters: local.local_waiters,
        holders,
        holders_truncated,
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at_ms: unix_ms(started),
    }
}

/// Publishes `record` for `ttl`; returns whether it was kept (false: `max_kept` other records
/// already are).
pub async fn publish(
    redis: &RedisHandle,
    record: &ReplicaRecord,
    ttl: Duration,
    max_kept: usize,
) -> Result<bool, LimiterError> {
    let json = serde_json::to_string(record)
        .map_err(|e| LimiterError::InvalidArgument(format!("status record: {e}")))?;
    let [live, records] = keys(redis);
    let (kept, _live): (u8, u64) = redis
        .eval(
            &PUBLISH,
            &[&live, &records],
            &[&record.replica, &json, &millis(ttl).max(1), &max_kept],
        )
        .await?;
    Ok(kept == 1)
}

/// Takes the record of `replica` out of the view.
pub async fn leave(redis: &RedisHandle, replica: &str) -> Result<(), LimiterError> {
    let [live, records] = keys(redis);
    let _: u8 = redis.eval(&LEAVE, &[&live, &records], &[&replica]).await?;
    Ok(())
}

/// The live records (at most `limit`, ordered by replica id) and how many are live in all.
pub async fn live_records(
    redis: &RedisHandle,
    limit: usize,
) -> Result<(Vec<ReplicaView>, u64), LimiterError> {
    let [live, records] = keys(redis);
    let reply: Vec<redis::Value> = redis
        .eval(&READ, &[&live, &records], &[&limit.max(1)])
        .await?;
    let int = |v: Option<&redis::Value>| -> u64 {
        match v {
            Some(redis::Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
            _ => 0,
        }
    };
    let now = int(reply.first());
    let total = int(reply.get(1));
    let mut replicas = Vec::new();
    for entry in reply.get(2..).unwrap_or_default().chunks(3) {
        let [_, expiry, redis::Value::BulkString(json)] = entry else {
            continue;
        };
        // A record this version cannot read (another version mid-upgrade) is left out, not fatal.
        let Ok(record) = serde_json::from_slice::<ReplicaRecord>(json) else {
            continue;
        };
        replicas.push(ReplicaView {
            record,
            expires_in_ms: int(Some(expiry)).saturating_sub(now),
        });
    }
    replicas.sort_by(|a, b| a.record.replica.cmp(&b.record.replica));
    Ok((replicas, total))
}

/// The fleet view of the admin health report.
pub async fn read(state: &AppState) -> Result<FleetView, LimiterError> {
    let (replicas, total) = live_records(state.redis(), MAX_LISTED).await?;
    let user_cap = state.config().admission.max_concurrent_per_user;
    let users_at_cap = users_at_cap(&replicas, user_cap);
    Ok(FleetView {
        answered_by: state.gate().replica_id().to_string(),
        live_replicas: total,
        truncated: usize::try_from(total).unwrap_or(usize::MAX) > replicas.len(),
        replicas,
        record_ttl_ms: millis(ttl(state)),
        user_cap,
        users_at_cap,
    })
}

/// Users whose slots over all `replicas` add up to `user_cap` or more, most slots first.
pub fn users_at_cap(replicas: &[ReplicaView], user_cap: u32) -> Vec<Holder> {
    let mut totals = std::collections::BTreeMap::<&str, u32>::new();
    for r in replicas {
        for h in &r.record.holders {
            *totals.entry(h.user.as_str()).or_insert(0) += h.slots;
        }
    }
    let mut at_cap: Vec<Holder> = totals
        .into_iter()
        .filter(|&(_, slots)| slots >= user_cap.max(1))
        .map(|(user, slots)| Holder {
            user: user.to_string(),
            slots,
        })
        .collect();
    at_cap.sort_by(|a, b| b.slots.cmp(&a.slots).then_with(|| a.user.cmp(&b.user)));
    at_cap
}

/// Publishes this replica's record every heartbeat_ttl / 3 until dropped.
#[derive(Debug)]
pub struct Publisher {
    task: JoinHandle<()>,
}

impl Publisher {
    /// Starts publishing for the replica serving `state` on `listen`.
    pub fn spawn(state: AppState, listen: SocketAddr) -> Publisher {
        let started = SystemTime::now();
        let period = (ttl(&state) / 3).max(Duration::from_millis(10));
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tick.tick().await;
                let r = record(&state, listen, started);
                match publish(state.redis(), &r, ttl(&state), MAX_KEPT).await {
                    Ok(true) => failing = false,
                    Ok(false) => {
                        if !failing {
                            tracing::warn!(
                                max = MAX_KEPT,
                                "fleet view full: this replica is not listed"
                            );
                        }
                        failing = true;
                    }
                    Err(e) => {
                        // Redis down is reported by health already; say it once, not every tick.
                        if !failing {
                            tracing::debug!(error = %e, "status record not published");
                        }
                        failing = true;
                    }
                }
            }
        });
        Publisher { task }
    }

    /// Stops publishing and takes the record out of the view.
    pub async fn stop(mut self, state: &AppState) {
        self.task.abort();
        let _ = (&mut self.task).await;
        let gone = leave(state.redis(), state.gate().replica_id());
        if let Err(e) = tokio::time::timeout(Duration::from_secs(1), gone)
            .await
            .unwrap_or(Err(LimiterError::InvalidArgument("timed out".into())))
        {
            tracing::debug!(error = %e, "status record not removed; it expires by itself");
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rec(replica: &str, holders: &[(&str, u32)]) -> ReplicaRecord {
        ReplicaRecord {
            replica: replica.into(),
            listen: "127.0.0.1:1".into(),
            mode: "shared".into(),
            draining: false,
            known_replicas: 2,
            local_share: 10,
            slots_held: 0,
            local_slots_in_use: 0,
            local_waiters: 0,
            holders: holders
                .iter()
                .map(|(u, n)| Holder {
                    user: (*u).into(),
                    slots: *n,
                })
                .collect(),
            holders_truncated: false,
            version: "0".into(),
            started_at_ms: 0,
        }
    }

    fn view(replica: &str, holders: &[(&str, u32)]) -> ReplicaView {
        ReplicaView {
            record: rec(replica, holders),
            expires_in_ms: 1000,
        }
    }

    fn redis() -> RedisHandle {
        RedisHandle::new(&limiter_core::RedisConfig {
            url: testkit::redis_url(),
            prefix: testkit::unique_prefix("fleet-status"),
            ..limiter_core::RedisConfig::default()
        })
        .unwrap()
    }

    /// Records are listed while fresh, leave on request, and expire by themselves (a replica that
    /// died): the view never lists a replica that stopped publishing.
    #[tokio::test]
    async fn records_are_listed_then_leave_or_expire() {
        let r = redis();
        let ttl = Duration::from_millis(300);
        assert!(publish(&r, &rec("b", &[("u1", 1)]), ttl, 10).await.unwrap());
        assert!(
            publish(&r, &rec("a", &[]), Duration::from_secs(30), 10)
                .await
                .unwrap()
        );
        let (list, total) = live_records(&r, 10).await.unwrap();
        assert_eq!(total, 2);
        let ids: Vec<_> = list.iter().map(|v| v.record.replica.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(list[1].record.holders[0].user, "u1");
        assert!(list[1].expires_in_ms <= 300);

        leave(&r, "a").await.unwrap();
        // "b" expires; nothing renews it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (list, total) = live_records(&r, 10).await.unwrap();
            if list.is_empty() && total == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never expired: {list:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The keys themselves go with the last record.
        let [live, records] = keys(&r);
        let exists: u32 = r
            .cmd(redis::cmd("EXISTS").arg(&live).arg(&records))
            .await
            .unwrap();
        assert_eq!(exists, 0, "keys left behind");
    }

    /// The set is bounded: a new replica beyond the cap is refused (a known one is renewed), and
    /// a read lists at most its limit while counting them all.
    #[tokio::test]
    async fn the_view_is_bounded() {
        let r = redis();
        let ttl = Duration::from_secs(30);
        for id in ["a", "b", "c"] {
            assert!(publish(&r, &rec(id, &[]), ttl, 3).await.unwrap());
        }
        assert!(!publish(&r, &rec("d", &[]), ttl, 3).await.unwrap());
        assert!(publish(&r, &rec("b", &[("u", 2)]), ttl, 3).await.unwrap());
        let (list, total) = live_records(&r, 2).await.unwrap();
        assert_eq!((list.len(), total), (2, 3));
        for id in ["a", "b", "c"] {
            leave(&r, id).await.unwrap();
        }
    }

    #[test]
    fn a_user_at_cap_across_replicas_is_found() {
        let rs = [
            view("a", &[("u1", 1), ("u2", 2)]),
            view("b", &[("u1", 1), ("u3", 1)]),
        ];
        let at = users_at_cap(&rs, 2);
        let names: Vec<_> = at.iter().map(|h| h.user.as_str()).collect();
        assert_eq!(names, ["u1", "u2"]);
        assert!(users_at_cap(&rs, 3).is_empty());
    }
}
