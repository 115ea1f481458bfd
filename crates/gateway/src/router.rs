//! The gateway service: establishes the identity, picks the request's route and runs it through
//! that route's limits, then the proxy.
//!
//! Each route gets its own stack of limiter-tower layers, outermost first: the per-address
//! window (cheap refusals before anything else), the per-user window, the daily quota, then
//! admission in the route's class (the slot is held until the app's response body ends, so a
//! streamed answer keeps it). The windows are checked, and the quota spends, while the request
//! waits for its slot, a gate inside admission holding the request until both answered; a
//! refusal by either drops what the others took (a spend is given back, a slot freed). A client
//! its windows refuse from their local cache, and a user this replica saw refused by the quota,
//! are checked first instead, so a client known to be over its limit takes nothing else. Each
//! layer has a `LimitHandle` of its own (all in shadow mode when the route says so), so runtime
//! limits can switch and adjust them one by one (`runtime.rs`). Every route's admission draws
//! from one fleet-wide queue, so classes compete in priority order.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use futures_util::future::BoxFuture;
use http::{HeaderName, Method, Request, Response};
use ipnet::IpNet;
use limiter_core::{Admission, LimiterError, RedisHandle, WindowPolicy};
use limiter_tower::{
    AdmissionLayer, ClientIpKey, GateLayer, HeaderKey, LimitBody, LimitHandle, Mode,
    SlidingWindowLayer, WindowsLayer,
};
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

use crate::admin::Admin;
use crate::breaker::AppBreaker;
use crate::identity::IdentityResolver;
use crate::policy::{Policy, RoutePolicy};
use crate::problem::GatewayProblem;
use crate::proxy::Proxy;
use crate::quota::{QuotaStore, RouteQuota};
use crate::routes::{PathPattern, RouteMatch, first_match};
use crate::runtime::{RouteHandles, RuntimeLimits};

/// A route's whole stack, boxed so that every route has one type.
type RouteService = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// What a layer's response body becomes: one body type for every stack.
fn unify(resp: Response<LimitBody<Body>>) -> Response<Body> {
    resp.map(Body::new)
}

/// What the route stacks are built from.
#[derive(Debug, Clone)]
pub struct RouteDeps {
    /// Limit state.
    pub redis: RedisHandle,
    /// The fleet-wide admission queue (when the policy has `[admission]`).
    pub admission: Option<Admission>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// The proxy to the app (through the breaker, if any).
    pub proxy: Proxy,
    /// The breaker on the app, checked before the limits.
    pub breaker: Option<AppBreaker>,
    /// The daily quotas' store (when a route has one).
    pub quota: Option<QuotaStore>,
}

struct Route {
    matcher: RouteMatch,
    needs_user: bool,
    handles: RouteHandles,
    service: RouteService,
}

impl Route {
    /// Whether an anonymous request is refused: some layer keyed by user enforces. In shadow or
    /// off they let it through (shadow layers mark it).
    fn refuses_anonymous(&self, r: &RoutePolicy) -> bool {
        let enforcing = |h: &LimitHandle| h.mode() == Mode::Enforce;
        (r.per_user_per_min.is_some() && enforcing(&self.handles.user_window))
            || (r.daily_quota.is_some() && enforcing(&self.handles.quota))
            || (r.class.is_some() && enforcing(&self.handles.admission))
    }
}

/// The gateway: a tower service over every request.
#[derive(Clone)]
pub struct Gateway {
    identity: IdentityResolver,
    routes: Arc<[Route]>,
    policies: Arc<[RoutePolicy]>,
    /// `None`: unmatched requests are refused (404).
    fallback: Option<Proxy>,
    /// The breaker's mode for requests no route matches (the `*` scope's).
    fallback_breaker: LimitHandle,
    breaker: Option<AppBreaker>,
    /// The admin endpoint, once attached.
    admin: Option<Arc<Admin>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("routes", &self.routes.len())
            .field("refuse_unmatched", &self.fallback.is_none())
            .finish()
    }
}

