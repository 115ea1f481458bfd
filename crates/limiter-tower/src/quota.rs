//! [`QuotaLayer`]: a quota that lives in your own store (a daily allowance in PostgreSQL, say),
//! spent through your [`QuotaHook`]: checked (and reserved) before the request runs, committed
//! once it succeeded, refunded when it failed by no fault of the client.
//!
//! Refunded: the inner service's error, a 5xx response, a refusal by another layer of this crate
//! inside it, a body that fails or is dropped before its first byte (the client went away before
//! anything was served), and a spend that answers after its request was dropped. Committed: any
//! other response once its first data byte goes out or its body ends. Place the layer outside the
//! [`crate::AdmissionLayer`] so a client without quota does not queue.
//!
//! [`QuotaLayer::overlapping`] spends while the request waits for its slot, with a
//! [`crate::GateLayer`] inside the admission layer holding it until the spend answered: the
//! latency of the two is then the longer one's, not their sum. A key this replica saw refused
//! still spends first, so a client known to have nothing left does not queue.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{Request, Response};
use http_body::Body;
use tokio::sync::oneshot;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::body::BodyGuard;
use crate::gate::Pending;
use crate::mode::mark_shadow;
use crate::reject::{Refused, rendered};
use crate::{
    GateLayer, KeyExtractor, LimitBody, LimitHandle, LimitRejection, Mode, ProblemJson,
    RecentRefusals, RejectionRenderer,
};

/// The hook refused: the key has no quota left.
///
/// ```
/// use std::time::Duration;
/// use limiter_tower::QuotaDenied;
///
/// // Renews in an hour: the refusal carries `Retry-After: 3600`.
/// let denied = QuotaDenied { retry_after: Some(Duration::from_secs(3600)) };
/// # let _ = denied;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuotaDenied {
    /// When the quota renews, for `Retry-After`.
    pub retry_after: Option<Duration>,
}

/// Your quota store. `check` reserves one unit for `key` and returns a ticket; exactly one of
/// `commit` or `refund` is then called with it. Errors of your store are yours to handle inside
/// `check` (fail open by returning a ticket, or closed by returning [`QuotaDenied`]).
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use limiter_tower::{QuotaDenied, QuotaHook};
///
/// /// Three requests per key, in memory (a real hook would use a database).
/// #[derive(Debug, Default)]
/// struct Three(Mutex<HashMap<String, u32>>);
///
/// impl QuotaHook for Three {
///     type Ticket = String;
///
///     async fn check(&self, key: &str) -> Result<String, QuotaDenied> {
///         let mut used = self.0.lock().unwrap();
///         let n = used.entry(key.to_string()).or_default();
///         if *n >= 3 {
///             return Err(QuotaDenied::default());
///         }
///         *n += 1;
///         Ok(key.to_string())
///     }
///
///     async fn commit(&self, _ticket: String) {}
///
///     async fn refund(&self, ticket: String) {
///         *self.0.lock().unwrap().entry(ticket).or_default() -= 1;
///     }
/// }
/// ```
pub trait QuotaHook: Send + Sync + 'static {
    /// What `check` reserved, handed back to `commit` or `refund`.
    type Ticket: Send + 'static;

    /// Reserves one unit for `key`, or refuses.
    fn check(&self, key: &str) -> impl Future<Output = Result<Self::Ticket, QuotaDenied>> + Send;

    /// The request succeeded: the unit stays spent.
    fn commit(&self, ticket: Self::Ticket) -> impl Future<Output = ()> + Send;

    /// The request failed by no fault of the client: give the unit back.
    fn refund(&self, ticket: Self::Ticket) -> impl Future<Output = ()> + Send;

    /// Whether `commit` does anything. A hook whose `check` already made the spend final (a
    /// row updated in its database) returns `false`: a request that succeeded then drops its
    /// ticket instead of running `commit` in a task of its own.
    fn commits(&self) -> bool {
        true
    }

    /// Whether a `check` dropped before it answered gives back, by itself, whatever it spent
    /// (daily-quota's store does). When it does not (the default), the layer runs each check in
    /// a task of its own so that it always answers and a dropped request's unit is refunded;
    /// when it does, the check runs in the request's own task, a hand-off less.
    fn refunds_dropped_checks(&self) -> bool {
        false
    }
}

/// Settles a ticket exactly once; in the background, since a body is polled synchronously.
struct Settle<H: QuotaHook> {
    hook: Arc<H>,
    ticket: Option<H::Ticket>,
}

impl<H: QuotaHook> Settle<H> {
    fn settle(&mut self, commit: bool) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        if commit && !self.hook.commits() {
            return;
        }
        let hook = Arc::clone(&self.hook);
        let run = async move {
            if commit {
                hook.commit(ticket).await;
            } else {
                hook.refund(ticket).await;
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(run);
            }
            Err(_) => tracing::warn!("quota ticket dropped outside a tokio runtime"),
        }
    }
}

