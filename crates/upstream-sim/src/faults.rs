//! The middleware in front of every simulated endpoint: counts the request in the stats, waits
//! the configured latency, then hangs, throttles, fails or passes the request on, as the group's
//! [`Faults`](crate::settings::Faults) dictate.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use futures_util::StreamExt;
use rand::Rng;

use crate::errors;
use crate::settings::Group;
use crate::state::SimState;
use crate::stats::Endpoint;

/// What the dice decided for one request.
enum Fate {
    Hang,
    Throttle,
    Fail,
    Serve,
}

/// Requests accepted in the last second, per group, for `rate_limit_per_sec`. Kept apart
/// from the stats so resetting those does not reset the limit.
#[derive(Debug, Default)]
pub(crate) struct RateWindows(Mutex<[VecDeque<Instant>; 3]>);

impl RateWindows {
    /// Whether a request arriving `now` is within `limit` per second; only admitted requests
    /// count, so a client that backs off gets through again.
    pub(crate) fn admit(&self, group: Group, limit: u32, now: Instant) -> bool {
        if limit == 0 {
            return true;
        }
        let mut windows = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let window = &mut windows[group as usize];
        while window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            window.pop_front();
        }
        if window.len() >= limit as usize {
            return false;
        }
        window.push_back(now);
        true
    }
}

/// Middleware state: the simulator and the endpoint it guards.
pub(crate) type Guarded = (SimState, Endpoint);

pub(crate) async fn inject(
    State((state, endpoint)): State<Guarded>,
    req: Request,
    next: Next,
) -> Response {
    let traceparent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(256).collect::<String>());
    // Dropped with this future if the client goes away: then it counts as "dropped".
    let mut in_flight = state.live_stats().begin(endpoint, traceparent);
    let group = endpoint.group();
    let faults = state.settings().faults(group).clone();
    if !state
        .rate_windows()
        .admit(group, faults.rate_limit_per_sec, state.clock().now())
    {
        let resp = errors::throttled(group, faults.retry_after_secs);
        in_flight.answered(resp.status().as_u16());
        return resp;
    }

    let (delay_ms, fate) = state.roll(|rng| {
        let jitter = if faults.jitter_ms > 0 {
            rng.random_range(0..=faults.jitter_ms)
        } else {
            0
        };
        let fate = if rng.random::<f64>() < faults.hang_rate {
            Fate::Hang
        } else if rng.random::<f64>() < faults.throttle_rate {
            Fate::Throttle
        } else if rng.random::<f64>() < faults.error_rate {
            Fate::Fail
        } else {
            Fate::Serve
        };
        (faults.latency_ms.saturating_add(jitter), fate)
    });
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }

    let resp = match fate {
        Fate::Hang => {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(faults.hang_max_ms)) => {}
                _ = state.shutdown_signal() => {}
            }
            errors::failure(group, 504)
        }
        Fate::Throttle => errors::throttled(group, faults.retry_after_secs),
        Fate::Fail => errors::failure(group, faults.error_status),
        Fate::Serve => next.run(req).await,
    };
    in_flight.answered(resp.status().as_u16());

    let streaming = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !streaming {
        return resp;
    }
    // A stream stays in flight until its last chunk was sent (or the client left).
    let (parts, body) = resp.into_parts();
    let stream = body.into_data_stream().map(move |chunk| {
        let _keep = &in_flight;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(stream))
}
