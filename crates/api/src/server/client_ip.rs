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

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::config::cidr::{canonical, contains_any};

/// Longest chain of trusted hops believed (real chains have a handful).
const MAX_HOPS: usize = 32;

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

/// Why no client address could be resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ForwardedForError {
    /// A hop we trust wrote something that is not an address.
    #[error(
        "X-Forwarded-For holds an entry that is not an IP address where a trusted proxy wrote one"
    )]
    Junk,
    /// More trusted hops than [`MAX_HOPS`].
    #[error("X-Forwarded-For has more trusted hops than any real proxy chain")]
    TooManyHops,
}

/// Resolves client addresses.
#[derive(Debug, Clone, Default)]
pub struct ClientIpResolver {
    trusted: Vec<IpNet>,
}

/// One list entry: nothing (empty), an address, or junk.
enum Entry {
    Empty,
    Addr(IpAddr),
    Junk,
}

/// `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]`, `[::1]:80`, surrounded by optional spaces or tabs.
fn parse_entry(raw: &[u8]) -> Entry {
    let trimmed = raw.trim_ascii();
    if trimmed.is_empty() {
        return Entry::Empty;
    }
    let Ok(text) = std::str::from_utf8(trimmed) else {
        return Entry::Junk;
    };
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Entry::Addr(canonical(ip));
    }
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Entry::Addr(canonical(sa.ip()));
    }
    match text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .and_then(|t| t.parse::<IpAddr>().ok())
    {
        Some(ip) => Entry::Addr(canonical(ip)),
        None => Entry::Junk,
    }
}

impl ClientIpResolver {
    /// Trusting `trusted` proxies.
    pub fn new(trusted: Vec<IpNet>) -> Self {
        ClientIpResolver { trusted }
    }

    /// The client address of a request from `peer` with `headers`.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> Result<IpAddr, ForwardedForError> {
        let peer = canonical(peer);
        if !contains_any(&self.trusted, peer) {
            return Ok(peer);
        }
        // Several header lines are one comma-separated list, in order: walk the last line's last
        // entry first.
        let entries = headers
            .get_all("x-forwarded-for")
            .iter()
            .rev()
            .flat_map(|v| v.as_bytes().rsplit(|b| *b == b','));
        let mut hop = peer;
        let mut hops = 0;
        for raw in entries {
            match parse_entry(raw) {
                // An empty entry asserts nothing; skipping it hands nobody anything.
                Entry::Empty => continue,
                Entry::Junk => return Err(ForwardedForError::Junk),
                Entry::Addr(ip) => {
                    hops += 1;
                    if hops > MAX_HOPS {
                        return Err(ForwardedForError::TooManyHops);
                    }
                    if !contains_any(&self.trusted, ip) {
                        return Ok(ip);
                    }
                    hop = ip;
                }
            }
        }
        // Every hop is trusted: the request started inside the trusted range (a probe, say).
        Ok(hop)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::cidr::parse_list;
    use axum::http::HeaderValue;

    fn headers(xff: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_header_is_ignored() {
        let r = ClientIpResolver::new(vec![]);
        let peer = ip("203.0.113.9");
        assert_eq!(r.resolve(peer, &headers(&[b"1.1.1.1"])), Ok(peer));
        assert_eq!(r.resolve(peer, &headers(&[b"\xff"])), Ok(peer));
    }

    #[test]
    fn right_most_untrusted_entry_wins() {
        let r = ClientIpResolver::new(parse_list("10.0.0.0/8").unwrap());
        let peer = ip("10.0.0.1");
        // The client forged 6.6.6.6; the proxy appended the real 198.51.100.7.
        let h = headers(&[b"6.6.6.6, 198.51.100.7", b"10.0.0.2"]);
        assert_eq!(r.resolve(peer, &h), Ok(ip("198.51.100.7")));
        assert_eq!(r.resolve(peer, &headers(&[])), Ok(peer));
        assert_eq!(
            r.resolve(peer, &headers(&[b"[2001:db8::1]:443"])),
            Ok(ip("2001:db8::1"))
        );
        assert_eq!(
            r.resolve(peer, &headers(&[b"[2001:db8::1]"])),
            Ok(ip("2001:db8::1"))
        );
        assert_eq!(
            r.resolve(peer, &headers(&[b"::ffff:198.51.100.7"])),
            Ok(ip("198.51.100.7"))
        );
        // Only trusted hops: the left-most one.
        assert_eq!(
            r.resolve(peer, &headers(&[b"10.9.9.9, 10.0.0.2"])),
            Ok(ip("10.9.9.9"))
        );
    }

    #[test]
    fn junk_left_of_the_client_entry_changes_nothing() {
        let r = ClientIpResolver::new(parse_list("10.0.0.0/8").unwrap());
        let peer = ip("10.0.0.1");
        // What nginx forwards when the client sent `X-Forwarded-For: \xff`.
        for sent in [
            &b"\xff, 198.51.100.7"[..],
            b"not an address, 198.51.100.7",
            b"\xff\xfe\xfd,198.51.100.7",
            b", 198.51.100.7",
            b"198.51.100.7 , ",
        ] {
            assert_eq!(
                r.resolve(peer, &headers(&[sent])),
                Ok(ip("198.51.100.7")),
                "{sent:?}"
            );
        }
        assert_eq!(
            r.resolve(peer, &headers(&[b"\xff", b"198.51.100.7"])),
            Ok(ip("198.51.100.7"))
        );
    }

    #[test]
    fn junk_where_a_trusted_hop_wrote_is_refused() {
        let r = ClientIpResolver::new(parse_list("10.0.0.0/8").unwrap());
        let peer = ip("10.0.0.1");
        for sent in [
            &b"\xff"[..],
            b"junk",
            b"198.51.100.7, \xff",
            b"198.51.100.7, 10.0.0.2, unknown",
            b"1.2.3.4.5",
        ] {
            assert_eq!(
                r.resolve(peer, &headers(&[sent])),
                Err(ForwardedForError::Junk),
                "{sent:?}"
            );
        }
        let long = vec!["10.0.0.3"; MAX_HOPS + 1].join(",");
        assert_eq!(
            r.resolve(peer, &headers(&[long.as_bytes()])),
            Err(ForwardedForError::TooManyHops)
        );
    }
}
