//! [`OutboundLayer`]: breaker-store's `Outbound` (fleet-wide pacing, a circuit breaker shared by
//! every replica, a timeout per attempt, retries with backoff and jitter) around any HTTP client
//! that is a tower service of `http::Request<B>`.
//!
//! Each attempt sends a copy of the request (so the body type must be `Clone`: a buffered body,
//! as request bodies of API clients usually are). Responses are classified by status: 1xx-3xx
//! succeed; 429 and 5xx count as breaker failures and are retried (idempotent methods only:
//! GET, HEAD, OPTIONS, PUT, DELETE, TRACE), never sooner than their `Retry-After`; other 4xx are
//! the request's fault and returned as they are. When retries are exhausted the last response is
//! returned, so the caller still sees what the upstream said. Refusals made without calling
//! (breaker open, no pacing slot in time, timeout) are [`OutboundError`]s.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use breaker_store::{
    Attempt, CallError, Outbound, StatusClass, classify_status, parse_retry_after,
};
use futures_util::future::BoxFuture;
use http::{Method, Request, Response, header};
use tower::{Layer, Service, ServiceExt};

/// Why an outbound call produced no response.
///
/// ```
/// use std::time::Duration;
/// use limiter_tower::OutboundError;
///
/// let e: OutboundError<std::io::Error> = OutboundError::Unavailable {
///     service: "geocoder".into(),
///     retry_after: Duration::from_secs(30),
/// };
/// assert_eq!(e.retry_after(), Some(Duration::from_secs(30)));
/// assert_eq!(e.to_string(), "upstream geocoder unavailable (circuit open)");
/// ```
#[derive(Debug, thiserror::Error)]
pub enum OutboundError<E> {
    /// The breaker is open (or every half-open probe is taken): not called.
    #[error("upstream {service} unavailable (circuit open)")]
    Unavailable {
        /// The upstream's name.
        service: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// No pacing slot within the configured wait: not called.
    #[error("upstream {service} paced out")]
    Paced {
        /// The upstream's name.
        service: String,
        /// When a slot may be free.
        retry_after: Duration,
    },
    /// The last attempt timed out.
    #[error("upstream {service} timed out")]
    Timeout {
        /// The upstream's name.
        service: String,
    },
    /// The client service failed (connection refused, say) on the last attempt.
    #[error("upstream {service} call failed")]
    Inner {
        /// The upstream's name.
        service: String,
        /// The client's error.
        #[source]
        source: E,
    },
}

impl<E> OutboundError<E> {
    /// When to try again, where known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            OutboundError::Unavailable { retry_after, .. }
            | OutboundError::Paced { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// What one failed attempt left.
enum Failed<R, E> {
    Status(Response<R>),
    Inner(E),
}

/// Wraps a client service in `outbound`'s pacing, breaker and retries for the upstream named
/// `service` (its breaker, and its pacer if [`Outbound::with_service`] gave one).
///
/// ```no_run
/// use std::sync::Arc;
/// use breaker_store::{Breakers, BreakersConfig, Outbound, OutboundConfig, ServiceOutbound};
/// use limiter_core::{Pacer, RedisConfig, RedisHandle};
/// use limiter_tower::OutboundLayer;
///
/// # fn build() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisHandle::new(&RedisConfig::default())?;
/// let breakers = Breakers::new(redis.clone(), BreakersConfig::default())?;
/// let outbound = Outbound::new(breakers, OutboundConfig::default()).with_service(
///     "geocoder",
///     ServiceOutbound {
///         pacer: Some(Pacer::new(redis, "geocoder", 3.0, 1)?),
///         ..ServiceOutbound::default()
///     },
/// );
/// let layer = OutboundLayer::new(Arc::new(outbound), "geocoder");
/// // tower::ServiceBuilder::new().layer(layer).service(my_http_client)
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct OutboundLayer {
    outbound: Arc<Outbound>,
    service: Arc<str>,
}

impl OutboundLayer {
    /// Calls through `outbound` as upstream `service`.
    pub fn new(outbound: Arc<Outbound>, service: &str) -> Self {
        OutboundLayer {
            outbound,
            service: service.into(),
        }
    }
}

impl<S> Layer<S> for OutboundLayer {
    type Service = OutboundService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OutboundService {
            inner,
            outbound: Arc::clone(&self.outbound),
            service: Arc::clone(&self.service),
        }
    }
}

/// The service of an [`OutboundLayer`], built by [`Layer::layer`] over a client service;
/// its error is an [`OutboundError`] of the client's error.
///
/// ```no_run
/// # use std::sync::Arc;
/// # use breaker_store::{Breakers, BreakersConfig, Outbound, OutboundConfig};
/// # use limiter_core::{RedisConfig, RedisHandle};
/// use limiter_tower::OutboundLayer;
/// use tower::{Layer, ServiceExt};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// # let redis = RedisHandle::new(&RedisConfig::default())?;
/// # let outbound = Arc::new(Outbound::new(Breakers::new(redis, BreakersConfig::default())?, OutboundConfig::default()));
/// let client = tower::service_fn(|_req: http::Request<String>| async {
///     Ok::<_, std::io::Error>(http::Response::new(String::new()))
/// });
/// let service = OutboundLayer::new(outbound, "geocoder").layer(client);
/// let resp = service.oneshot(http::Request::new(String::new())).await?;
/// # let _ = resp;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct OutboundService<S> {
    inner: S,
    outbound: Arc<Outbound>,
    service: Arc<str>,
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

fn copy<B: Clone>(req: &Request<B>) -> Request<B> {
    let mut r = Request::new(req.body().clone());
    *r.method_mut() = req.method().clone();
    *r.uri_mut() = req.uri().clone();
    *r.version_mut() = req.version();
    *r.headers_mut() = req.headers().clone();
    *r.extensions_mut() = req.extensions().clone();
    r
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for OutboundService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Clone + Send + Sync + 'static,
    ResB: Send + 'static,
{
    type Response = Response<ResB>;
    type Error = OutboundError<S::Error>;
    type Future = BoxFuture<'static, Result<Response<ResB>, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each attempt readies its own clone of the client (retries need several calls).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let inner = self.inner.clone();
        let outbound = Arc::clone(&self.outbound);
        let service = Arc::clone(&self.service);
        Box::pin(async move {
            let retry = idempotent(req.method());
            let result = outbound
                .call(&service, retry, |_attempt| {
                    let client = inner.clone();
                    let req = copy(&req);
                    async move {
                        match client.oneshot(req).await {
                            Err(e) => Attempt::Failure {
                                error: Failed::Inner(e),
                                retry_after: None,
                            },
                            Ok(resp) => match classify_status(resp.status().as_u16()) {
                                StatusClass::Success => Attempt::Success(resp),
                                StatusClass::Rejected => Attempt::Rejected(Failed::Status(resp)),
                                StatusClass::Failure => Attempt::Failure {
                                    retry_after: resp
                                        .headers()
                                        .get(header::RETRY_AFTER)
                                        .and_then(|v| v.to_str().ok())
                                        .and_then(parse_retry_after),
                                    error: Failed::Status(resp),
                                },
                            },
                        }
                    }
                })
                .await;
            let service = service.to_string();
            match result {
                Ok(resp) => Ok(resp),
                Err(CallError::Rejected { error, .. } | CallError::Upstream { error, .. }) => {
                    match error {
                        Failed::Status(resp) => Ok(resp),
                        Failed::Inner(source) => Err(OutboundError::Inner { service, source }),
                    }
                }
                Err(CallError::Unavailable { retry_after, .. }) => {
                    Err(OutboundError::Unavailable {
                        service,
                        retry_after,
                    })
                }
                Err(CallError::Paced { retry_after, .. }) => Err(OutboundError::Paced {
                    service,
                    retry_after,
                }),
                Err(CallError::Timeout { .. }) => Err(OutboundError::Timeout { service }),
            }
        })
    }
}
