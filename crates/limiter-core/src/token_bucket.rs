//! Outbound pacing (layer 4): a GCRA token bucket shared by the fleet (`lua/pacing_reserve.lua`).
//!
//! [`Pacer::reserve`] books the next free slot fleet-wide and says how long to wait for it, so
//! replicas calling PubMed at 3/s are spaced evenly instead of colliding and retrying. With burst 1
//! no two booked slots are closer than `1/rate`. [`Pacer::try_acquire`] is a reservation that must
//! start now.

use std::time::Duration;

use tokio::time::Instant;

use crate::reply::{ints, millis};
use crate::scripts::PACING_RESERVE;
use crate::{LimiterError, RedisHandle};

/// A booked slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// How long after the reply the slot starts.
    pub wait: Duration,
    /// The slot's start on this process's clock (reply time + wait).
    pub start_at: Instant,
}

impl Reservation {
    /// Waits until the slot starts. Sleeps on the timer for all but the last 2 ms, then yields
    /// until the instant: tokio's timer wheel has 1 ms granularity, which would otherwise let two
    /// replicas' slots drift up to a millisecond closer than booked.
    pub async fn wait(&self) {
        let coarse = self.start_at.checked_sub(Duration::from_millis(2));
        if let Some(coarse) = coarse
            && coarse > Instant::now()
        {
            tokio::time::sleep_until(coarse).await;
        }
        while Instant::now() < self.start_at {
            tokio::task::yield_now().await;
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
#[derive(Debug, Clone)]
pub struct Pacer {
    redis: RedisHandle,
    key: String,
    service: String,
    interval_us: u64,
    burst: u32,
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
        // Round the interval up so the pace never exceeds the configured rate.
        let interval_us = (1_000_000.0 / rate_per_sec).ceil() as u64;
        Ok(Pacer {
            key: redis.keys().pacing(service),
            redis,
            service: service.to_string(),
            interval_us,
            burst,
        })
    }

    /// The service this pacer guards.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Minimum spacing between slots at burst 1.
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
        let [booked, value, _now_ms] = ints::<3>(PACING_RESERVE.name(), reply)?;
        Ok(if booked == 1 {
            let wait = Duration::from_micros(value.max(0) as u64);
            Pace::Booked(Reservation {
                wait,
                start_at: received + wait,
            })
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
