//! [`Outbound`]: the one way upstream clients call out. Per attempt:
//!
//! 1. breaker check on the local cache (no Redis call): an OPEN breaker refuses before a pacing
//!    slot is booked, which keeps the OPEN path free of Redis round trips (the order is
//!    pacing → permit; this cheap check in front changes no outcome, it only saves a slot);
//! 2. pacing: limiter-core's fleet-wide `Pacer::reserve`, then wait for the slot (a local pacer at
//!    the degraded rate when Redis is unreachable);
//! 3. breaker permit ([`Breakers::acquire`]);
//! 4. the call, under a timeout;
//! 5. the outcome recorded by the breaker (successes of normal calls in the background); 429, 5xx and timeouts of idempotent calls are retried
//!    with exponential backoff and full jitter, never sooner than `Retry-After`, each retry paced
//!    and permitted again.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use limiter_core::{Pace, Pacer};
use tokio::time::Instant;
use tracing::Instrument;
use tracing::field::Empty;

use crate::registry::lock;
use crate::{BreakerError, Breakers, Outcome, Permit, RetryPolicy};

/// What one attempt of an upstream call returned, classified for the breaker and the retries.
#[derive(Debug)]
pub enum Attempt<T, E> {
    /// The upstream answered properly.
    Success(T),
    /// Timeout, connection error, 5xx or 429: counts as a breaker failure and is retried
    /// (idempotent calls), after at least `retry_after` when the upstream sent one.
    Failure {
        /// The error to return if no retry succeeds.
        error: E,
        /// The upstream's `Retry-After` (see [`parse_retry_after`]).
        retry_after: Option<Duration>,
    },
    /// A 4xx other than 429: the request was at fault, the upstream is fine. Not a breaker
    /// failure, never retried.
    Rejected(E),
}

/// How an HTTP status counts: see [`classify_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// 1xx-3xx.
    Success,
    /// 429 and 5xx (and anything unknown): a failure, retryable.
    Failure,
    /// 4xx except 429.
    Rejected,
}

/// Classifies an HTTP status: 5xx and 429 are failures, other 4xx are rejections.
pub fn classify_status(status: u16) -> StatusClass {
    match status {
        100..=399 => StatusClass::Success,
        429 => StatusClass::Failure,
        400..=499 => StatusClass::Rejected,
        _ => StatusClass::Failure,
    }
}

