//! The client address a limit applies to: the socket peer, or, when the peer is a trusted proxy
//! (`FLEETGATE_TRUSTED_PROXIES`), the right-most `X-Forwarded-For` entry that is not itself a
//! trusted proxy. Entries left of that one were written by the client and prove nothing, so a
//! forged header never changes the answer; from an untrusted peer the header is ignored entirely.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;

use crate::cidr::{Cidr, canonical};
use crate::state::AppState;

/// The resolved client address, stored in the request extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Resolves client addresses.
#[derive(Debug, Clone, Default)]
pub struct ClientIpResolver {
    trusted: Vec<Cidr>,
}

impl ClientIpResolver {
    /// Trusting `trusted` proxies.
    pub fn new(trusted: Vec<Cidr>) -> Self {
        ClientIpResolver { trusted }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    /// The client address of a request from `peer` with `headers`.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.is_trusted(peer) {
            return peer;
        }
        // Several headers count as one comma-separated list, in order.
        let mut hop = peer;
        let entries: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for entry in entries.iter().rev() {
            let Some(ip) = parse_entry(entry) else {
                // Garbage in the chain: the last address we can vouch for is the answer.
                return hop;
            };
            hop = ip;
            if !self.is_trusted(ip) {
                return ip;
            }
        }
        hop
    }
}

/// `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]:80`.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let e = entry.trim();
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    e.parse::<SocketAddr>().ok().map(|s| canonical(s.ip()))
}

/// Middleware: stores the [`ClientIp`] (from the connection's peer address) in the extensions.
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
    let ip = state.client_ip().resolve(peer, req.headers());
    req.extensions_mut().insert(ClientIp(ip));
    next.run(req).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::cidr::parse_list;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn untrusted_peer_header_is_ignored() {
        let r = ClientIpResolver::new(vec![]);
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(r.resolve(peer, &headers(&["1.1.1.1"])), peer);
    }

    #[test]
    fn right_most_untrusted_entry_wins() {
        let r = ClientIpResolver::new(parse_list("10.0.0.0/8").unwrap());
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        // The client forged 6.6.6.6; the proxy appended the real 198.51.100.7.
        let h = headers(&["6.6.6.6, 198.51.100.7", "10.0.0.2"]);
        assert_eq!(
            r.resolve(peer, &h),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(r.resolve(peer, &headers(&[])), peer);
        assert_eq!(r.resolve(peer, &headers(&["junk"])), peer);
        assert_eq!(
            r.resolve(peer, &headers(&["[2001:db8::1]:443"])),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
    }
}
