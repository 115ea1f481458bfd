//! [`GateLayer`]: where a request waits for checks that an outer layer started alongside the
//! layers in between. A [`crate::QuotaLayer`] built with [`crate::QuotaLayer::overlapping`]
//! spends while the request waits for its admission slot, instead of before it: the request's
//! latency is the longer of the two round trips, not their sum. The gate, placed inside the
//! admission layer, holds the request until the spend has answered; a refused spend drops the
//! whole inner future (the slot or the queue place with it) without ever opening the gate.

use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{Request, Response};
use tokio::sync::oneshot;
use tower::{Layer, Service};

use crate::reject::rendered;
use crate::{LimitBody, LimitRejection, ProblemJson};

/// The checks a request must pass at the gate, one receiver each (a request extension, which
/// must be `Clone`: the receivers are shared, and the gate takes them out).
#[derive(Debug, Clone, Default)]
pub(crate) struct Pending(Arc<Mutex<Vec<oneshot::Receiver<()>>>>);

impl Pending {
    /// Adds a check to `req`'s; the returned sender opens it.
    pub(crate) fn add<B>(req: &mut Request<B>) -> oneshot::Sender<()> {
        let (tx, rx) = oneshot::channel();
        let pending = req.extensions_mut().get_or_insert_default::<Pending>();
        pending
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(rx);
        tx
    }

    fn take(self) -> Vec<oneshot::Receiver<()>> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Holds each request until every check started for it outside has passed (see the module
/// docs); a request without such checks goes straight through.
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
/// use tower::ServiceBuilder;
///
/// let (quota, gate) = QuotaLayer::new(MyQuota, ConstantKey::new("all")).overlapping();
/// let handler = tower::service_fn(|_req: http::Request<String>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(String::from("ok")))
/// });
/// // quota → (an admission layer here) → gate → handler
/// let service = ServiceBuilder::new().layer(quota).layer(gate).service(handler);
/// # let _ = service;
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct GateLayer {
    _private: (),
}

impl GateLayer {
    pub(crate) fn new() -> Self {
        GateLayer { _private: () }
    }
}

impl<S> Layer<S> for GateLayer {
    type Service = GateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GateService { inner }
    }
}

/// The service of a [`GateLayer`].
#[derive(Debug, Clone)]
pub struct GateService<S> {
    inner: S,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for GateService<S>
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
        let pending = req.extensions_mut().remove::<Pending>();
        Box::pin(async move {
            for check in pending.map(Pending::take).unwrap_or_default() {
                if check.await.is_err() {
                    // Its sender went without opening: the check's layer is gone. Never pass.
                    let r = LimitRejection::Unavailable {
                        retry_after: Duration::from_secs(1),
                    };
                    return Ok(rendered(&ProblemJson::default(), &r));
                }
            }
            Ok(inner.call(req).await?.map(LimitBody::new))
        })
    }
}
