//! [`app`] builds the router of one replica; [`run`] serves it until a shutdown future resolves,
//! then drains: readiness turns false, waiters are answered, running requests finish within the
//! grace period, and every slot of this replica is released in Redis before `run` returns.
//!
//! Each accepted connection holds one of `FLEETGATE_HTTP_MAX_CONNECTIONS` permits (at the cap the
//! listener stops accepting until one closes) and is served through
//! `connection::GuardedIo`, which enforces the idle, header and write-stall timeouts.

pub mod client_ip;
pub(crate) mod connection;
pub mod json;
pub mod middleware;
pub mod request_id;

use std::any::Any;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::Listener;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::error::ApiError;
use crate::limits::admission::RouteClass;
use crate::routes::parsed::{Checked, read_first};
use crate::routes::{chat, export, health, metrics, openapi, pages, probes, research};
use crate::server::middleware::{count_requests, require_user, resolve_client_ip};
use crate::state::AppState;

/// The limit layers the user routes are built with. The service always builds [`Limits::ALL`];
/// the benchmarks leave layers out to measure what they cost ([`crate::bench_support`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The per-IP sliding window of the route's class.
    pub window: bool,
    /// The daily quota (chat).
    pub quota: bool,
    /// A slot from the fleet-wide admission queue.
    pub admission: bool,
}

impl Limits {
    /// Every limit: the service.
    pub const ALL: Limits = Limits {
        window: true,
        quota: true,
        admission: true,
    };
    /// None (authentication and the outer layers stay).
    pub const NONE: Limits = Limits {
        window: false,
        quota: false,
        admission: false,
    };
}

/// The router of one replica.
pub fn app(state: AppState) -> Router {
    app_with(state, Limits::ALL)
}

/// A user route: auth, the per-IP window of its class, the body read and checked, admission
/// (the last `route_layer` runs first). `route_layer` keeps them all off
/// unmatched paths and methods.
fn user_route<T: Checked>(
    state: &AppState,
    limits: Limits,
    path: &str,
    class: RouteClass,
    handler: axum::routing::MethodRouter<AppState>,
) -> Router<AppState> {
    let mut route = Router::new().route(path, handler);
    if class == RouteClass::Chat {
        // The chat route spends its quota and takes its slot itself (see `ChatLimits`).
        route = route.route_layer(axum::Extension(chat::ChatLimits {
            quota: limits.quota,
            admission: limits.admission,
        }));
    } else if limits.admission {
        route = route.route_layer(state.admission(class).clone());
    }
    route = route.route_layer(from_fn_with_state(state.clone(), read_first::<T>));
    if limits.window {
        route = route.route_layer(state.ip_limit(class).clone());
    }
    route.route_layer(from_fn_with_state(state.clone(), require_user))
}

/// The router of one replica with the limit layers `limits` names.
pub fn app_with(state: AppState, limits: Limits) -> Router {
    let user_routes = Router::new()
        .merge(user_route::<chat::ChatBody>(
            &state,
            limits,
            "/api/chat",
            RouteClass::Chat,
            post(chat::chat),
        ))
        .merge(user_route::<research::ResearchBody>(
            &state,
            limits,
            "/api/research",
            RouteClass::Research,
            post(research::research),
        ))
        .merge(user_route::<export::ExportBody>(
            &state,
            limits,
            "/api/export",
            RouteClass::Export,
            post(export::export),
        ));
    // The browser pages (chat and admin console) use the API above like any other client.
    with_common(user_routes.merge(pages::router()), state)
}

/// The user routes plus everything around them: the public routes, the fallback and the outer
/// layers.
fn with_common(user_routes: Router<AppState>, state: AppState) -> Router {
    let max_body = state.config().http.max_body_bytes;
    user_routes
        .route(
            "/api/system-health",
            get(health::get_health).post(health::post_health),
        )
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/api/openapi.json", get(openapi::openapi_json))
        .route("/metrics", get(metrics::metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(from_fn_with_state(state.clone(), resolve_client_ip))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(from_fn_with_state(state.clone(), count_requests))
        // Inside the request-id layers (the span carries the id), outside everything else.
        .layer(axum::middleware::from_fn(crate::telemetry::observe_request))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(axum::middleware::from_fn(
            crate::server::request_id::sanitize_request_id,
        ))
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!(
        "no route for {}",
        uri.path().chars().take(200).collect::<String>()
    ))
}

fn panic_response(err: Box<dyn Any + Send + 'static>) -> Response {
    let msg = err
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| err.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into());
    ApiError::Internal(format!("handler panicked: {msg}")).into_response()
}

