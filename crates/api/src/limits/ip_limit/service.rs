//! [`IpRateLimit`]: checks the client's window before the inner service runs; a denied request
//! never reaches it and never consumes capacity (the window script records admissions only).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderName};
use axum::response::Response;
use futures_util::future::BoxFuture;
use tower::Service;
use tracing::Instrument;

use super::layer::Shared;
use super::{IpLimitStats, ratelimit_header};
use crate::error::{ApiError, problem_response};
use crate::server::client_ip::ClientIp;

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The per-IP rate-limited service.
#[derive(Debug, Clone)]
pub struct IpRateLimit<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> IpRateLimit<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        IpRateLimit { inner, shared }
    }
}

/// The key of a client (also of the admin-token throttle): the IPv4 address, or the /64 of an IPv6 address (one subscriber usually
/// owns a whole /64 and could otherwise rotate addresses to dodge the limit).
pub fn client_key(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.to_string().into_bytes(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3]).into_bytes()
        }
    }
}

/// The route class of a window policy as a metric label (a closed set).
fn policy_label(name: &str) -> &'static str {
    match name {
        "chat" => "chat",
        "research" => "research",
        "export" => "export",
        _ => "other",
    }
}

fn denied(shared: &Shared, retry_after: Duration) -> Response {
    let mut h = HeaderMap::new();
    h.insert(RATELIMIT_POLICY, shared.policy.clone());
    h.insert(
        RATELIMIT,
        ratelimit_header(&shared.window.window().policy().name, 0, retry_after),
    );
    problem_response(&ApiError::RateLimited { retry_after }, h)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl<S> Service<Request> for IpRateLimit<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // The clone is ready only after poll_ready; use the ready one, keep the clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let ip = req
                .extensions()
                .get::<ClientIp>()
                .map(|c| c.0)
                .or_else(|| {
                    req.extensions()
                        .get::<ConnectInfo<SocketAddr>>()
                        .map(|c| c.0.ip())
                })
                .unwrap_or(IpAddr::from([0, 0, 0, 0]));
            let policy = policy_label(&shared.window.window().policy().name);
            let span = tracing::info_span!(
                "ratelimit.ip_window",
                fleetgate.ratelimit.policy = policy,
                fleetgate.ratelimit.outcome = tracing::field::Empty,
                fleetgate.ratelimit.remaining = tracing::field::Empty,
                fleetgate.ratelimit.cached = tracing::field::Empty,
            );
            let checked = shared
                .window
                .check(&client_key(ip))
                .instrument(span.clone())
                .await;
            let decided = |outcome: &'static str| {
                span.record("fleetgate.ratelimit.outcome", outcome);
                crate::metrics::get().decision("ip_window", policy, outcome);
            };
            let (remaining, reset) = match checked {
                Ok((d, _)) if d.allowed => {
                    IpLimitStats::bump(&shared.stats.allowed);
                    span.record("fleetgate.ratelimit.remaining", d.remaining);
                    decided("allowed");
                    (Some(d.remaining), d.reset)
                }
                Ok((d, cached)) => {
                    IpLimitStats::bump(&shared.stats.denied);
                    if cached {
                        IpLimitStats::bump(&shared.stats.denied_locally);
                    }
                    span.record("fleetgate.ratelimit.cached", cached);
                    decided("denied");
                    return Ok(denied(&shared, d.retry_after));
                }
                Err(err) => {
                    IpLimitStats::bump(&shared.stats.redis_errors);
                    shared
                        .stats
                        .last_redis_error_ms
                        .store(now_ms(), Ordering::Relaxed);
                    tracing::warn!(error = %err, policy = %shared.window.window().policy().name, "per-IP window unavailable");
                    if !shared.fail_open {
                        decided("fail_closed");
                        let e =
                            ApiError::unavailable("rate limiting is temporarily unavailable", err);
                        return Ok(problem_response(&e, HeaderMap::new()));
                    }
                    decided("fail_open");
                    IpLimitStats::bump(&shared.stats.failed_open);
                    (None, Duration::ZERO)
                }
            };
            let mut resp = inner.call(req).await?;
            let h = resp.headers_mut();
            h.insert(RATELIMIT_POLICY, shared.policy.clone());
            if let Some(r) = remaining {
                h.insert(
                    RATELIMIT,
                    ratelimit_header(&shared.window.window().policy().name, r, reset),
                );
            }
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let a = client_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = client_key("2001:db8:1:2:bbbb::2".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, client_key("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(client_key("10.0.0.1".parse().unwrap()), b"10.0.0.1");
    }
}
