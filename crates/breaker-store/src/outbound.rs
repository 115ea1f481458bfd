//! [`Outbound`]: the one way upstream clients call out. Per attempt:
//!
//! 1. breaker check on the local cache (no Redis call): an OPEN breaker refuses before a pacing
//!    slot is booked, which keeps the OPEN path free of Redis round trips (the permit itself
//!    comes after pacing; this cheap check in front changes no outcome, it only saves a slot);
//! 2. pacing: limiter-core's fleet-wide `Pacer::reserve`, then wait for the slot (a local pacer at
//!    the degraded rate when Redis is unreachable);
//! 3. breaker permit ([`Breakers::acquire`]);
//! 4. the call, under a timeout;
//! 5. the outcome recorded by the breaker (successes of normal calls in the background); 429,
//!    5xx and timeouts of idempotent calls are retried with exponential backoff and full jitter,
//!    never sooner than `Retry-After`, each retry paced and permitted again.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use limiter_core::{Pace, Pacer};
use tokio::time::Instant;
use tracing::Instrument;
use tracing::field::Empty;

use crate::attempt::Attempt;
use crate::call_error::CallError;
use crate::entry::lock;
use crate::{BreakerError, Breakers, Outcome, Permit, RetryPolicy};

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
    /// Fleet-wide pacing (an API that allows 3 calls a second); `None`: unpaced.
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
///
/// ```no_run
/// use breaker_store::{
///     Attempt, Breakers, BreakersConfig, Outbound, OutboundConfig, ServiceOutbound,
///     StatusClass, classify_status,
/// };
/// use limiter_core::{Pacer, RedisConfig, RedisHandle};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisHandle::new(&RedisConfig::default())?;
/// let breakers = Breakers::new(redis.clone(), BreakersConfig::default())?;
/// let outbound = Outbound::new(breakers, OutboundConfig::default()).with_service(
///     "geocoder",
///     ServiceOutbound {
///         pacer: Some(Pacer::new(redis, "geocoder", 3.0, 1)?),
///         ..ServiceOutbound::default()
///     },
/// );
/// let body: String = outbound
///     .call("geocoder", true, |_attempt| async {
///         // Send the request here; classify what came back.
///         let status = 200;
///         match classify_status(status) {
///             StatusClass::Success => Attempt::Success("ok".to_string()),
///             StatusClass::Rejected => Attempt::Rejected(format!("status {status}")),
///             StatusClass::Failure => Attempt::Failure {
///                 error: format!("status {status}"),
///                 retry_after: None,
///             },
///         }
///     })
///     .await?;
/// # let _ = body;
/// # Ok(())
/// # }
/// ```
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
