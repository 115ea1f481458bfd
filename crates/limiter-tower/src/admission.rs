//! [`AdmissionLayer`]: concurrency caps (per key and fleet-wide) with limiter-core's priority
//! wait queue. A request waits for a slot in its class until the queue timeout; once admitted,
//! the slot (limiter-core's `Permit`, renewed while held) moves into the response body and is
//! released when the body ends, errors or is dropped: a streamed or SSE response keeps its slot
//! for as long as it streams, and a client that disconnects frees it at once.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{Request, Response};
use limiter_core::{Admission, Class, LimiterError};
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::admit::QUEUE_RETRY_AFTER;
use crate::body::BodyGuard;
use crate::mode::mark_shadow;
use crate::reject::rendered;
use crate::{
    Admit, Admitted, KeyExtractor, LimitBody, LimitHandle, LimitRejection, Mode, ProblemJson,
    RejectionRenderer,
};

/// A request stopped because its slot was revoked: its replica could not reach Redis for a lease's
/// lifetime, and Redis answering again takes a few seconds at least.
const REVOKED_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Holds the slot until the body is done with it (dropping the slot releases it fleet-wide).
struct SlotGuard<T> {
    _slot: T,
}

impl<T: Send + 'static> BodyGuard for SlotGuard<T> {
    fn end(self: Box<Self>, _ok: bool) {}
}

#[derive(Debug)]
struct Shared<K, A> {
    admitter: A,
    class: Class,
    key: K,
    queue_timeout: Duration,
    retry_after: Duration,
    renderer: Arc<dyn RejectionRenderer>,
    handle: LimitHandle,
}
/// Builds [`AdmissionService`]s admitting requests through one class of an admission queue.
///
/// The queue (`limiter_core::Admission`) is shared by every layer built over it: give each route
/// its class (`interactive` before `batch`, say) and they compete for the same caps in priority
/// order. Refusals: queue timeout (503 `queue_timeout`), queue full (503 `queue_full`), the key's
/// waiters at their cap (429 `user_queue_full`), all with `Retry-After`; Redis unreachable with
/// the queue's local fallback off, a reset queue or a replica shutting down (503
/// `service_unavailable`).
///
/// In [`Mode::Shadow`] a request never waits: it takes a slot if one is free right now (so the
/// counts stay true) and otherwise goes through without one, marked.
///
/// ```no_run
/// use std::time::Duration;
/// use limiter_core::{Admission, AdmissionConfig, RedisConfig, RedisHandle};
/// use limiter_tower::{AdmissionLayer, JwtClaimKey};
///
/// # async fn build() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisHandle::new(&RedisConfig::default())?;
/// let cfg = AdmissionConfig {
///     classes: vec!["interactive".into(), "batch".into()],
///     user_cap: 2,
///     global_cap: 20,
///     ..AdmissionConfig::default()
/// };
/// let admission = Admission::start(redis, cfg).await?;
/// let layer = AdmissionLayer::new(admission, "batch", JwtClaimKey::hs256(b"secret")?)?
///     .queue_timeout(Duration::from_secs(30));
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
///
/// The slots come from limiter-core's [`Admission`] by default; [`AdmissionLayer::with_admitter`]
/// takes any [`Admit`] instead (a wrapper counting or tracing them, say).
#[derive(Debug)]
pub struct AdmissionLayer<K, A = Admission> {
    shared: Arc<Shared<K, A>>,
}