fn route_stack(
    index: usize,
    r: &RoutePolicy,
    deps: &RouteDeps,
    user_header: &HeaderName,
    queue_timeout: Duration,
) -> Result<(RouteService, RouteHandles), LimiterError> {
    // One handle per layer, so that each can be switched on its own at runtime; a shadow route
    // starts with all of them in shadow.
    let mut handles = RouteHandles::new(if r.shadow {
        Mode::Shadow
    } else {
        Mode::Enforce
    });
    // Names are part of the Redis keys and of `RateLimit-Policy`: the route's position keeps two
    // routes on one path (different methods) apart.
    let name = |what: &str| format!("route{index}-{what}");
    let minute = Duration::from_secs(60);
    // Built inside out: the proxy, the gate where a request waits for the checks started
    // alongside the layers outside it, admission, the quota, then the windows.
    let proxy = deps.proxy.with_breaker_mode(handles.breaker.clone());
    let mut svc: RouteService = BoxCloneSyncService::new(proxy);
    let admitted = r.class.is_some() && deps.admission.is_some();
    let windowed = r.per_ip_per_min.is_some() || r.per_user_per_min.is_some();
    // The windows overlap whatever works inside them; with nothing there, there is nothing to
    // overlap (the gate sits in front of the app itself).
    let overlap_windows = windowed && (admitted || r.daily_quota.is_some());
    let overlap_quota = admitted && r.daily_quota.is_some();
    if overlap_windows || overlap_quota {
        svc = BoxCloneSyncService::new(GateLayer::default().layer(svc).map_response(unify));
    }
    let quota = match r.daily_quota {
        Some(limit) => {
            let store = deps.quota.clone().ok_or_else(|| {
                LimiterError::InvalidArgument(format!(
                    "routes[{index}].daily_quota: no database to keep quotas in"
                ))
            })?;
            let quota = RouteQuota::new(store, &r.name(), limit);
            handles.quota_limit = Some(quota.limit_cell());
            let layer = quota
                .layer(user_header.clone())
                .handle(handles.quota.clone());
            // With admission, the spend runs while the request waits for its slot.
            Some(if overlap_quota {
                layer.overlapping().0
            } else {
                layer
            })
        }
        None => None,
    };
    if let (Some(class), Some(admission)) = (&r.class, &deps.admission) {
        let layer = AdmissionLayer::new(
            admission.clone(),
            class,
            HeaderKey::new(user_header.clone()),
        )?
        .queue_timeout(queue_timeout)
        .handle(handles.admission.clone());
        svc = BoxCloneSyncService::new(layer.layer(svc).map_response(unify));
    }
    if let Some(layer) = quota {
        svc = BoxCloneSyncService::new(layer.layer(svc).map_response(unify));
    }
    // Both windows at once: one round trip to Redis for the two. The per-address window is
    // added first, so its refusal is the one a client sees when both refuse.
    let mut windows = WindowsLayer::<Body>::new();
    if let Some(n) = r.per_ip_per_min {
        let key = ClientIpKey::behind(deps.trusted_proxies.iter().copied())
            .peer_from(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()));
        let policy = WindowPolicy::new(name("ip"), n, minute);
        let layer = SlidingWindowLayer::new(deps.redis.clone(), policy, key)?
            .handle(handles.ip_window.clone());
        windows = windows.window(&layer);
    }
    if let Some(n) = r.per_user_per_min {
        let policy = WindowPolicy::new(name("user"), n, minute);
        let layer = SlidingWindowLayer::new(
            deps.redis.clone(),
            policy,
            HeaderKey::new(user_header.clone()),
        )?
        .handle(handles.user_window.clone());
        windows = windows.window(&layer);
    }
    if overlap_windows {
        windows = windows.overlapping().0;
    }
    if !windows.is_empty() {
        svc = BoxCloneSyncService::new(windows.layer(svc).map_response(unify));
    }
    Ok((svc, handles))
}

