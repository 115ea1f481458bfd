//! WebSocket upgrades, passed through: the client's `Upgrade: websocket` request goes to the app
//! with its upgrade headers (hop-by-hop, so re-added after the others are dropped); when the app
//! answers 101, both connections are upgraded and bytes are copied both ways until either side
//! closes. Other upgrades (h2c) are still refused with 501.
//!
//! The admission slot (and whatever else a route's layers hold until the response body ends)
//! must last as long as the tunnel, but a 101 response has no body to hold it: the gateway takes
//! the layers' body off the 101 and drops it only when the tunnel closes ([`hold_while_open`]).

use axum::body::Body;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use crate::proxy::strip_hop_by_hop;

/// On a 101 response while its tunnel is open; closed (the sender dropped) when it ends.
#[derive(Debug, Clone)]
struct TunnelOpen(watch::Receiver<()>);

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether the request asks for a WebSocket (`Connection: upgrade` and `Upgrade: websocket`).
pub(crate) fn is_websocket(headers: &HeaderMap) -> bool {
    has_token(headers, header::CONNECTION, "upgrade")
        && has_token(headers, header::UPGRADE, "websocket")
}

fn ask_upgrade(headers: &mut HeaderMap) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

/// Takes the client's side of the upgrade off `req` (before its headers are rewritten).
pub(crate) fn client_side(req: &mut Request<Body>) -> OnUpgrade {
    hyper::upgrade::on(req)
}

/// Puts back the upgrade headers the hop-by-hop rules removed from the app's request.
pub(crate) fn restore_request_headers(headers: &mut HeaderMap) {
    ask_upgrade(headers);
}

/// The app's answer to an upgrade request: a 101 opens the tunnel; anything else is an ordinary
/// response.
pub(crate) fn answer(client: OnUpgrade, mut resp: Response<Incoming>) -> Response<Body> {
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        return Response::from_parts(parts, Body::new(body));
    }
    let app = hyper::upgrade::on(&mut resp);
    let (mut parts, _) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    ask_upgrade(&mut parts.headers);
    let (open, closed) = watch::channel(());
    tokio::spawn(async move {
        let _open = open;
        match tokio::try_join!(client, app) {
            Ok((client, app)) => {
                let (mut client_in, mut client_out) = tokio::io::split(TokioIo::new(client));
                let (mut app_in, mut app_out) = tokio::io::split(TokioIo::new(app));
                // Either side closing (or failing) ends the session: a client that stays
                // connected after the app closed must not keep the slot.
                tokio::select! {
                    _ = tokio::io::copy(&mut client_in, &mut app_out) => {}
                    _ = tokio::io::copy(&mut app_in, &mut client_out) => {}
                }
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade did not complete"),
        }
    });
    parts.extensions.insert(TunnelOpen(closed));
    Response::from_parts(parts, Body::empty())
}

/// A 101 response of an open tunnel: its body (with what the route's layers hold until it ends,
/// the admission slot) is kept until the tunnel closes, and the client gets an empty one.
pub(crate) fn hold_while_open(mut resp: Response<Body>) -> Response<Body> {
    let Some(TunnelOpen(mut closed)) = resp.extensions_mut().remove::<TunnelOpen>() else {
        return resp;
    };
    let (parts, held) = resp.into_parts();
    tokio::spawn(async move {
        // Errs once the tunnel's task drops its sender: the tunnel is closed.
        let _ = closed.changed().await;
        drop(held);
    });
    Response::from_parts(parts, Body::empty())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_websocket_upgrades_pass() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, Upgrade".parse().unwrap());
        h.insert("upgrade", "WebSocket".parse().unwrap());
        assert!(is_websocket(&h));
        h.insert("upgrade", "h2c".parse().unwrap());
        assert!(!is_websocket(&h));
        h.insert("upgrade", "websocket".parse().unwrap());
        h.remove("connection");
        assert!(!is_websocket(&h));
    }
}
