//! [`SlidingWindowLayer`]: at most N requests per key in any window (limiter-core's exact sliding
//! window in Redis), answered with the `RateLimit-Policy` and `RateLimit` headers of
//! draft-ietf-httpapi-ratelimit-headers. A key already refused is refused again from a local cache
//! until its window reopens, so a flood from one client costs Redis nothing. A refused request
//! never reaches the inner service and never consumes capacity.

use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{HeaderName, HeaderValue, Request, Response};
use limiter_core::{CachedWindow, LimiterError, RedisHandle, SlidingWindow, WindowPolicy};
use tower::{Layer, Service};
use tracing::Instrument;

use crate::mode::mark_shadow;
use crate::observe::NoObserver;
use crate::reject::{rendered, secs_ceil};
use crate::{
    DecisionObserver, KeyExtractor, LimitBody, LimitHandle, LimitRejection, Mode, ProblemJson,
    RejectionRenderer, WindowDecision,
};

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// `"name";q=limit;w=window_secs`.
fn policy_header(p: &WindowPolicy) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "\"{}\";q={};w={}",
        p.name,
        p.limit,
        p.window.as_secs()
    ))
    .unwrap_or(HeaderValue::from_static("\"default\""))
}

/// `"name";r=remaining;t=reset_secs` (`t=0` when nothing is in the window).
fn ratelimit_header(name: &str, remaining: u32, reset: Duration) -> HeaderValue {
    let t = if reset.is_zero() { 0 } else { secs_ceil(reset) };
    HeaderValue::from_str(&format!("\"{name}\";r={remaining};t={t}"))
        .unwrap_or(HeaderValue::from_static("\"default\""))
}

#[derive(Debug)]
struct Shared<K> {
    redis: RedisHandle,
    /// The window in force (rebuilt when the handle overrides the limit).
    window: RwLock<Arc<CachedWindow>>,
    key: K,
    renderer: Arc<dyn RejectionRenderer>,
    observer: Arc<dyn DecisionObserver>,
    handle: LimitHandle,
    fail_open: bool,
    configured_limit: u32,
}

impl<K> Shared<K> {
    /// The window for the limit the handle asks for right now.
    fn current(&self) -> Arc<CachedWindow> {
        let wanted = self.handle.window_limit().unwrap_or(self.configured_limit);
        let now = match self.window.read() {
            Ok(w) => Arc::clone(&w),
            Err(p) => Arc::clone(&p.into_inner()),
        };
        if now.window().policy().limit == wanted {
            return now;
        }
        let policy = WindowPolicy {
            limit: wanted,
            ..now.window().policy().clone()
        };
        match SlidingWindow::new(self.redis.clone(), policy) {
            Ok(w) => {
                // Same key in Redis (name and algorithm unchanged): the requests already in the
                // window keep counting. The local denial cache starts empty, which is only a
                // round trip more for clients refused under the old limit.
                let w = Arc::new(CachedWindow::new(w));
                if let Ok(mut slot) = self.window.write() {
                    *slot = Arc::clone(&w);
                }
                w
            }
            Err(e) => {
                tracing::warn!(error = %e, limit = wanted, "window limit override refused");
                now
            }
        }
    }
}

/// Builds [`WindowService`]s enforcing one sliding-window policy per key.
///
/// Options: [`fail_open`](SlidingWindowLayer::fail_open) (what to do when Redis cannot answer;
/// default: admit), [`renderer`](SlidingWindowLayer::renderer), and
/// [`handle`](SlidingWindowLayer::handle) for the mode and a runtime limit.
///
/// ```no_run
/// use std::time::Duration;
/// use limiter_core::{RedisConfig, RedisHandle, WindowPolicy};
/// use limiter_tower::{ClientIpKey, LimitHandle, SlidingWindowLayer};
///
/// # fn build() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisHandle::new(&RedisConfig::default())?;
/// let handle = LimitHandle::new();
/// let layer = SlidingWindowLayer::new(
///     redis,
///     WindowPolicy::new("search", 10, Duration::from_secs(60)),
///     ClientIpKey::direct(),
/// )?
/// .fail_open(false)
/// .handle(handle.clone());
/// // Later, on every replica: handle.set_window_limit(Some(20));
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct SlidingWindowLayer<K> {
    shared: Arc<Shared<K>>,
}

