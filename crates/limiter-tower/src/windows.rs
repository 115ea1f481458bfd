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
//!
//! [`WindowsLayer::overlapping`] checks the windows while the layers inside work (a quota's
//! spend, an admission slot's wait), a [`GateLayer`] inside them holding the request until the
//! windows have passed it: the request waits for the longest of the round trips, not their sum.
//! A refusal then drops what the inner layers took (the spend is given back, the slot or queue
//! place freed), so the client sees exactly what it would have one layer after the other. A
//! request its windows refuse from the local cache of denials (or with no key) starts nothing
//! inside, so a client over its limit makes the inner layers work only for the requests it has
//! in flight when this replica first sees it refused, then not until its window reopens.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, join_all};
use http::{HeaderName, HeaderValue};
use http::{Request, Response};
use tower::{Layer, Service};

use crate::gate::Pending;
use crate::mode::mark_shadow;
use crate::reject::rendered;
use crate::window::{Verdict, WindowCheck};
use crate::{
    GateLayer, KeyExtractor, LimitBody, LimitRejection, RejectionRenderer, SlidingWindowLayer,
};

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
    /// Check alongside the inner layers, up to a [`GateLayer`].
    overlap: bool,
}

impl<B> std::fmt::Debug for WindowsLayer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowsLayer")
            .field("windows", &self.checks.len())
            .field("overlap", &self.overlap)
            .finish()
    }
}

impl<B> Clone for WindowsLayer<B> {
    fn clone(&self) -> Self {
        WindowsLayer {
            checks: Arc::clone(&self.checks),
            overlap: self.overlap,
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
            overlap: false,
        }
    }

    /// Adds the window of `layer` (sharing its state: a runtime change through its handle
    /// applies here too). Refusals rank in the order windows are added.
    pub fn window<K: KeyExtractor<B>>(self, layer: &SlidingWindowLayer<K>) -> Self {
        let mut checks: Vec<_> = self.checks.iter().cloned().collect();
        checks.push(layer.check());
        WindowsLayer {
            checks: checks.into(),
            overlap: self.overlap,
        }
    }

    /// Checks the windows while the layers inside this one work, instead of before them; the
    /// returned [`GateLayer`], placed inside them, holds the request until the windows passed
    /// it (see the module docs). One gate serves this layer and an overlapping
    /// [`crate::QuotaLayer`] together.
    pub fn overlapping(self) -> (Self, GateLayer) {
        (
            WindowsLayer {
                overlap: true,
                ..self
            },
            GateLayer::new(),
        )
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
            overlap: self.overlap,
        }
    }
}

/// The service of a [`WindowsLayer`]; it answers with a [`LimitBody`] (the inner body, or a
/// rendered refusal).
pub struct WindowsService<S, B> {
    inner: S,
    checks: Arc<[Arc<dyn WindowCheck<B>>]>,
    overlap: bool,
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
            overlap: self.overlap,
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

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let mut inner = crate::take_ready(&mut self.inner);
        let checks = Arc::clone(&self.checks);
        let overlap = self.overlap;
        Box::pin(async move {
            let keys: Vec<_> = checks.iter().map(|c| c.key(&req)).collect();
            let overlap = overlap
                && !checks
                    .iter()
                    .zip(&keys)
                    .any(|(c, k)| c.refuses_locally(k.as_deref()));
            let deciding = join_all(checks.iter().zip(keys).map(|(c, k)| c.decide(k)));
            if !overlap {
                let tally = Tally::of(deciding.await);
                let resp = match tally.refusal {
                    Some((ref rejection, ref renderer)) => rendered(&**renderer, rejection),
                    None => inner.call(req).await?.map(LimitBody::new),
                };
                return Ok(tally.apply(resp));
            }
            let open = Pending::add(&mut req);
            let served = inner.call(req);
            tokio::pin!(served, deciding);
            // The inner layers are polled first: their work (a spend in a database) is usually
            // the longest, so it goes out before the windows' round trip. An inner answer before
            // the windows' (a refusal inside) still waits for them: the windows counted the
            // request either way, and their refusal is the one shown.
            let (verdicts, early) = tokio::select! {
                biased;
                resp = &mut served => (deciding.await, Some(resp)),
                v = &mut deciding => (v, None),
            };
            let tally = Tally::of(verdicts);
            let resp = match (&tally.refusal, early) {
                // `served` drops here, and with it what the inner layers took.
                (Some((rejection, renderer)), _) => rendered(&**renderer, rejection),
                (None, Some(resp)) => resp?.map(LimitBody::new),
                (None, None) => {
                    let _ = open.send(());
                    served.await?.map(LimitBody::new)
                }
            };
            Ok(tally.apply(resp))
        })
    }
}

/// The windows' verdicts on one request, put together.
struct Tally {
    headers: Vec<(HeaderName, HeaderValue)>,
    shadows: Vec<&'static str>,
    /// The first enforcing window's refusal, in the order the windows were added.
    refusal: Option<(LimitRejection, Arc<dyn RejectionRenderer>)>,
}

impl Tally {
    fn of(verdicts: Vec<Verdict>) -> Tally {
        let mut t = Tally {
            headers: Vec::new(),
            shadows: Vec::new(),
            refusal: None,
        };
        for v in verdicts {
            match v {
                Verdict::Off => {}
                Verdict::Pass { headers, shadow } => {
                    t.headers.extend(headers);
                    t.shadows.extend(shadow);
                }
                Verdict::Refuse {
                    rejection,
                    headers,
                    renderer,
                } => {
                    t.headers.extend(headers);
                    t.refusal.get_or_insert((rejection, renderer));
                }
            }
        }
        t
    }

    /// Adds every window's headers and shadow marks to the response.
    fn apply<B>(self, mut resp: Response<B>) -> Response<B> {
        for (name, value) in self.headers {
            resp.headers_mut().append(name, value);
        }
        for code in self.shadows {
            mark_shadow(&mut resp, code);
        }
        resp
    }
}
