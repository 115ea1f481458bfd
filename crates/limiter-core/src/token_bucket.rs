//! Outbound pacing (layer 4): a GCRA token bucket shared by the fleet (`lua/pacing_reserve.lua`).
//!
//! [`Pacer::reserve`] books the next free slot fleet-wide and says how long to wait for it, so
//! replicas calling an API limited to 3/s are spaced evenly instead of colliding and retrying. With burst 1
//! no two booked slots are closer than `1/rate`. [`Pacer::try_acquire`] is a reservation that must
//! start now.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::reply::{ints, millis};
use crate::scripts::PACING_RESERVE;
use crate::{LimiterError, RedisHandle};

/// Largest spacing guard added to every interval (it is 2% of the interval below 250 ms).
const CLOCK_GUARD_US: u64 = 5_000;

/// A booked slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// How long after Redis booked it the slot starts.
    pub wait: Duration,
    /// The slot's start on this process's clock (Redis time mapped by the smallest observed offset).
    pub start_at: Instant,
}

impl Reservation {
    /// Waits until the slot starts. The timer covers all but the last 3 ms; the rest is a plain
    /// thread sleep on the blocking pool. tokio's timer has 1 ms granularity, and a spinning task
    /// is preempted on a busy machine, while a sleeping thread is woken promptly by the kernel, so
    /// this keeps two replicas' slots from drifting closer than booked.
    pub async fn wait(&self) {
        let coarse = self.start_at.checked_sub(Duration::from_millis(3));
        if let Some(coarse) = coarse
            && coarse > Instant::now()
        {
            tokio::time::sleep_until(coarse).await;
        }
        let target = self.start_at.into_std();
        let precise = tokio::task::spawn_blocking(move || {
            let now = std::time::Instant::now();
            if target > now {
                std::thread::sleep(target - now);
            }
        });
        if precise.await.is_err() {
            // No blocking pool (runtime shutting down): fall back to the timer.
            tokio::time::sleep_until(self.start_at).await;
        }
    }
}

/// The outcome of a reservation request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// A slot was booked.
    Booked(Reservation),
    /// The next slot is further away than allowed; nothing was booked.
    Refused {
        /// How much sooner the slot would have had to come (a hint for retrying).
        retry_after: Duration,
    },
}

/// A fleet-wide pacer for one outbound service.
///
/// ```no_run
/// use std::time::Duration;
/// use limiter_core::{Pace, Pacer, RedisConfig, RedisHandle};
///
/// # async fn run() -> Result<(), limiter_core::LimiterError> {
/// let redis = RedisHandle::new(&RedisConfig::default())?;
/// // At most 3 calls a second across every replica.
/// let pacer = Pacer::new(redis, "geocoder", 3.0, 1)?;
/// match pacer.reserve(Duration::from_secs(10)).await? {
///     Pace::Booked(slot) => {
///         slot.wait().await;
///         // ... call the upstream now
///     }
///     Pace::Refused { retry_after } => println!("503, retry in {retry_after:?}"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Pacer {
    redis: RedisHandle,
    key: String,
    service: String,
    interval_us: u64,
    burst: u32,
    clock: Arc<Mutex<ClockMap>>,
}

/// Maps Redis time onto this process's monotonic clock.
///
/// Using "reply arrival + wait" as the local start would add each reply's delivery delay, which
/// varies by milliseconds on a loaded machine, so two slots booked 1/rate apart could start closer
/// than that. Instead, like NTP, keep the smallest observed offset `local_receive - redis_now`: the
/// sample with the least queueing delay. It may grow by `DRIFT_PER_US` as time passes, so drift
/// between the two clocks cannot pin it to a stale minimum.
#[derive(Debug, Default)]
struct ClockMap {
    /// (offset in us, local time of the estimate)
    estimate: Option<(i64, Instant)>,
}

/// Allowed drift between Redis's clock and ours: 100 ppm.
const DRIFT_PER_US: f64 = 1e-4;

impl ClockMap {
    /// The local instant of Redis time `redis_us`, given a reply carrying `redis_now_us` received
    /// at `received`.
    fn local_instant(&mut self, redis_now_us: i64, received: Instant, redis_us: i64) -> Instant {
        let base = process_epoch();
        let local_us = i64::try_from(received.duration_since(base).as_micros()).unwrap_or(i64::MAX);
        let sample = local_us - redis_now_us;
        let offset = match self.estimate {
            Some((est, at)) => {
                let aged =
                    est + (received.duration_since(at).as_micros() as f64 * DRIFT_PER_US) as i64;
                if sample <= aged {
                    self.estimate = Some((sample, received));
                    sample
                } else {
                    aged
                }
            }
            None => {
                self.estimate = Some((sample, received));
                sample
            }
        };
        let local_target = redis_us + offset;
        base + Duration::from_micros(u64::try_from(local_target).unwrap_or(0))
    }
}

