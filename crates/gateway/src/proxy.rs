//! The streaming reverse proxy: a request goes to the app over hyper-util's pooled HTTP/1.1
//! client with its body streamed through, and the app's response comes back the same way, frame
//! by frame (an SSE answer reaches the client as the app writes it; nothing is buffered).
//!
//! Headers follow RFC 9110 §7.6.1: the hop-by-hop fields (`Connection` and every field it names,
//! `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`) describe one
//! connection and are dropped in both directions. `X-Forwarded-For` gets the peer appended,
//! `X-Forwarded-Proto` and `X-Forwarded-Host` say what the client asked for (kept from a trusted
//! proxy, else set here). The app's failures become 502/504 problems without their text.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use futures_util::future::BoxFuture;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ipnet::IpNet;
use limiter_tower::{LimitHandle, Mode};
use tower::Service;

use crate::breaker::AppBreaker;
use crate::problem::GatewayProblem;
use crate::tunnel;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Fields that are hop-by-hop whether or not `Connection` names them.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes the hop-by-hop fields of RFC 9110 §7.6.1 (the fixed ones and those `Connection`
/// names).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Whether the client asks to switch protocols (WebSocket, passed through; h2c, refused).
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        || headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The reverse proxy to one app, as a tower service that never fails (failures are responses).
#[derive(Debug, Clone)]
pub struct Proxy {
    client: Client<HttpConnector, Body>,
    /// Scheme and authority of the app.
    upstream: Uri,
    /// The app's base path without its trailing `/` (empty for `/`).
    base_path: String,
    first_byte_timeout: Duration,
    trusted: Vec<IpNet>,
    /// The breaker on the app, if any.
    breaker: Option<AppBreaker>,
    /// The breaker's mode for the route this proxy serves (enforce when `None`): in shadow an
    /// open breaker marks the request instead of refusing it; off bypasses it.
    breaker_mode: Option<LimitHandle>,
}

impl Proxy {
    /// A proxy to `upstream` (an `http://` URL; its path, if any, is prepended to every request
    /// path), answering 504 when the app sends no response head within `first_byte_timeout`.
    /// `X-Forwarded-Proto`/`-Host` from peers in `trusted` are kept.
    pub fn new(upstream: &Uri, first_byte_timeout: Duration, trusted: Vec<IpNet>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(first_byte_timeout));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let mut parts = upstream.clone().into_parts();
        let base_path = parts
            .path_and_query
            .take()
            .map(|p| p.path().trim_end_matches('/').to_string())
            .unwrap_or_default();
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
        Proxy {
            client,
            upstream: Uri::from_parts(parts).unwrap_or_else(|_| upstream.clone()),
            base_path,
            first_byte_timeout,
            trusted,
            breaker: None,
            breaker_mode: None,
        }
    }

    /// Every call to the app goes through `breaker`.
    pub fn with_breaker(mut self, breaker: AppBreaker) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// The same proxy, its breaker in the mode `handle` says (read at each request).
    pub fn with_breaker_mode(&self, handle: LimitHandle) -> Self {
        Proxy {
            breaker_mode: Some(handle),
            ..self.clone()
        }
    }

    fn target(&self, uri: &Uri) -> Option<Uri> {
        let pq = uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let mut parts = self.upstream.clone().into_parts();
        parts.path_and_query = Some(format!("{}{pq}", self.base_path).parse().ok()?);
        Uri::from_parts(parts).ok()
    }

    /// Rewrites the client's request into the app's.
    fn forward_headers(&self, headers: &mut HeaderMap, peer: Option<IpAddr>) {
        let trusted_peer = peer.is_some_and(|p| self.trusted.iter().any(|n| n.contains(&p)));
        strip_hop_by_hop(headers);
        if let Some(peer) = peer {
            // One list: the values received, then the peer.
            let mut list: Vec<String> = headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_string))
                .collect();
            list.push(peer.to_string());
            if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
                headers.insert(X_FORWARDED_FOR, v);
            }
        }
        if !trusted_peer || !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        }
        let host = headers.remove(header::HOST);
        if !trusted_peer || !headers.contains_key(&X_FORWARDED_HOST) {
            headers.remove(&X_FORWARDED_HOST);
            if let Some(h) = host {
                headers.insert(X_FORWARDED_HOST, h);
            }
        }
    }

    async fn forward(self, mut req: Request<Body>) -> Response<Body> {
        let upgrade = if is_upgrade(req.headers()) {
            if !tunnel::is_websocket(req.headers()) {
                return GatewayProblem::UpgradeNotSupported.response();
            }
            Some(tunnel::client_side(&mut req))
        } else {
            None
        };
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let Some(target) = self.target(req.uri()) else {
            return GatewayProblem::NotFound.response();
        };
        *req.uri_mut() = target;
        // The client speaks HTTP/1.1 to the app whatever the client spoke to us.
        *req.version_mut() = Version::HTTP_11;
        self.forward_headers(req.headers_mut(), peer);
        if upgrade.is_some() {
            tunnel::restore_request_headers(req.headers_mut());
        }
        let mode = self
            .breaker_mode
            .as_ref()
            .map_or(Mode::Enforce, LimitHandle::mode);
        match (&self.breaker, mode) {
            (Some(b), Mode::Enforce) => b.call(false, self.send(req, upgrade)).await,
            (Some(b), Mode::Shadow) => b.call(true, self.send(req, upgrade)).await,
            _ => self.send(req, upgrade).await,
        }
    }

    /// Sends the rewritten request; the app's failures become the gateway's 502/504.
    async fn send(&self, req: Request<Body>, upgrade: Option<OnUpgrade>) -> Response<Body> {
        match tokio::time::timeout(self.first_byte_timeout, self.client.request(req)).await {
            Err(_) => {
                tracing::warn!(upstream = %self.upstream, "app sent no response head in time");
                GatewayProblem::GatewayTimeout.response()
            }
            Ok(Err(e)) => {
                tracing::warn!(upstream = %self.upstream, error = %e, "app unreachable");
                GatewayProblem::BadGateway.response()
            }
            Ok(Ok(resp)) if let Some(client) = upgrade => tunnel::answer(client, resp),
            Ok(Ok(resp)) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, Body::new(body))
            }
        }
    }
}

impl Service<Request<Body>> for Proxy {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.forward(req).await) })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hop_by_hop_fields_go_and_end_to_end_ones_stay() {
        let mut h = HeaderMap::new();
        for n in HOP_BY_HOP {
            h.insert(n, "x".parse().unwrap());
        }
        h.insert("connection", "close, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("content-type", "text/plain".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("content-type"));
    }

    #[test]
    fn target_keeps_path_and_query_under_the_base() {
        let p = Proxy::new(
            &"http://127.0.0.1:3000/app/".parse().unwrap(),
            Duration::from_secs(1),
            Vec::new(),
        );
        let t = p.target(&"/api/chat?x=1".parse().unwrap()).unwrap();
        assert_eq!(t.to_string(), "http://127.0.0.1:3000/app/api/chat?x=1");
    }
}
