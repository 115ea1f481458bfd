//! The circuit breaker on the app, shared by every gateway replica through breaker-store (its
//! state in Redis): the app's 5xx, a connection that fails (502) and no response head in time
//! (504) count as failures; a 4xx, 429 included, is the request's fault and counts as a success.
//! Once open, calls are refused with 503 `circuit_open` and `Retry-After` without reaching the
//! app; when the open period ends, probes go through (at most `probe_permits` fleet-wide) and
//! their successes close it.
//!
//! The outcome is recorded when the response head arrives: a stream that fails later is the
//! answer's business, not a sign the app is down.

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use breaker_store::{BreakerError, Breakers, BreakersConfig, Outcome};
use http::{HeaderValue, Response, header};
use limiter_core::RedisHandle;
use limiter_tower::SHADOW_HEADER;

use crate::policy::AppBreakerPolicy;
use crate::problem::GatewayProblem;

/// The breaker's name under the Redis prefix (one prefix per protected app).
const SERVICE: &str = "app";

/// A replica's view of the app's breaker.
#[derive(Debug, Clone)]
pub struct AppBreaker {
    breakers: Breakers,
}

impl AppBreaker {
    /// The breaker of `policy`, its state in `redis`. A probe's permit outlives the longest wait
    /// for a response head (`first_byte`), so only a dead replica's probe ever expires.
    pub fn new(
        redis: RedisHandle,
        policy: &AppBreakerPolicy,
        first_byte: Duration,
    ) -> Result<AppBreaker, BreakerError> {
        let policy = policy.to_store();
        let config = BreakersConfig {
            default_policy: policy.clone(),
            policies: [(SERVICE.to_string(), policy)].into(),
            probe_ttl: (first_byte + Duration::from_secs(5)).min(Duration::from_secs(86_400)),
            ..BreakersConfig::default()
        };
        Ok(AppBreaker {
            breakers: Breakers::new(redis, config)?,
        })
    }

    /// The refusal, if this replica already knows the breaker is open (no Redis call): checked
    /// before the limits, so a refused request spends no quota and takes no slot.
    pub fn refusal(&self) -> Option<Response<Body>> {
        self.breakers
            .check(SERVICE)
            .err()
            .map(|e| refused(e.retry_after()))
    }

    /// Runs `send` under a permit and records its outcome. Refused: 503, or in `shadow` the call
    /// goes on, marked, and is not counted.
    pub async fn call(
        &self,
        shadow: bool,
        send: impl Future<Output = Response<Body>>,
    ) -> Response<Body> {
        let permit = match self.breakers.acquire(SERVICE).await {
            Ok(p) => Some(p),
            Err(e) if !shadow => return refused(e.retry_after()),
            Err(_) => None,
        };
        let mut resp = send.await;
        let Some(permit) = permit else {
            resp.headers_mut().insert(
                SHADOW_HEADER,
                HeaderValue::from_static(GatewayProblem::CircuitOpen.code()),
            );
            return resp;
        };
        let outcome = if resp.status().is_server_error() {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        // A failure may trip the breaker and a probe may close it: wait for those, so the next
        // request sees the new state. A plain success changes nothing: off the request's path.
        if outcome == Outcome::Failure || permit.is_probe() || permit.is_local() {
            self.breakers.record(permit, outcome).await;
        } else {
            self.breakers.record_in_background(permit, outcome).await;
        }
        resp
    }
}

fn refused(retry_after: Option<Duration>) -> Response<Body> {
    let wait = retry_after.unwrap_or(Duration::from_secs(1));
    // Whole seconds, rounded up, at least 1: `Retry-After: 0` invites a hot retry loop.
    let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    let mut resp = GatewayProblem::CircuitOpen.response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}