/// A fixed local origin for microsecond arithmetic on `Instant`s.
fn process_epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    // Backdated so that mapped instants slightly before the first call stay representable.
    *EPOCH.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(Duration::from_secs(3600)).unwrap_or(now)
    })
}

impl Pacer {
    /// `rate_per_sec` calls per second on average, at most `burst` back to back.
    pub fn new(
        redis: RedisHandle,
        service: &str,
        rate_per_sec: f64,
        burst: u32,
    ) -> Result<Self, LimiterError> {
        if !(rate_per_sec.is_finite() && rate_per_sec > 0.0 && rate_per_sec <= 1_000_000.0)
            || burst == 0
        {
            return Err(LimiterError::InvalidArgument(format!(
                "pacer {service:?}: rate must be in (0, 1e6] per second and burst >= 1"
            )));
        }
        // Round the interval up so the pace never exceeds the configured rate, and add a small
        // guard: each replica maps Redis time onto its own clock with an estimate that may be off
        // by about a millisecond, and a waiter wakes a few milliseconds late on a busy machine
        // (3.2 ms seen on 2 cores), so slots booked exactly 1/rate apart could start closer.
        let base_us = (1_000_000.0 / rate_per_sec).ceil() as u64;
        let interval_us = base_us + (base_us / 50).min(CLOCK_GUARD_US);
        Ok(Pacer {
            key: redis.keys().pacing(service),
            redis,
            service: service.to_string(),
            interval_us,
            burst,
            clock: Arc::default(),
        })
    }

    /// Widens the spacing between slots by `guard` beyond 1/rate. A slot is booked on Redis's
    /// clock, but the upstream counts arrivals on its own: a request that leaves late (scheduling,
    /// connection set-up) arrives closer to the next one than booked. An upstream that allows `rate`
    /// requests in any second then sees `rate + 1` unless the spacing leaves room for that jitter.
    pub fn with_spacing_guard(mut self, guard: Duration) -> Self {
        let guard_us = u64::try_from(guard.as_micros()).unwrap_or(0);
        self.interval_us = self.interval_us.saturating_add(guard_us);
        self
    }

    /// The service this pacer guards.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Minimum spacing between slots at burst 1: 1/rate plus the clock guard (and any spacing
    /// guard added).
    pub fn interval(&self) -> Duration {
        Duration::from_micros(self.interval_us)
    }

    /// Books the earliest conforming slot if it starts within `max_wait`.
    pub async fn reserve(&self, max_wait: Duration) -> Result<Pace, LimiterError> {
        let max_wait_us = u64::try_from(max_wait.as_micros()).unwrap_or(u64::MAX / 2);
        let reply: Vec<i64> = self
            .redis
            .eval(
                &PACING_RESERVE,
                &[&self.key],
                &[&self.interval_us, &self.burst, &max_wait_us],
            )
            .await?;
        let received = Instant::now();
        let [booked, value, now_us] = ints::<3>(PACING_RESERVE.name(), reply)?;
        Ok(if booked == 1 {
            let wait = Duration::from_micros(value.max(0) as u64);
            let start_at = match self.clock.lock() {
                Ok(mut clock) => clock.local_instant(now_us, received, now_us + value.max(0)),
                Err(_) => received + wait,
            };
            // Never earlier than the reply allows (the mapping is an estimate).
            let start_at = start_at.max(received + wait.saturating_sub(Duration::from_millis(5)));
            Pace::Booked(Reservation { wait, start_at })
        } else {
            Pace::Refused {
                retry_after: millis(value),
            }
        })
    }

    /// Allows a call now or refuses it with a retry hint; never books a future slot.
    pub async fn try_acquire(&self) -> Result<Pace, LimiterError> {
        self.reserve(Duration::ZERO).await
    }

    /// Books a slot within `max_wait` and waits for it. `Ok(None)` when refused.
    pub async fn acquire(&self, max_wait: Duration) -> Result<Option<Reservation>, LimiterError> {
        match self.reserve(max_wait).await? {
            Pace::Booked(r) => {
                r.wait().await;
                Ok(Some(r))
            }
            Pace::Refused { .. } => Ok(None),
        }
    }
}