/// Serves `state` on `listener` until `shutdown` resolves, then drains (see the module doc).
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = Duration::from_millis(state.config().server.shutdown_grace_ms);
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let (stop_accepting, stop_rx) = tokio::sync::watch::channel(false);
    let st = state.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutdown: readiness false, refusing new requests, draining");
        st.begin_shutdown();
        // Waiters are answered now (503, retry elsewhere); running requests keep their slots.
        st.gate().close().await;
        // Lame duck: keep answering on open connections for a moment, every response with
        // `Connection: close` (see `count_requests`), so clients drop their pooled connections
        // after a reply instead of sending on one the server is about to close.
        tokio::time::sleep(grace.min(Duration::from_millis(500))).await;
        // Stop accepting (new connections are refused: a client or balancer retries those
        // elsewhere) a moment before closing idle connections, so one accepted just before has
        // sent its request and is served, not closed unanswered.
        let _ = stop_accepting.send(true);
        tokio::time::sleep(grace.min(Duration::from_millis(100))).await;
        let _ = signalled_tx.send(());
    };
    let h = &state.config().http;
    // This replica's record in the admin console's fleet view, for as long as it serves.
    let publisher = listener
        .local_addr()
        .ok()
        .map(|addr| crate::admin::fleet_status::Publisher::spawn(state.clone(), addr));
    let listener = StopAccepting {
        listener: Some(listener),
        draining: None,
        stop: stop_rx,
        permits: Arc::new(Semaphore::new(h.max_connections)),
        limits: connection::ConnLimits {
            header: Duration::from_millis(h.header_timeout_ms),
            idle: Duration::from_millis(h.idle_timeout_ms),
            write: Duration::from_millis(h.write_timeout_ms),
            body: Duration::from_millis(h.body_timeout_ms),
        },
        at_cap_logged: None,
    };
    let service = app(state.clone())
        .layer(axum::middleware::from_fn(connection::track_request))
        .into_make_service_with_connect_info::<connection::ConnInfo>();
    let server = axum::serve(listener, service)
        .with_graceful_shutdown(signal)
        .into_future();
    let grace_over = async move {
        if signalled_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let result = tokio::select! {
        r = server => r,
        () = grace_over => {
            tracing::warn!(?grace, "grace period over with requests still running");
            Ok(())
        }
    };
    if let Some(p) = publisher {
        p.stop(&state).await;
    }
    let released = state.gate().shutdown(Duration::from_secs(5)).await;
    if !released {
        tracing::warn!(
            outstanding = state.gate().outstanding(),
            "some slots were not released; their lease TTL frees them"
        );
    }
    result
}

/// A listener that stops accepting, and closes its socket, when `stop` turns true (axum's own
/// stops only when connections are told to shut down, at the same moment); that accepts only
/// while a connection permit is free; and that hands out guarded sockets.
pub struct StopAccepting {
    listener: Option<TcpListener>,
    /// Stopping: the connections the kernel already queued are taken before the socket closes
    /// (their handshake is done, so closing would reset them, requests and all).
    draining: Option<std::net::TcpListener>,
    stop: tokio::sync::watch::Receiver<bool>,
    /// One per open connection (`FLEETGATE_HTTP_MAX_CONNECTIONS`).
    permits: Arc<Semaphore>,
    limits: connection::ConnLimits,
    /// When the cap was last reported (once a minute at most).
    at_cap_logged: Option<tokio::time::Instant>,
}