/// Parses a `Retry-After` value: delta-seconds, or an HTTP date (IMF-fixdate) relative to now.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(86_400)));
    }
    let at = parse_imf_fixdate(v)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now).min(86_400)))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` → Unix seconds.
fn parse_imf_fixdate(v: &str) -> Option<u64> {
    let mut it = v.split_ascii_whitespace();
    let _weekday = it.next()?;
    let day: u64 = it.next()?.parse().ok()?;
    let month = match it.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':');
    let (h, m, s): (u64, u64, u64) = (
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
    );
    if it.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days)
        .ok()
        .map(|d| d * 86_400 + h * 3600 + m * 60 + s)
}

/// Why an outbound call did not succeed. Each variant maps to one API error: `Unavailable` and
/// `Paced` → 503 `upstream_unavailable` with `Retry-After`, `Timeout` → 504 `upstream_timeout`,
/// `Upstream` → 502/503, `Rejected` → the caller's own mapping.
#[derive(Debug, thiserror::Error)]
pub enum CallError<E> {
    /// The breaker refused (OPEN, or HALF_OPEN with every probe taken): not called.
    #[error("upstream {service} unavailable (circuit open), retry after {retry_after:?}")]
    Unavailable {
        /// The service.
        service: String,
        /// When to try again.
        retry_after: Duration,
        /// Attempts that reached the upstream before the refusal.
        attempts: u32,
    },
    /// No pacing slot within the configured wait: not called.
    #[error("upstream {service} paced out, retry after {retry_after:?}")]
    Paced {
        /// The service.
        service: String,
        /// When a slot may be free.
        retry_after: Duration,
        /// Attempts that reached the upstream before.
        attempts: u32,
    },
    /// The last attempt timed out.
    #[error("upstream {service} timed out after {attempts} attempts")]
    Timeout {
        /// The service.
        service: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The last attempt failed (5xx, 429, connection error).
    #[error("upstream {service} failed after {attempts} attempts")]
    Upstream {
        /// The service.
        service: String,
        /// The last error.
        error: E,
        /// The upstream's last `Retry-After`.
        retry_after: Option<Duration>,
        /// Attempts made.
        attempts: u32,
    },
    /// The upstream rejected the request (4xx other than 429).
    #[error("upstream {service} rejected the request")]
    Rejected {
        /// The service.
        service: String,
        /// The error.
        error: E,
    },
}

impl<E> CallError<E> {
    /// The `Retry-After` to pass on, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::Unavailable { retry_after, .. } | CallError::Paced { retry_after, .. } => {
                Some(*retry_after)
            }
            CallError::Upstream { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Attempts that reached the upstream.
    pub fn attempts(&self) -> u32 {
        match self {
            CallError::Unavailable { attempts, .. }
            | CallError::Paced { attempts, .. }
            | CallError::Timeout { attempts, .. }
            | CallError::Upstream { attempts, .. } => *attempts,
            CallError::Rejected { .. } => 1,
        }
    }
}

/// Defaults of the wrapper.
#[derive(Debug, Clone)]
pub struct OutboundConfig {
    /// Timeout of one attempt.
    pub timeout: Duration,
    /// Retry rules.
    pub retry: RetryPolicy,
    /// Longest wait for a pacing slot; a later slot refuses the call (`CallError::Paced`).
    pub pacing_max_wait: Duration,
    /// Replicas assumed alive when Redis is unreachable: each paces at rate / this, so the fleet
    /// stays within the rate. Update it from the replica registry with
    /// [`Outbound::set_live_replicas`].
    pub expected_replicas: u32,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            pacing_max_wait: Duration::from_secs(10),
            expected_replicas: 3,
        }
    }
}

/// One upstream's settings; `None` fields take the [`OutboundConfig`] defaults.
#[derive(Debug, Clone, Default)]
pub struct ServiceOutbound {
    /// Fleet-wide pacing (PubMed 3/s, Semantic Scholar 1/s); `None`: unpaced (the LLM).
    pub pacer: Option<Pacer>,
    /// Timeout of one attempt.
    pub timeout: Option<Duration>,
    /// Retry rules.
    pub retry: Option<RetryPolicy>,
}

#[derive(Debug)]
struct ServiceEntry {
    settings: ServiceOutbound,
    /// Next free slot of the degraded-mode local pacer.
    local_next: Mutex<Option<Instant>>,
}

/// The outbound call wrapper. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Outbound {
    breakers: Breakers,
    config: OutboundConfig,
    services: HashMap<String, ServiceEntry>,
    live_replicas: AtomicU32,
}

impl Outbound {
    /// A wrapper over `breakers`; add paced services with [`Outbound::with_service`].
    pub fn new(breakers: Breakers, config: OutboundConfig) -> Self {
        let live = config.expected_replicas.max(1);
        Outbound {
            breakers,
            config,
            services: HashMap::new(),
            live_replicas: AtomicU32::new(live),
        }
    }

    /// Settings of one service (builder style).
    pub fn with_service(mut self, service: &str, settings: ServiceOutbound) -> Self {
        self.services.insert(
            service.to_string(),
            ServiceEntry {
                settings,
                local_next: Mutex::new(None),
            },
        );
        self
    }

    /// The breakers (health, admin).
    pub fn breakers(&self) -> &Breakers {
        &self.breakers
    }

    /// Live replicas, for the degraded-mode pacing share.
    pub fn set_live_replicas(&self, n: u32) {
        self.live_replicas.store(n.max(1), Ordering::Relaxed);
    }

    /// Calls `service` through pacing, breaker, timeout and retries. `call` gets the attempt
    /// number (1-based) and classifies what the upstream said. Non-idempotent calls are tried
    /// once.
    pub async fn call<T, E, F, Fut>(
        &self,
        service: &str,
        idempotent: bool,
        call: F,
    ) -> Result<T, CallError<E>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Attempt<T, E>>,
    {
        let entry = self.services.get(service);
        let settings = entry.map(|e| &e.settings);
        let timeout = settings
            .and_then(|s| s.timeout)
            .unwrap_or(self.config.timeout);
        let retry = settings
            .and_then(|s| s.retry.as_ref())
            .unwrap_or(&self.config.retry);
        let max_attempts = if idempotent {
            retry.max_attempts.max(1)
        } else {
            1
        };
        let span = tracing::info_span!(
            "upstream.call",
            otel.name = %format_args!("call {service}"),
            otel.status_code = Empty,
            fleetgate.upstream = service,
            fleetgate.attempts = Empty,
        );
        let result = self
            .call_attempts(service, max_attempts, timeout, retry, call)
            .instrument(span.clone())
            .await;
        match &result {
            Ok(_) | Err(CallError::Rejected { .. }) => {}
            Err(e) => {
                span.record("otel.status_code", "ERROR");
                span.record("fleetgate.attempts", e.attempts());
            }
        }
        result
    }

    async fn call_attempts<T, E, F, Fut>(
        &self,
        service: &str,
        max_attempts: u32,
        timeout: Duration,
        retry: &RetryPolicy,
        mut call: F,
    ) -> Result<T, CallError<E>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Attempt<T, E>>,
    {
        let entry = self.services.get(service);
        let refused = |e: BreakerError, attempts: u32| CallError::Unavailable {
            service: service.to_string(),
            retry_after: e.retry_after().unwrap_or(Duration::from_secs(1)),
            attempts,
        };
        let mut attempt = 0;
        loop {
            let decision = tracing::info_span!(
                "breaker.permit",
                fleetgate.breaker.service = service,
                fleetgate.breaker.state = self.breakers.state(service).as_str(),
                fleetgate.breaker.decision = Empty,
            );
            if let Err(e) = decision.in_scope(|| self.breakers.check(service)) {
                decision.record("fleetgate.breaker.decision", "refused");
                return Err(refused(e, attempt));
            }
            if let Some(entry) = entry
                && let Some(pacer) = &entry.settings.pacer
            {
                self.pace(service, entry, pacer, attempt)
                    .instrument(tracing::info_span!(
                        "pacing.wait",
                        fleetgate.upstream = service
                    ))
                    .await?;
            }
            let permit = match self
                .breakers
                .acquire(service)
                .instrument(decision.clone())
                .await
            {
                Ok(p) => {
                    decision.record(
                        "fleetgate.breaker.decision",
                        if p.is_probe() { "probe" } else { "allowed" },
                    );
                    p
                }
                Err(e) => {
                    decision.record("fleetgate.breaker.decision", "refused");
                    return Err(refused(e, attempt));
                }
            };
            drop(decision);
            attempt += 1;
            let attempt_span = tracing::info_span!(
                "upstream.attempt",
                fleetgate.upstream = service,
                http.request.resend_count = (attempt > 1).then(|| attempt - 1),
            );
            let result = tokio::time::timeout(timeout, call(attempt))
                .instrument(attempt_span)
                .await;
            let (error, retry_after) = match result {
                Ok(Attempt::Success(v)) => {
                    self.record_success(permit).await;
                    return Ok(v);
                }
                Ok(Attempt::Rejected(error)) => {
                    self.record_success(permit).await;
                    return Err(CallError::Rejected {
                        service: service.to_string(),
                        error,
                    });
                }
                Ok(Attempt::Failure { error, retry_after }) => {
                    self.breakers.record(permit, Outcome::Failure).await;
                    (Some(error), retry_after)
                }
                Err(_elapsed) => {
                    self.breakers.record(permit, Outcome::Failure).await;
                    (None, None)
                }
            };
            let failed = || match error {
                Some(error) => CallError::Upstream {
                    service: service.to_string(),
                    error,
                    retry_after,
                    attempts: attempt,
                },
                None => CallError::Timeout {
                    service: service.to_string(),
                    attempts: attempt,
                },
            };
            if attempt >= max_attempts {
                return Err(failed());
            }
            let Some(delay) = retry.delay(attempt, retry_after, rand::random::<f64>()) else {
                return Err(failed());
            };
            tracing::debug!(service, attempt, ?delay, "retrying upstream call");
            tokio::time::sleep(delay).await;
        }
    }

    /// A success of a normal call is recorded in the background (nothing the caller does depends
    /// on it, and it takes a Redis round trip off every successful call); a probe's success is
    /// awaited so the replica knows at once whether the breaker closed, and so is a slow success
    /// (a failure). Failures are always
    /// awaited: the retry that follows must see a trip.
    async fn record_success(&self, permit: Permit) {
        if permit.is_probe() || permit.is_local() || permit.is_slow() {
            self.breakers.record(permit, Outcome::Success).await;
        } else {
            self.breakers
                .record_in_background(permit, Outcome::Success)
                .await;
        }
    }

    /// Waits for a fleet-wide pacing slot; a local slot at the degraded share when Redis is
    /// unreachable.
    async fn pace<E>(
        &self,
        service: &str,
        entry: &ServiceEntry,
        pacer: &Pacer,
        attempts: u32,
    ) -> Result<(), CallError<E>> {
        let max_wait = self.config.pacing_max_wait;
        let paced = |retry_after| CallError::Paced {
            service: service.to_string(),
            retry_after,
            attempts,
        };
        match pacer.reserve(max_wait).await {
            Ok(Pace::Booked(r)) => {
                r.wait().await;
                Ok(())
            }
            Ok(Pace::Refused { retry_after }) => Err(paced(retry_after)),
            Err(e) => {
                tracing::debug!(service, error = %e, "pacing without redis: local share");
                let interval = pacer
                    .interval()
                    .saturating_mul(self.live_replicas.load(Ordering::Relaxed).max(1));
                let start = {
                    let mut next = lock(&entry.local_next);
                    let now = Instant::now();
                    let start = next.map_or(now, |n| n.max(now));
                    if start - now > max_wait {
                        return Err(paced(start - now - max_wait));
                    }
                    *next = Some(start.checked_add(interval).unwrap_or(start));
                    start
                };
                tokio::time::sleep_until(start).await;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        assert_eq!(classify_status(200), StatusClass::Success);
        assert_eq!(classify_status(404), StatusClass::Rejected);
        assert_eq!(classify_status(429), StatusClass::Failure);
        assert_eq!(classify_status(503), StatusClass::Failure);
        assert_eq!(classify_status(0), StatusClass::Failure);
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_imf_fixdate("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("Sun, 99 Nov 1994 08:49:37 GMT"), None);
    }
}