impl<K, A> Clone for AdmissionLayer<K, A> {
    fn clone(&self) -> Self {
        AdmissionLayer {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K> AdmissionLayer<K, Admission> {
    /// Admits in the class named `class` (one of the queue's configured classes), keyed by `key`
    /// for the per-key cap. Queue timeout 60 s, `Retry-After` 10 s on refusals.
    pub fn new(admission: Admission, class: &str, key: K) -> Result<Self, LimiterError> {
        Self::with_admitter(admission, class, key)
    }
}

impl<K, A: Admit> AdmissionLayer<K, A> {
    /// Like [`AdmissionLayer::new`], taking slots from `admitter`.
    pub fn with_admitter(admitter: A, class: &str, key: K) -> Result<Self, LimiterError> {
        let Some(c) = admitter.classes().get(class) else {
            return Err(LimiterError::InvalidArgument(format!(
                "admission class {class:?} is not configured"
            )));
        };
        Ok(AdmissionLayer {
            shared: Arc::new(Shared {
                admitter,
                class: c,
                key,
                queue_timeout: Duration::from_secs(60),
                retry_after: QUEUE_RETRY_AFTER,
                renderer: Arc::new(ProblemJson::default()),
                handle: LimitHandle::new(),
            }),
        })
    }

    fn map(self, f: impl FnOnce(&mut Shared<K, A>)) -> Self {
        match Arc::try_unwrap(self.shared) {
            Ok(mut s) => {
                f(&mut s);
                AdmissionLayer {
                    shared: Arc::new(s),
                }
            }
            // Options are set while building, before any clone exists.
            Err(shared) => AdmissionLayer { shared },
        }
    }

    /// Admits `key` in this layer's class as a request through the layer would be (same queue
    /// timeout and refusals), for a handler that waits for its slot itself: a stream that
    /// reports its queue positions (1-based, published to `positions`) while it waits, say.
    /// Always enforces, whatever the handle's mode. Dropping the slot frees it.
    pub async fn admit(
        &self,
        key: &str,
        positions: Option<tokio::sync::watch::Sender<u32>>,
    ) -> Result<(A::Slot, Admitted), LimitRejection> {
        let s = &self.shared;
        let deadline = Instant::now() + s.queue_timeout;
        match s.admitter.admit(key, s.class, deadline, positions).await {
            Ok(slot) => {
                let admitted = Admitted {
                    queued: A::queued(&slot),
                };
                Ok((slot, admitted))
            }
            Err(e) => Err(queue_retry(e, s.retry_after)),
        }
    }

    /// Longest wait in the queue.
    pub fn queue_timeout(self, timeout: Duration) -> Self {
        self.map(|s| s.queue_timeout = timeout)
    }

    /// The `Retry-After` of queue refusals.
    pub fn retry_after(self, retry_after: Duration) -> Self {
        self.map(|s| s.retry_after = retry_after)
    }

    /// Renders refusals with `renderer` instead of [`ProblemJson`].
    pub fn renderer(self, renderer: impl RejectionRenderer) -> Self {
        self.map(|s| s.renderer = Arc::new(renderer))
    }

    /// Reads the mode from `handle`.
    pub fn handle(self, handle: LimitHandle) -> Self {
        self.map(|s| s.handle = handle)
    }
}

impl<S, K, A> Layer<S> for AdmissionLayer<K, A> {
    type Service = AdmissionService<S, K, A>;

    fn layer(&self, inner: S) -> Self::Service {
        AdmissionService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service of an [`AdmissionLayer`], built by [`Layer::layer`]; its [`LimitBody`] holds
/// the slot until the body ends.
///
/// ```no_run
/// # use limiter_core::{Admission, AdmissionConfig, RedisConfig, RedisHandle};
/// use limiter_tower::{AdmissionLayer, ConstantKey};
/// use tower::Layer;
///
/// # async fn build() -> Result<(), Box<dyn std::error::Error>> {
/// # let redis = RedisHandle::new(&RedisConfig::default())?;
/// let admission = Admission::start(redis, AdmissionConfig::default()).await?;
/// let handler = tower::service_fn(|_req: http::Request<String>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(String::from("ok")))
/// });
/// let service = AdmissionLayer::new(admission, "default", ConstantKey::new("all"))?.layer(handler);
/// # let _ = service;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct AdmissionService<S, K, A = Admission> {
    inner: S,
    shared: Arc<Shared<K, A>>,
}

impl<S: Clone, K, A> Clone for AdmissionService<S, K, A> {
    fn clone(&self) -> Self {
        AdmissionService {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

/// `r` with the layer's `Retry-After` on queue refusals.
fn queue_retry(r: LimitRejection, retry_after: Duration) -> LimitRejection {
    match r {
        LimitRejection::QueueTimeout { .. } => LimitRejection::QueueTimeout { retry_after },
        LimitRejection::QueueFull { .. } => LimitRejection::QueueFull { retry_after },
        LimitRejection::UserQueueFull { .. } => LimitRejection::UserQueueFull { retry_after },
        other => other,
    }
}

impl<S, K, A, ReqB, ResB> Service<Request<ReqB>> for AdmissionService<S, K, A>
where
    A: Admit,
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    K: KeyExtractor<ReqB>,
    ReqB: Send + 'static,
    ResB: Send + 'static,
{
    type Response = Response<LimitBody<ResB>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let mut inner = crate::take_ready(&mut self.inner);
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let mode = shared.handle.mode();
            if mode == Mode::Off {
                return Ok(inner.call(req).await?.map(LimitBody::new));
            }
            let refused = |r: LimitRejection| {
                shared.handle.count_shadow_refusal("admission", r.code());
                r.code()
            };
            let Some(key) = shared.key.key(&req) else {
                if mode == Mode::Enforce {
                    return Ok(rendered(&*shared.renderer, &LimitRejection::NoKey));
                }
                let code = refused(LimitRejection::NoKey);
                let mut resp = inner.call(req).await?.map(LimitBody::new);
                mark_shadow(&mut resp, code);
                return Ok(resp);
            };
            // Shadow never waits: only a slot free right now.
            let deadline = match mode {
                Mode::Shadow => Instant::now(),
                _ => Instant::now() + shared.queue_timeout,
            };
            let slot = match shared
                .admitter
                .admit(&key, shared.class, deadline, None)
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    let r = queue_retry(e, shared.retry_after);
                    if mode == Mode::Enforce {
                        return Ok(rendered(&*shared.renderer, &r));
                    }
                    let code = refused(r);
                    let mut resp = inner.call(req).await?.map(LimitBody::new);
                    mark_shadow(&mut resp, code);
                    return Ok(resp);
                }
            };
            req.extensions_mut().insert(Admitted {
                queued: A::queued(&slot),
            });
            // A revoked slot stops the request: before the response head, the handler's future
            // is dropped (and its calls with it) and the client refused; after, the body is cut.
            let mut revoked = A::revoked(&slot);
            // If the handler fails (or this future is dropped), the slot drops here, released.
            let resp = tokio::select! {
                r = inner.call(req) => r?,
                () = &mut revoked => {
                    tracing::warn!("admission slot revoked before the response: request stopped");
                    return Ok(rendered(&*shared.renderer, &LimitRejection::Unavailable {
                        retry_after: REVOKED_RETRY_AFTER,
                    }));
                }
            };
            Ok(resp.map(|b| {
                LimitBody::guarded(b, Box::new(SlotGuard { _slot: slot })).stop_when(revoked)
            }))
        })
    }
}