impl<H: QuotaHook> Drop for Settle<H> {
    fn drop(&mut self) {
        // Still unsettled: nothing was served (the body was dropped before its first byte, or
        // the request future was abandoned).
        self.settle(false);
    }
}

impl<H: QuotaHook> BodyGuard for Settle<H> {
    fn data(&mut self) {
        self.settle(true);
    }

    fn end(mut self: Box<Self>, ok: bool) {
        self.settle(ok);
    }
}

#[derive(Debug)]
struct Shared<H, K> {
    hook: Arc<H>,
    key: K,
    renderer: Arc<dyn RejectionRenderer>,
    handle: LimitHandle,
    /// Spend alongside the inner layers, up to a [`GateLayer`].
    overlap: bool,
    /// Keys refused lately: they spend first.
    refused: RecentRefusals,
}

/// A spend's outcome: the ticket, held until settled, or the refusal.
type Checked<H> = Result<Settle<H>, QuotaDenied>;

/// A spend under way.
type Checking<H> = BoxFuture<'static, Checked<H>>;

/// Spends for `key`. A hook that does not give back a check dropped midway runs it in a task of
/// its own, so that a spend whose request is dropped meanwhile still answers, and is given back
/// (the unsent [`Settle`] refunds as it drops); a task that panicked is a store that could not
/// answer.
fn start_check<H: QuotaHook>(hook: &Arc<H>, key: String) -> Checking<H> {
    let inline = hook.refunds_dropped_checks();
    let hook = Arc::clone(hook);
    let check = async move {
        let out = hook.check(&key).await;
        out.map(|ticket| Settle {
            hook,
            ticket: Some(ticket),
        })
    };
    if inline {
        return Box::pin(check);
    }
    let (tx, rx) = oneshot::channel();
    // The hook's spans stay in the request's trace.
    tokio::spawn(
        async move {
            let _ = tx.send(check.await);
        }
        .in_current_span(),
    );
    Box::pin(async move { rx.await.unwrap_or(Err(QuotaDenied { retry_after: None })) })
}

/// Settles by the inner service's response: given back on a 5xx or a refusal, else kept once
/// the body went out.
fn settled<B: Body>(
    resp: Response<B>,
    mut settle: Settle<impl QuotaHook>,
) -> Response<LimitBody<B>> {
    if resp.status().is_server_error() || resp.extensions().get::<Refused>().is_some() {
        settle.settle(false);
        return resp.map(LimitBody::new);
    }
    // A body known to be empty may never be polled: nothing more can fail.
    if resp.body().size_hint().exact() == Some(0) {
        settle.settle(true);
        return resp.map(LimitBody::new);
    }
    resp.map(|b| LimitBody::guarded(b, Box::new(settle)))
}

/// Builds [`QuotaService`]s spending through a [`QuotaHook`], keyed by `key`.
///
/// ```
/// # use limiter_tower::{QuotaDenied, QuotaHook};
/// # #[derive(Debug)]
/// # struct MyQuota;
/// # impl QuotaHook for MyQuota {
/// #     type Ticket = ();
/// #     async fn check(&self, _: &str) -> Result<(), QuotaDenied> { Ok(()) }
/// #     async fn commit(&self, _: ()) {}
/// #     async fn refund(&self, _: ()) {}
/// # }
/// use limiter_tower::{HeaderKey, QuotaLayer};
///
/// let layer = QuotaLayer::new(MyQuota, HeaderKey::new(http::HeaderName::from_static("x-user-id")));
/// # let _ = layer;
/// ```
#[derive(Debug)]
pub struct QuotaLayer<H, K> {
    shared: Arc<Shared<H, K>>,
}