impl<K> Clone for SlidingWindowLayer<K> {
    fn clone(&self) -> Self {
        SlidingWindowLayer {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K> SlidingWindowLayer<K> {
    /// A layer enforcing `policy` per key of `key` (the policy name is part of the Redis key and
    /// of the headers). Fails on a policy limiter-core refuses (zero limit or window).
    pub fn new(redis: RedisHandle, policy: WindowPolicy, key: K) -> Result<Self, LimiterError> {
        let configured_limit = policy.limit;
        let window = SlidingWindow::new(redis.clone(), policy)?;
        Ok(SlidingWindowLayer {
            shared: Arc::new(Shared {
                redis,
                window: RwLock::new(Arc::new(CachedWindow::new(window))),
                key,
                renderer: Arc::new(ProblemJson::default()),
                observer: Arc::new(NoObserver),
                handle: LimitHandle::new(),
                fail_open: true,
                configured_limit,
            }),
        })
    }

    fn map(self, f: impl FnOnce(&mut Shared<K>)) -> Self {
        match Arc::try_unwrap(self.shared) {
            Ok(mut s) => {
                f(&mut s);
                SlidingWindowLayer {
                    shared: Arc::new(s),
                }
            }
            // Options are set while building, before any clone exists.
            Err(shared) => SlidingWindowLayer { shared },
        }
    }

    /// Admit (`true`, the default) or refuse with 503 `service_unavailable` (`false`) when Redis
    /// cannot answer.
    pub fn fail_open(self, open: bool) -> Self {
        self.map(|s| s.fail_open = open)
    }

    /// Renders refusals with `renderer` instead of [`ProblemJson`].
    pub fn renderer(self, renderer: impl RejectionRenderer) -> Self {
        self.map(|s| s.renderer = Arc::new(renderer))
    }

    /// Reads the mode and the limit override from `handle`.
    pub fn handle(self, handle: LimitHandle) -> Self {
        self.map(|s| s.handle = handle)
    }

    /// Tells `observer` every decision (for the service's counters, metrics and spans).
    pub fn observer(self, observer: impl DecisionObserver) -> Self {
        self.map(|s| s.observer = Arc::new(observer))
    }
}

impl<S, K> Layer<S> for SlidingWindowLayer<K> {
    type Service = WindowService<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        WindowService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service of a [`SlidingWindowLayer`], built by [`Layer::layer`]; it answers with a
/// [`LimitBody`] (the inner body, or a rendered refusal).
///
/// ```no_run
/// # use std::time::Duration;
/// # use limiter_core::{RedisConfig, RedisHandle, WindowPolicy};
/// use limiter_tower::{ConstantKey, SlidingWindowLayer};
/// use tower::Layer;
///
/// # fn build() -> Result<(), Box<dyn std::error::Error>> {
/// # let redis = RedisHandle::new(&RedisConfig::default())?;
/// let policy = WindowPolicy::new("all", 1000, Duration::from_secs(1));
/// let handler = tower::service_fn(|_req: http::Request<String>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(String::from("ok")))
/// });
/// let service = SlidingWindowLayer::new(redis, policy, ConstantKey::new("all"))?.layer(handler);
/// # let _ = service;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct WindowService<S, K> {
    inner: S,
    shared: Arc<Shared<K>>,
}

impl<S: Clone, K> Clone for WindowService<S, K> {
    fn clone(&self) -> Self {
        WindowService {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, K, ReqB, ResB> Service<Request<ReqB>> for WindowService<S, K>
where
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

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let mut inner = crate::take_ready(&mut self.inner);
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let key = shared.key.key(&req);
            match shared.decide(key).await {
                Verdict::Off => Ok(inner.call(req).await?.map(LimitBody::new)),
                Verdict::Refuse {
                    rejection,
                    headers,
                    renderer,
                } => {
                    let mut resp = rendered(&*renderer, &rejection);
                    for (name, value) in headers {
                        resp.headers_mut().insert(name, value);
                    }
                    Ok(resp)
                }
                Verdict::Pass { headers, shadow } => {
                    let mut resp = inner.call(req).await?.map(LimitBody::new);
                    for (name, value) in headers {
                        resp.headers_mut().insert(name, value);
                    }
                    if let Some(code) = shadow {
                        mark_shadow(&mut resp, code);
                    }
                    Ok(resp)
                }
            }
        })
    }
}

/// What one window says about a request.
pub(crate) enum Verdict {
    /// The window is switched off: nothing checked, no headers.
    Off,
    /// Let through with these headers; `shadow`: the refusal it would have had, in shadow mode.
    Pass {
        headers: Vec<(HeaderName, HeaderValue)>,
        shadow: Option<&'static str>,
    },
    /// Refused (enforcing): render `rejection` with `renderer`, then add `headers`.
    Refuse {
        rejection: LimitRejection,
        headers: Vec<(HeaderName, HeaderValue)>,
        renderer: Arc<dyn RejectionRenderer>,
    },
}

/// A window whatever its key extractor: what [`crate::WindowsLayer`] holds several of. The key
/// is read first, so no future holds the request.
pub(crate) trait WindowCheck<B>: Send + Sync + 'static {
    fn key(&self, req: &Request<B>) -> Option<String>;
    fn decide(&self, key: Option<String>) -> BoxFuture<'_, Verdict>;
    /// Whether `decide` is known to refuse `key` (enforcing, and no key or a cached denial):
    /// then nothing else should start for the request.
    fn refuses_locally(&self, key: Option<&str>) -> bool;
}

impl<K: KeyExtractor<B>, B> WindowCheck<B> for Shared<K> {
    fn key(&self, req: &Request<B>) -> Option<String> {
        self.key.key(req)
    }

