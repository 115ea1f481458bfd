//! The local fallback breaker: the same state machine as the Lua scripts, in this process's
//! memory, used while Redis is unreachable (degraded mode). It follows the same [`BreakerPolicy`]
//! so a replica cut off from Redis still stops calling a failing upstream by itself.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::policy::BreakerPolicy;
use crate::state::BreakerState;

/// What the local breaker says to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LocalVerdict {
    /// CLOSED: go.
    Go,
    /// HALF_OPEN: go as a probe holding this permit id.
    Probe(u64),
    /// OPEN: refused for this long.
    Open(Duration),
    /// HALF_OPEN with every probe permit taken: refused for this long.
    Busy(Duration),
}

/// A breaker in memory. Window buckets and probes are bounded like their Redis counterparts.
#[derive(Debug)]
pub(crate) struct LocalBreaker {
    pub(crate) state: BreakerState,
    pub(crate) open_until: Instant,
    /// Consecutive trips, for the exponential open period.
    trips: u32,
    /// Probe successes while HALF_OPEN.
    ok: u32,
    /// Last transition and its reason.
    pub(crate) changed_at: Instant,
    pub(crate) reason: &'static str,
    /// (bucket index, calls, failures), oldest first; bucket index counts from `origin`.
    buckets: VecDeque<(u64, u64, u64)>,
    origin: Instant,
    /// Live probe permits: (id, expiry). Never more than `probe_permits`.
    probes: Vec<(u64, Instant)>,
    next_probe: u64,
}

impl LocalBreaker {
    pub(crate) fn new(now: Instant) -> Self {
        LocalBreaker {
            state: BreakerState::Closed,
            open_until: now,
            trips: 0,
            ok: 0,
            changed_at: now,
            reason: "start",
            buckets: VecDeque::new(),
            origin: now,
            probes: Vec::new(),
            next_probe: 0,
        }
    }

    /// Starts from what the shared breaker last said (entering degraded mode): an OPEN breaker stays
    /// open until its shared deadline; counts start empty.
    pub(crate) fn seed(&mut self, now: Instant, state: BreakerState, open_until: Option<Instant>) {
        *self = LocalBreaker::new(now);
        self.reason = "seeded";
        match state {
            BreakerState::Closed => {}
            BreakerState::Open | BreakerState::HalfOpen => {
                // HALF_OPEN is seeded as an expired OPEN: the next call turns it HALF_OPEN here.
                self.state = BreakerState::Open;
                self.open_until = open_until.unwrap_or(now);
            }
        }
    }

    pub(crate) fn permit(
        &mut self,
        policy: &BreakerPolicy,
        now: Instant,
        probe_ttl: Duration,
    ) -> LocalVerdict {
        match self.state {
            BreakerState::Closed => return LocalVerdict::Go,
            BreakerState::Open if now < self.open_until => {
                return LocalVerdict::Open(self.open_until - now);
            }
            BreakerState::Open => {
                self.transition(now, BreakerState::HalfOpen, "half_open");
                self.ok = 0;
                self.probes.clear();
            }
            BreakerState::HalfOpen => {}
        }
        self.probes.retain(|(_, exp)| *exp > now);
        if self.probes.len() < policy.probe_permits as usize {
            self.next_probe += 1;
            self.probes.push((self.next_probe, now + probe_ttl));
            return LocalVerdict::Probe(self.next_probe);
        }
        let soonest = self.probes.iter().map(|(_, e)| *e).min().unwrap_or(now);
        LocalVerdict::Busy(
            soonest
                .saturating_duration_since(now)
                .max(Duration::from_millis(1)),
        )
    }

    /// Records one outcome; `probe` is the permit id of a HALF_OPEN probe.
    pub(crate) fn record(
        &mut self,
        policy: &BreakerPolicy,
        now: Instant,
        failure: bool,
        probe: Option<u64>,
        rnd: f64,
    ) {
        match self.state {
            BreakerState::Closed => {
                let bucket_ms = policy.bucket_ms();
                let b = millis_since(self.origin, now) / bucket_ms;
                match self.buckets.back_mut() {
                    Some((idx, calls, fails)) if *idx == b => {
                        *calls += 1;
                        *fails += u64::from(failure);
                    }
                    _ => self.buckets.push_back((b, 1, u64::from(failure))),
                }
                let (fails, calls) = self.window(policy, now);
                if failure && policy.trips(fails, calls) {
                    self.trip(policy, now, "failures", rnd);
                }
            }
            BreakerState::HalfOpen => {
                let Some(id) = probe else { return };
                let Some(pos) = self.probes.iter().position(|(p, _)| *p == id) else {
                    return;
                };
                self.probes.swap_remove(pos);
                if failure {
                    self.trip(policy, now, "probe_failed", rnd);
                } else {
                    self.ok += 1;
                    if self.ok >= policy.success_threshold {
                        self.transition(now, BreakerState::Closed, "recovered");
                        self.ok = 0;
                        self.buckets.clear();
                        self.probes.clear();
                    }
                }
            }
            // Outcomes of calls let through before the trip change nothing.
            BreakerState::Open => {}
        }
    }