impl<H, K> Clone for QuotaLayer<H, K> {
    fn clone(&self) -> Self {
        QuotaLayer {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<H, K> QuotaLayer<H, K> {
    /// Spends through `hook`, one unit per request of each key.
    pub fn new(hook: H, key: K) -> Self {
        QuotaLayer {
            shared: Arc::new(Shared {
                hook: Arc::new(hook),
                key,
                renderer: Arc::new(ProblemJson::default()),
                handle: LimitHandle::new(),
                overlap: false,
                refused: RecentRefusals::default(),
            }),
        }
    }

    fn map(self, f: impl FnOnce(&mut Shared<H, K>)) -> Self {
        match Arc::try_unwrap(self.shared) {
            Ok(mut s) => {
                f(&mut s);
                QuotaLayer {
                    shared: Arc::new(s),
                }
            }
            // Options are set while building, before any clone exists.
            Err(shared) => QuotaLayer { shared },
        }
    }

    /// Renders refusals with `renderer` instead of [`ProblemJson`].
    pub fn renderer(self, renderer: impl RejectionRenderer) -> Self {
        self.map(|s| s.renderer = Arc::new(renderer))
    }

    /// Reads the mode from `handle`. In shadow mode a refused check lets the request through
    /// (marked) without spending.
    pub fn handle(self, handle: LimitHandle) -> Self {
        self.map(|s| s.handle = handle)
    }

    /// Spends while the layers inside this one work (an [`crate::AdmissionLayer`]'s wait for a
    /// slot, say), instead of before them; the returned [`GateLayer`], placed inside them,
    /// holds the request until the spend answered. A refused spend drops what the layers in
    /// between took (the slot, the queue place) and answers the refusal; a refusal of theirs
    /// gives the spend back. A key this replica saw refused spends first, until its
    /// renewal time, so a client known to have nothing left takes no queue place. Shadow mode
    /// spends first too.
    pub fn overlapping(self) -> (Self, GateLayer) {
        (self.map(|s| s.overlap = true), GateLayer::new())
    }
}

impl<S, H, K> Layer<S> for QuotaLayer<H, K> {
    type Service = QuotaService<S, H, K>;

    fn layer(&self, inner: S) -> Self::Service {
        QuotaService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service of a [`QuotaLayer`], built by [`Layer::layer`]: it answers with a
/// [`LimitBody`] that settles the ticket.
///
/// ```
/// # use limiter_tower::{QuotaDenied, QuotaHook};
/// # #[derive(Debug)]
/// # struct MyQuota;
/// # impl QuotaHook for MyQuota {
/// #     type Ticket = ();
/// #     async fn check(&self, _: &str) -> Result<(), QuotaDenied> { Ok(()) }
/// #     async fn commit(&self, _: ()) {}
/// #     async fn refund(&self, _: ()) {}
/// # }
/// use limiter_tower::{ConstantKey, QuotaLayer};
/// use tower::Layer;
///
/// let handler = tower::service_fn(|_req: http::Request<String>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(String::from("ok")))
/// });
/// let service = QuotaLayer::new(MyQuota, ConstantKey::new("all")).layer(handler);
/// # let _ = service;
/// ```
#[derive(Debug)]
pub struct QuotaService<S, H, K> {
    inner: S,
    shared: Arc<Shared<H, K>>,
}

impl<S: Clone, H, K> Clone for QuotaService<S, H, K> {
    fn clone(&self) -> Self {
        QuotaService {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, H, K, ReqB, ResB> Service<Request<ReqB>> for QuotaService<S, H, K>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    H: QuotaHook,
    K: KeyExtractor<ReqB>,
    ReqB: Send + 'static,
    ResB: Body + Send + 'static,
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
            let refusal = |r: LimitRejection| -> Result<Self::Response, S::Error> {
                Ok(rendered(&*shared.renderer, &r))
            };
            let Some(key) = shared.key.key(&req) else {
                if mode == Mode::Enforce {
                    return refusal(LimitRejection::NoKey);
                }
                return Ok(shadow(
                    &shared,
                    inner.call(req).await?,
                    LimitRejection::NoKey,
                ));
            };
            let overlap = shared.overlap && mode == Mode::Enforce && !shared.refused.contains(&key);
            let mut checking = start_check(&shared.hook, key.clone());
            if !overlap {
                return match checking.await {
                    Ok(settle) => Ok(settled(inner.call(req).await?, settle)),
                    Err(d) if mode == Mode::Enforce => {
                        shared.refused.remember(&key, d.retry_after);
                        refusal(exhausted(d))
                    }
                    Err(d) => Ok(shadow(&shared, inner.call(req).await?, exhausted(d))),
                };
            }
            let open = Pending::add(&mut req);
            let served = inner.call(req);
            tokio::pin!(served);
            tokio::select! {
                biased;
                out = &mut checking => match out {
                    Ok(settle) => {
                        let _ = open.send(());
                        Ok(settled(served.await?, settle))
                    }
                    // `served` drops here, and with it what the layers inside took.
                    Err(d) => {
                        shared.refused.remember(&key, d.retry_after);
                        refusal(exhausted(d))
                    }
                },
                // Answered before the gate opened: refused inside (or failed). Whatever the
                // spend took goes back once it answers (`checking` dropped).
                resp = &mut served => Ok(resp?.map(LimitBody::new)),
            }
        })
    }
}

fn exhausted(d: QuotaDenied) -> LimitRejection {
    LimitRejection::QuotaExhausted {
        retry_after: d.retry_after,
    }
}

/// Shadow mode's answer to a refused check: the request served anyway, marked and counted.
fn shadow<H, K, B>(
    shared: &Shared<H, K>,
    resp: Response<B>,
    r: LimitRejection,
) -> Response<LimitBody<B>> {
    shared.handle.count_shadow_refusal("quota", r.code());
    let mut resp = resp.map(LimitBody::new);
    mark_shadow(&mut resp, r.code());
    resp
}