impl Gateway {
    /// Builds every route's stack from a checked `policy`.
    pub fn new(
        policy: &Policy,
        identity: IdentityResolver,
        deps: &RouteDeps,
    ) -> Result<Gateway, LimiterError> {
        let queue_timeout = policy
            .admission
            .as_ref()
            .map_or(Duration::from_secs(60), |a| {
                Duration::from_millis(a.queue_timeout_ms)
            });
        let mut routes = Vec::with_capacity(policy.routes.len());
        for (i, r) in policy.routes.iter().enumerate() {
            let method = match &r.method {
                Some(m) => Some(Method::from_bytes(m.as_bytes()).map_err(|_| {
                    LimiterError::InvalidArgument(format!("routes[{i}].method: {m:?}"))
                })?),
                None => None,
            };
            let path = PathPattern::parse(&r.path).map_err(LimiterError::InvalidArgument)?;
            let (service, handles) = route_stack(i, r, deps, identity.header(), queue_timeout)?;
            routes.push(Route {
                matcher: RouteMatch::new(method, path),
                needs_user: r.needs_user(),
                handles,
                service,
            });
        }
        let fallback_breaker = LimitHandle::new();
        Ok(Gateway {
            identity,
            routes: routes.into(),
            policies: policy.routes.clone().into(),
            fallback: (!policy.default.refuse)
                .then(|| deps.proxy.with_breaker_mode(fallback_breaker.clone())),
            fallback_breaker,
            breaker: deps.breaker.clone(),
            admin: None,
        })
    }

    /// The runtime switches of every route and of unmatched requests, for applying runtime
    /// limits.
    pub(crate) fn runtime_targets(&self, admission: Option<Admission>) -> RuntimeLimits {
        let routes = self
            .routes
            .iter()
            .zip(self.policies.iter())
            .map(|(r, p)| (p.clone(), r.handles.clone()))
            .collect();
        RuntimeLimits::new(routes, self.fallback_breaker.clone(), admission)
    }

    /// Answers the admin path with `admin` instead of proxying it.
    pub(crate) fn with_admin(mut self, admin: Admin) -> Gateway {
        self.admin = Some(Arc::new(admin));
        self
    }

    /// How callers are identified.
    pub fn identity(&self) -> &IdentityResolver {
        &self.identity
    }
}

impl Service<Request<Body>> for Gateway {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        if let Some(admin) = &self.admin
            && req.uri().path() == admin.path()
        {
            let admin = Arc::clone(admin);
            return Box::pin(async move { Ok(admin.handle(req).await) });
        }
        let user = self.identity.apply(&mut req);
        let found = first_match(
            self.routes.iter().map(|r| &r.matcher),
            req.method(),
            req.uri().path(),
        );
        let breaker_mode = match found {
            Some(i) => self.routes[i].handles.breaker.mode(),
            None => self.fallback_breaker.mode(),
        };
        // An open breaker refuses before the limits: no quota spent, no slot taken.
        if breaker_mode == Mode::Enforce
            && let Some(refused) = self.breaker.as_ref().and_then(AppBreaker::refusal)
        {
            return Box::pin(async { Ok(refused) });
        }
        let service = match found {
            Some(i) => {
                let route = &self.routes[i];
                // A route whose user-keyed layers do not enforce refuses nothing, not even an
                // anonymous request: shadow layers mark it.
                if route.needs_user && user.is_none() && route.refuses_anonymous(&self.policies[i])
                {
                    return Box::pin(async { Ok(GatewayProblem::Unauthorized.response()) });
                }
                route.service.clone()
            }
            None => match &self.fallback {
                Some(proxy) => BoxCloneSyncService::new(proxy.clone()),
                None => return Box::pin(async { Ok(GatewayProblem::NotFound.response()) }),
            },
        };
        Box::pin(async move {
            let resp = service.oneshot(req).await?;
            Ok(crate::tunnel::hold_while_open(resp))
        })
    }
}