    /// (failures, calls) in the window, dropping stale buckets.
    pub(crate) fn window(&mut self, policy: &BreakerPolicy, now: Instant) -> (u64, u64) {
        let bucket_ms = policy.bucket_ms();
        let current = millis_since(self.origin, now) / bucket_ms;
        let span = policy.window_ms().div_ceil(bucket_ms);
        let oldest = (current + 1).saturating_sub(span);
        while self.buckets.front().is_some_and(|(b, _, _)| *b < oldest) {
            self.buckets.pop_front();
        }
        self.buckets
            .iter()
            .fold((0, 0), |(f, c), (_, calls, fails)| (f + fails, c + calls))
    }

    pub(crate) fn trips(&self) -> u32 {
        self.trips
    }

    pub(crate) fn live_probes(&self, now: Instant) -> usize {
        self.probes.iter().filter(|(_, e)| *e > now).count()
    }

    pub(crate) fn force(&mut self, now: Instant, open_for: Option<Duration>) {
        match open_for {
            Some(hold) => {
                self.transition(now, BreakerState::Open, "forced_open");
                self.open_until = now + hold;
            }
            None => {
                self.transition(now, BreakerState::Closed, "forced_close");
                self.trips = 0;
                self.buckets.clear();
            }
        }
        self.ok = 0;
        self.probes.clear();
    }

    pub(crate) fn reset_errors(&mut self) {
        self.buckets.clear();
        self.trips = 0;
    }

    fn trip(&mut self, policy: &BreakerPolicy, now: Instant, reason: &'static str, rnd: f64) {
        if self.state == BreakerState::Closed
            && now.duration_since(self.changed_at) >= policy.open_max
        {
            self.trips = 0;
        }
        let open = policy.open_for(self.trips, rnd);
        self.trips = self.trips.saturating_add(1);
        self.transition(now, BreakerState::Open, reason);
        self.open_until = now + open;
        self.ok = 0;
        self.probes.clear();
    }

    fn transition(&mut self, now: Instant, state: BreakerState, reason: &'static str) {
        self.state = state;
        self.changed_at = now;
        self.reason = reason;
    }
}

fn millis_since(origin: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(origin).as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            open: Duration::from_millis(100),
            open_max: Duration::from_millis(1000),
            open_jitter: 0.0,
            ..BreakerPolicy::default()
        }
    }

    #[test]
    fn trips_after_threshold_then_probes_then_closes() {
        let p = policy();
        let t0 = Instant::now();
        let mut b = LocalBreaker::new(t0);
        for _ in 0..4 {
            b.record(&p, t0, true, None, 0.5);
        }
        assert_eq!(b.state, BreakerState::Closed);
        b.record(&p, t0, true, None, 0.5);
        assert_eq!(b.state, BreakerState::Open);
        let ttl = Duration::from_secs(1);
        assert!(matches!(b.permit(&p, t0, ttl), LocalVerdict::Open(_)));
        let t1 = t0 + Duration::from_millis(100);
        let LocalVerdict::Probe(id) = b.permit(&p, t1, ttl) else {
            panic!("probe expected")
        };
        assert!(matches!(b.permit(&p, t1, ttl), LocalVerdict::Busy(_)));
        b.record(&p, t1, false, Some(id), 0.5);
        assert_eq!(b.state, BreakerState::Closed);
    }

    #[test]
    fn probe_failure_reopens_for_longer() {
        let p = policy();
        let t0 = Instant::now();
        let mut b = LocalBreaker::new(t0);
        for _ in 0..5 {
            b.record(&p, t0, true, None, 0.5);
        }
        let t1 = t0 + Duration::from_millis(100);
        let LocalVerdict::Probe(id) = b.permit(&p, t1, Duration::from_secs(1)) else {
            panic!("probe expected")
        };
        b.record(&p, t1, true, Some(id), 0.5);
        assert_eq!(b.state, BreakerState::Open);
        assert_eq!(b.open_until - t1, Duration::from_millis(200));
    }

    #[test]
    fn old_failures_leave_the_window() {
        let p = policy();
        let t0 = Instant::now();
        let mut b = LocalBreaker::new(t0);
        for _ in 0..4 {
            b.record(&p, t0, true, None, 0.5);
        }
        let later = t0 + Duration::from_secs(31);
        b.record(&p, later, true, None, 0.5);
        assert_eq!(b.state, BreakerState::Closed);
        assert_eq!(b.window(&p, later), (1, 1));
    }

    #[test]
    fn expired_probe_permits_are_reusable() {
        let p = policy();
        let t0 = Instant::now();
        let mut b = LocalBreaker::new(t0);
        b.seed(t0, BreakerState::Open, Some(t0));
        let ttl = Duration::from_millis(50);
        assert!(matches!(b.permit(&p, t0, ttl), LocalVerdict::Probe(_)));
        assert!(matches!(b.permit(&p, t0, ttl), LocalVerdict::Busy(_)));
        assert!(matches!(
            b.permit(&p, t0 + ttl, ttl),
            LocalVerdict::Probe(_)
        ));
    }
}
