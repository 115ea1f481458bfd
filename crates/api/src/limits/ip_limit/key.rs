//! Who a per-IP window counts: the resolved client address ([`ClientIp`], set by
//! `server::middleware::resolve_client_ip`), an IPv6 client by its /64.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::Request;
use limiter_tower::KeyExtractor;

use crate::server::client_ip::ClientIp;

/// The key of a client (also of the admin-token throttle): the IPv4 address, or the /64 of an
/// IPv6 address (one subscriber usually owns a whole /64 and could otherwise rotate addresses to
/// dodge the limit).
pub fn client_key(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.to_string().into_bytes(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3]).into_bytes()
        }
    }
}

/// The window key of a request: [`client_key`] of its resolved client address (the peer's
/// address if the resolver did not run, which only the benchmarks' bare routers do).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientKey;

impl<B> KeyExtractor<B> for ClientKey {
    fn key(&self, req: &Request<B>) -> Option<String> {
        let ip = req
            .extensions()
            .get::<ClientIp>()
            .map(|c| c.0)
            .or_else(|| {
                req.extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|c| c.0.ip())
            })
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        // Always ASCII (digits, dots, hex, colons).
        Some(String::from_utf8_lossy(&client_key(ip)).into_owned())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let a = client_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = client_key("2001:db8:1:2:bbbb::2".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, client_key("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(client_key("10.0.0.1".parse().unwrap()), b"10.0.0.1");
    }

    #[test]
    fn the_resolved_address_is_the_key() {
        let mut req = Request::new(());
        req.extensions_mut()
            .insert(ClientIp("2001:db8:1:2::9".parse().unwrap()));
        assert_eq!(ClientKey.key(&req).as_deref(), Some("2001:db8:1:2::/64"));
    }
}
