//! [`AdmissionConfig`]: the caps, queue limits, classes and timings of one admission queue.

use std::time::Duration;

use super::class::Classes;
use crate::LimiterError;

/// What a replica does while Redis is unreachable, past the time its slots stay counted there.
///
/// A replica cannot tell a Redis that is down for everyone from one that only it cannot reach
/// (a partition): in the second case the other replicas go on admitting by Redis's counts, which
/// forget this replica's slots once their leases expire unrenewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutagePolicy {
    /// Admit locally only into the slots Redis counts for this replica (a local grant takes the
    /// room of one of its requests that ended, of the same user, whose lease is left to expire),
    /// and only while those leases are surely still counted in Redis (two thirds of the lease
    /// TTL after the last heartbeat that reached it, less a tenth of the TTL for clock drift);
    /// after that refuse with [`crate::Rejection::OutageTooLong`] until Redis answers. The
    /// global and per-user caps hold through partitions; a replica of an idle fleet admits
    /// nothing locally, and a whole-Redis outage longer than that refuses everything.
    #[default]
    Safety,
    /// Admit on the local limit for as long as the outage lasts. Serves through any outage; a
    /// replica cut off from Redis for longer than the lease TTL runs beside a fleet that has
    /// handed its slots on, over the cap.
    Availability,
}

/// Limits and timings of the queue. Every replica of a fleet must use the same values.
///
/// ```
/// use std::time::Duration;
/// use limiter_core::AdmissionConfig;
///
/// let cfg = AdmissionConfig {
///     classes: vec!["interactive".into(), "batch".into()],
///     user_cap: 2,
///     global_cap: 20,
///     lease_ttl: Duration::from_secs(15),
///     ..AdmissionConfig::default()
/// };
/// assert_eq!(cfg.classes().unwrap().len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Lease group: every key of the queue shares this hash tag (one queue per protected service).
    pub group: String,
    /// Priority classes by name, highest first: a waiter of a class is served before every waiter
    /// of the classes after it. At least one, at most [`crate::MAX_CLASSES`].
    pub classes: Vec<String>,
    /// Slots one user may hold at once. 0, with `max_queued_per_user` 0 too: no per-user limits
    /// (a queue for the whole fleet only, strict priority and FIFO among all waiters, which costs
    /// Redis about half of what the per-user queue does). Fixed for a replica's life
    /// ([`crate::Admission::set_caps`] keeps it): replicas that disagree keep separate waiters
    /// under the one global cap.
    pub user_cap: u32,
    /// Slots the whole fleet may hold at once.
    pub global_cap: u32,
    /// Lease lifetime without renewal (a dead replica's slots return after this).
    pub lease_ttl: Duration,
    /// Waiters allowed in the queue, all classes and users together; beyond it,
    /// [`crate::Rejection::Full`] at once.
    pub max_queue: u32,
    /// Waiters one user may have in the queue, all classes together; beyond it,
    /// [`crate::Rejection::UserQueueFull`] at once, so one user cannot fill the queue for all.
    /// 0 only together with `user_cap` 0 (no per-user limits).
    pub max_queued_per_user: u32,
    /// A replica silent for this long is dead: its waiters are dropped.
    pub heartbeat_ttl: Duration,
    /// While Redis is unreachable, admit locally within this replica's share of the caps
    /// (`max(1, cap / live replicas)`); if false, refuse with `Unavailable` instead.
    pub local_fallback: bool,
    /// Fleet size assumed for the local share when Redis was never reached.
    pub expected_replicas: u32,
    /// Local admission past the time this replica's slots stay counted in Redis.
    pub outage_policy: OutagePolicy,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            group: "adm".into(),
            classes: vec!["default".into()],
            user_cap: 2,
            global_cap: 20,
            lease_ttl: Duration::from_secs(15),
            max_queue: 500,
            max_queued_per_user: 10,
            heartbeat_ttl: Duration::from_secs(3),
            local_fallback: true,
            expected_replicas: 3,
            outage_policy: OutagePolicy::Safety,
        }
    }
}

impl AdmissionConfig {
    /// The classes, checked (see [`Classes::new`]).
    pub fn classes(&self) -> Result<Classes, LimiterError> {
        Classes::new(self.classes.iter().cloned())
    }

    /// Whether the queue has no per-user limits (`user_cap` and `max_queued_per_user` both 0).
    pub fn per_user(&self) -> bool {
        self.user_cap != 0
    }

    /// Checks every value; returns the classes. Refused: a zero global cap or queue limit, only
    /// one of the per-user limits 0, a lease or heartbeat TTL under 30 ms, bad class names.
    pub fn validate(&self) -> Result<Classes, LimiterError> {
        if self.global_cap == 0 {
            return Err(LimiterError::InvalidArgument(
                "admission caps must be positive".into(),
            ));
        }
        if (self.user_cap == 0) != (self.max_queued_per_user == 0) {
            return Err(LimiterError::InvalidArgument(
                "user cap and max queued per user are both 0 (no per-user limits) or both positive"
                    .into(),
            ));
        }
        if self.lease_ttl < Duration::from_millis(30)
            || self.heartbeat_ttl < Duration::from_millis(30)
        {
            return Err(LimiterError::InvalidArgument(
                "admission ttls must be at least 30 ms".into(),
            ));
        }
        self.classes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_are_refused() {
        let ok = AdmissionConfig::default();
        assert!(ok.validate().is_ok());
        for bad in [
            AdmissionConfig {
                user_cap: 0,
                ..ok.clone()
            },
            AdmissionConfig {
                max_queued_per_user: 0,
                ..ok.clone()
            },
            AdmissionConfig {
                global_cap: 0,
                user_cap: 0,
                max_queued_per_user: 0,
                ..ok.clone()
            },
            AdmissionConfig {
                heartbeat_ttl: Duration::from_millis(29),
                ..ok.clone()
            },
            AdmissionConfig {
                classes: vec![],
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        let flat = AdmissionConfig {
            user_cap: 0,
            max_queued_per_user: 0,
            ..ok
        };
        assert!(flat.validate().is_ok() && !flat.per_user());
    }
}
