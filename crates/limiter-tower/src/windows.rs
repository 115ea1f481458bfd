//! [`WindowsLayer`]: several sliding windows over the same requests (per address and per user,
//! say), checked at once instead of one after the other, so a request pays one round trip to
//! Redis for all of them rather than one each.
//!
//! Each window keeps everything of its own [`SlidingWindowLayer`]: key, limit, mode and runtime
//! handle, renderer, observer, fail-open choice. Every window counts the requests it allowed,
//! whichever window refused; one after the other, a window behind a refusing one would not have
//! seen the request. A request is refused if any enforcing window refuses, with the refusal of
//! the first such window in the order they were added; the response carries the
//! `RateLimit-Policy` and `RateLimit` lines of every window (a list, as the draft has it for
//! several policies).

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, join_all};
use http::{Request, Response};
use tower::{Layer, Service};

use crate::mode::mark_shadow;
use crate::reject::rendered;
use crate::window::{Verdict, WindowCheck};
use crate::{KeyExtractor, LimitBody, SlidingWindowLayer};

/// Builds [`WindowsService`]s: the windows added, checked at once (see the module docs).
///
/// ```no_run
/// use std::time::Duration;
/// use limiter_core::{RedisConfig, RedisHandle, WindowPolicy};
/// use limiter_tower::{ClientIpKey, HeaderKey, SlidingWindowLayer, WindowsLayer};
///
/// # fn build() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisHandle::new(&RedisConfig::default())?;
/// let minute = Duration::from_secs(60);
/// let per_ip = SlidingWindowLayer::new(
///     redis.clone(),
///     WindowPolicy::new("ip", 60, minute),
///     ClientIpKey::direct(),
/// )?;
/// let per_user = SlidingWindowLayer::new(
///     redis,
///     WindowPolicy::new("user", 30, minute),
///     HeaderKey::new(http::HeaderName::from_static("x-user-id")),
/// )?;
/// let layer = WindowsLayer::<axum::body::Body>::new().window(&per_ip).window(&per_user);
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
pub struct WindowsLayer<B> {
    checks: Arc<[Arc<dyn WindowCheck<B>>]>,
}

impl<B> std::fmt::Debug for WindowsLayer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowsLayer")
            .field("windows", &self.checks.len())
            .finish()
    }
}

impl<B> Clone for WindowsLayer<B> {
    fn clone(&self) -> Self {
        WindowsLayer {
            checks: Arc::clone(&self.checks),
        }
    }
}

impl<B: 'static> Default for WindowsLayer<B> {
    fn default() -> Self {
        WindowsLayer::new()
    }
}

impl<B: 'static> WindowsLayer<B> {
    /// No window yet: every request passes.
    pub fn new() -> Self {
        WindowsLayer {
            checks: Arc::from(Vec::new()),
        }
    }

    /// Adds the window of `layer` (sharing its state: a runtime change through its handle
    /// applies here too). Refusals rank in the order windows are added.
    pub fn window<K: KeyExtractor<B>>(self, layer: &SlidingWindowLayer<K>) -> Self {
        let mut checks: Vec<_> = self.checks.iter().cloned().collect();
        checks.push(layer.check());
        WindowsLayer {
            checks: checks.into(),
        }
    }

    /// How many windows.
    pub fn len(&self) -> usize {
        self.checks.len()
    }

    /// No window at all.
    pub fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }
}

impl<S, B> Layer<S> for WindowsLayer<B> {
    type Service = WindowsService<S, B>;

    fn layer(&self, inner: S) -> Self::Service {
        WindowsService {
            inner,
            checks: Arc::clone(&self.checks),
        }
    }
}

/// The service of a [`WindowsLayer`]; it answers with a [`LimitBody`] (the inner body, or a
/// rendered refusal).
pub struct WindowsService<S, B> {
    inner: S,
    checks: Arc<[Arc<dyn WindowCheck<B>>]>,
}

impl<S: std::fmt::Debug, B> std::fmt::Debug for WindowsService<S, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowsService")
            .field("inner", &self.inner)
            .field("windows", &self.checks.len())
            .finish()
    }
}

impl<S: Clone, B> Clone for WindowsService<S, B> {
    fn clone(&self) -> Self {
        WindowsService {
            inner: self.inner.clone(),
            checks: Arc::clone(&self.checks),
        }
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for WindowsService<S, ReqB>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
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
        let checks = Arc::clone(&self.checks);
        Box::pin(async move {
            let keys: Vec<_> = checks.iter().map(|c| c.key(&req)).collect();
            let verdicts = join_all(checks.iter().zip(keys).map(|(c, k)| c.decide(k))).await;
            let mut headers = Vec::new();
            let mut shadows = Vec::new();
            let mut refusal = None;
            for v in verdicts {
                match v {
                    Verdict::Off => {}
                    Verdict::Pass { headers: h, shadow } => {
                        headers.extend(h);
                        shadows.extend(shadow);
                    }
                    Verdict::Refuse {
                        rejection,
                        headers: h,
                        renderer,
                    } => {
                        headers.extend(h);
                        refusal.get_or_insert((rejection, renderer));
                    }
                }
            }
            let mut resp = match refusal {
                Some((rejection, renderer)) => rendered(&*renderer, &rejection),
                None => inner.call(req).await?.map(LimitBody::new),
            };
            for (name, value) in headers {
                resp.headers_mut().append(name, value);
            }
            for code in shadows {
                mark_shadow(&mut resp, code);
            }
            Ok(resp)
        })
    }
}
