//! The client address a limit applies to: the socket peer, or, when the peer is a trusted proxy
//! (`FLEETGATE_TRUSTED_PROXIES`), the right-most `X-Forwarded-For` entry that is not itself a
//! trusted proxy.
//!
//! Each proxy appends the address it received the request from, so the list is read right to left,
//! past trusted hops, and the first untrusted address is the client: everything left of it was
//! written by the client and proves nothing. The header is read as bytes: a byte that is not
//! visible ASCII in an entry the client wrote cannot hide the entries the proxies appended after it.
//!
//! An entry that is reached in that walk and is not an address (junk, or more hops than any real
//! chain has) was written by a hop we trust to write addresses: either a proxy is misconfigured or
//! the sender is inside the trusted range without being a proxy. Nobody can then say who the
//! client is, and keying the request as the proxy would give every such client the proxy's
//! window, not its own; the request is refused with 400 `invalid_request` instead. From an
//! untrusted peer the header is ignored entirely.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;
use limiter_tower::ClientIpKey;

pub use limiter_tower::ForwardedForError;

/// The resolved client address, stored in the request extensions (and an extractor: `0.0.0.0`
/// when the request came in without a connection, as in-process tests send them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ClientIp>()
            .copied()
            .unwrap_or(ClientIp(IpAddr::from([0, 0, 0, 0]))))
    }
}

/// Resolves client addresses: the walk is limiter-tower's [`ClientIpKey`], so the service and
/// any layer keyed by client address agree on who the client is.
#[derive(Debug, Clone)]
pub struct ClientIpResolver {
    key: ClientIpKey,
}

impl Default for ClientIpResolver {
    fn default() -> Self {
        ClientIpResolver::new(Vec::new())
    }
}

impl ClientIpResolver {
    /// Trusting `trusted` proxies.
    pub fn new(trusted: Vec<IpNet>) -> Self {
        ClientIpResolver {
            key: ClientIpKey::behind(trusted),
        }
    }

    /// The client address of a request from `peer` with `headers`.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> Result<IpAddr, ForwardedForError> {
        self.key.try_resolve(peer, headers)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::cidr::parse_list;
    use axum::http::HeaderValue;

    fn headers(xff: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_bytes(xff).unwrap());
        h
    }

    // The walk itself is tested in limiter-tower; this checks the service's wiring: the configured
    // blocks (as the config parser canonicalizes them) are the trusted ones, and junk is an error.
    #[test]
    fn configured_proxies_are_trusted() {
        let r = ClientIpResolver::new(parse_list("::ffff:10.0.0.0/104").unwrap());
        let peer: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(
            r.resolve(peer, &headers(b"6.6.6.6, 198.51.100.7")),
            Ok("198.51.100.7".parse().unwrap())
        );
        assert_eq!(
            r.resolve(peer, &headers(b"junk")),
            Err(ForwardedForError::Junk)
        );
        let direct: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(
            ClientIpResolver::default().resolve(direct, &headers(b"1.1.1.1")),
            Ok(direct)
        );
    }
}
