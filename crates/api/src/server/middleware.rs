//! The middlewares that read the replica's state: client address, user authentication, request
//! counters. Kept apart from what they use (resolver, verifier, counters) so that the state can
//! hold those without depending on the middlewares.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::{AuthUser, bearer};
use crate::error::ApiError;
use crate::server::client_ip::ClientIp;
use crate::state::AppState;

/// Middleware: stores the [`ClientIp`] (from the connection's peer address) in the extensions, or
/// answers 400 when a trusted proxy's `X-Forwarded-For` cannot be read.
pub async fn resolve_client_ip(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    match state.client_ip().resolve(peer, req.headers()) {
        Ok(ip) => {
            req.extensions_mut().insert(ClientIp(ip));
            next.run(req).await
        }
        Err(e) => {
            tracing::debug!(%peer, error = %e, "X-Forwarded-For refused");
            ApiError::InvalidRequest(e.to_string()).into_response()
        }
    }
}

/// Middleware: verifies the JWT and stores the [`AuthUser`] in the request extensions.
pub async fn require_user(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    // Logged under `api::auth`, the module that owns authentication, so `RUST_LOG=api::auth=debug`
    // shows why tokens are refused wherever this middleware lives.
    let span = tracing::info_span!(
        target: "api::auth",
        "auth",
        fleetgate.auth.outcome = tracing::field::Empty
    );
    let user = span.in_scope(|| match bearer(req.headers()) {
        Ok(Some(token)) => match state.jwt().verify(token) {
            Ok(claims) => Ok(AuthUser {
                pseudonym: state.pseudonymizer().pseudonym(&claims.sub),
                id: claims.sub,
            }),
            Err(e) => {
                tracing::debug!(target: "api::auth", reason = %e, "token refused");
                Err(ApiError::Unauthorized("invalid or expired token"))
            }
        },
        Ok(None) => Err(ApiError::Unauthorized("a bearer token is required")),
        Err(e) => Err(e),
    });
    let user = match user {
        Ok(u) => {
            span.record("fleetgate.auth.outcome", "ok");
            // Every later line of the request names the user by pseudonym, never by id.
            tracing::Span::current().record("user", u.pseudonym.as_str());
            u
        }
        Err(e) => {
            span.record("fleetgate.auth.outcome", "refused");
            return e.into_response();
        }
    };
    drop(span);
    req.extensions_mut().insert(user);
    next.run(req).await
}

/// Middleware counting every response by class.
pub async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let stats = state.request_stats();
    let _running = stats.start();
    let mut resp = next.run(req).await;
    if state.is_shutting_down() {
        // Draining: this connection is not reused (see `crate::run`).
        resp.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    stats.answered(resp.status());
    resp
}