    fn decide(&self, key: Option<String>) -> BoxFuture<'_, Verdict> {
        Box::pin(Shared::decide(self, key))
    }

    fn refuses_locally(&self, key: Option<&str>) -> bool {
        self.handle.mode() == Mode::Enforce
            && key.is_none_or(|k| self.current().is_denied(k.as_bytes()))
    }
}

impl<K> SlidingWindowLayer<K> {
    /// This layer's window, for a [`crate::WindowsLayer`].
    pub(crate) fn check<B>(&self) -> Arc<dyn WindowCheck<B>>
    where
        K: KeyExtractor<B>,
    {
        Arc::clone(&self.shared) as Arc<dyn WindowCheck<B>>
    }
}

impl<K> Shared<K> {
    /// Checks (and counts, if allowed) a request of `key` (`None`: the request had none) in this
    /// window, in the window's mode.
    async fn decide(&self, key: Option<String>) -> Verdict {
        let mode = self.handle.mode();
        if mode == Mode::Off {
            return Verdict::Off;
        }
        let window = self.current();
        let policy = window.window().policy();
        let mut headers = vec![(RATELIMIT_POLICY, policy_header(policy))];
        let observer = &self.observer;
        let span = observer.window_span(policy);
        let decided = |d: WindowDecision| observer.window_decided(policy, &d, &span);
        let refusal = match key {
            None => {
                decided(WindowDecision::NoKey);
                Some(LimitRejection::NoKey)
            }
            Some(key) => match window.check(key.as_bytes()).instrument(span.clone()).await {
                Ok((d, _)) if d.allowed => {
                    decided(WindowDecision::Allowed {
                        remaining: d.remaining,
                        reset: d.reset,
                    });
                    headers.push((
                        RATELIMIT,
                        ratelimit_header(&policy.name, d.remaining, d.reset),
                    ));
                    None
                }
                Ok((d, cached)) => {
                    decided(WindowDecision::Denied {
                        retry_after: d.retry_after,
                        cached,
                    });
                    headers.push((RATELIMIT, ratelimit_header(&policy.name, 0, d.retry_after)));
                    Some(LimitRejection::RateLimited {
                        retry_after: d.retry_after,
                    })
                }
                Err(e) => {
                    tracing::warn!(error = %e, policy = %policy.name, "sliding window unavailable");
                    decided(WindowDecision::Unavailable {
                        admitted: self.fail_open,
                    });
                    (!self.fail_open).then_some(LimitRejection::Unavailable {
                        retry_after: Duration::from_secs(1),
                    })
                }
            },
        };
        match refusal {
            None => Verdict::Pass {
                headers,
                shadow: None,
            },
            Some(rejection) if mode == Mode::Enforce => {
                // A refusal without a count has no `RateLimit` line to show, only the policy.
                if !matches!(rejection, LimitRejection::RateLimited { .. }) {
                    headers.clear();
                }
                Verdict::Refuse {
                    rejection,
                    headers,
                    renderer: Arc::clone(&self.renderer),
                }
            }
            Some(r) => {
                self.handle.count_shadow_refusal("window", r.code());
                Verdict::Pass {
                    headers,
                    shadow: Some(r.code()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_match_the_draft() {
        let p = WindowPolicy::new("api", 5, Duration::from_secs(60));
        assert_eq!(policy_header(&p), "\"api\";q=5;w=60");
        assert_eq!(
            ratelimit_header("api", 0, Duration::from_millis(41_200)),
            "\"api\";r=0;t=42"
        );
        assert_eq!(
            ratelimit_header("api", 3, Duration::ZERO),
            "\"api\";r=3;t=0"
        );
    }
}