impl std::fmt::Debug for StopAccepting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopAccepting")
            .field("free_permits", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl StopAccepting {
    /// Waits for a connection permit (logging, at most once a minute, that the cap is reached).
    async fn permit(&mut self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if let Ok(p) = Arc::clone(&self.permits).try_acquire_owned() {
            return Some(p);
        }
        let now = tokio::time::Instant::now();
        if self
            .at_cap_logged
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
        {
            self.at_cap_logged = Some(now);
            tracing::warn!(
                "connection cap reached (FLEETGATE_HTTP_MAX_CONNECTIONS): not accepting until one closes"
            );
        }
        Arc::clone(&self.permits).acquire_owned().await.ok()
    }
}

impl Listener for StopAccepting {
    type Io = connection::GuardedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            if let Some(queued) = &self.draining {
                // A plain non-blocking accept(2): the runtime's readiness may not know yet of a
                // connection the kernel has queued. Taken even at the cap: refusing them now
                // would reset them.
                match queued.accept() {
                    Ok((conn, addr)) => {
                        if conn.set_nonblocking(true).is_ok()
                            && let Ok(conn) = tokio::net::TcpStream::from_std(conn)
                        {
                            let permit = Arc::clone(&self.permits).try_acquire_owned().ok();
                            return (connection::GuardedIo::new(conn, self.limits, permit), addr);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.draining = None,
                    Err(e) if is_connection_error(&e) => {}
                    Err(_) => self.draining = None,
                }
                continue;
            }
            if self.listener.is_none() {
                return std::future::pending().await;
            }
            let mut stop = self.stop.clone();
            let permit = tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => None,
                p = self.permit() => p,
            };
            let Some(listener) = self.listener.as_ref() else {
                return std::future::pending().await;
            };
            let accepted = match permit {
                None => None,
                Some(permit) => tokio::select! {
                    biased;
                    _ = self.stop.wait_for(|stop| *stop) => None,
                    r = listener.accept() => Some(r.map(|(c, a)| (c, a, permit))),
                },
            };
            match accepted {
                None => {
                    self.draining = self.listener.take().and_then(|l| l.into_std().ok());
                }
                Some(Ok((conn, addr, permit))) => {
                    return (
                        connection::GuardedIo::new(conn, self.limits, Some(permit)),
                        addr,
                    );
                }
                // Per-connection errors (the peer gave up) say nothing about the listener; others
                // (out of file descriptors) pass with time: retry after a pause, as axum does.
                Some(Err(e)) => {
                    if !is_connection_error(&e) {
                        tracing::error!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        match (&self.listener, &self.draining) {
            (Some(l), _) => l.local_addr(),
            (None, Some(l)) => l.local_addr(),
            (None, None) => Err(std::io::Error::other("listener closed")),
        }
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Connections the kernel queued before the stop are handed over, not reset by the close;
    /// after them the socket is closed and new connections are refused. (With axum's listener
    /// dropped at the stop, a hammered replica reset 2-16 connections per shutdown.)
    #[tokio::test]
    async fn stopping_hands_over_queued_connections_then_refuses() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let limit = Duration::from_secs(30);
        let mut l = StopAccepting {
            listener: Some(listener),
            draining: None,
            stop,
            permits: Arc::new(Semaphore::new(100)),
            limits: connection::ConnLimits {
                header: limit,
                idle: limit,
                write: limit,
                body: limit,
            },
            at_cap_logged: None,
        };
        // Handshakes the kernel completes while nobody accepts: queued.
        let mut clients = Vec::new();
        for _ in 0..5 {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(b"ping").await.unwrap();
            clients.push(c);
        }
        stop_tx.send(true).unwrap();
        for _ in 0..5 {
            let (mut conn, _) = tokio::time::timeout(Duration::from_secs(5), l.accept())
                .await
                .expect("a queued connection was not handed over");
            let mut buf = [0u8; 4];
            conn.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
            conn.write_all(b"pong").await.unwrap();
        }
        for mut c in clients {
            let mut buf = [0u8; 4];
            c.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"pong", "answered, not reset");
        }
        // Queue empty: the socket closes and accept never returns again.
        let more = tokio::time::timeout(Duration::from_millis(200), l.accept()).await;
        assert!(more.is_err(), "nothing left to accept");
        assert!(l.local_addr().is_err(), "socket closed");
        let refused = tokio::net::TcpStream::connect(addr).await;
        assert_eq!(
            refused.err().map(|e| e.kind()),
            Some(std::io::ErrorKind::ConnectionRefused)
        );
    }
}
