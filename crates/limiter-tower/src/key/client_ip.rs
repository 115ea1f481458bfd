//! [`ClientIpKey`]: the client address behind trusted proxies, walking `X-Forwarded-For` right
//! to left byte-wise.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{HeaderMap, Request};
use ipnet::{IpNet, Ipv4Net};

use super::KeyExtractor;

/// Longest chain of trusted hops believed (real chains have a handful).
const MAX_HOPS: usize = 32;

/// Why [`ClientIpKey::try_resolve`] could not name the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ForwardedForError {
    /// A hop we trust wrote something that is not an address.
    #[error(
        "X-Forwarded-For holds an entry that is not an IP address where a trusted proxy wrote one"
    )]
    Junk,
    /// More trusted hops than any real proxy chain has.
    #[error("X-Forwarded-For has more trusted hops than any real proxy chain")]
    TooManyHops,
}

/// A peer address put in the request extensions by whatever accepts connections, for
/// [`ClientIpKey`]. A `std::net::SocketAddr` extension is read too.
///
/// ```
/// use limiter_tower::PeerAddr;
///
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(PeerAddr("203.0.113.7".parse().unwrap()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub IpAddr);

type PeerFn = dyn Fn(&http::Extensions) -> Option<IpAddr> + Send + Sync;

/// The client address: the connection's peer, or, when the peer is a trusted proxy, the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy. IPv6 clients are keyed
/// by their /64 (one subscriber usually owns a whole /64 and could rotate addresses within it).
///
/// Each proxy appends the address it received the request from, so the list is read right to
/// left past trusted hops; everything left of the first untrusted address was written by the
/// client and proves nothing. The header is read as bytes, so a byte the client wrote cannot hide
/// the entries proxies appended after it. An entry reached in that walk that is not an address
/// (or more than 32 trusted hops) was written by a hop we trust to write addresses: nobody can
/// say who the client is, and keying the request as the proxy would hand the client the proxy's
/// bucket, so the request gets no key (refused). From an untrusted peer the header is ignored.
///
/// The peer comes from a [`PeerAddr`] or `SocketAddr` extension, or from a function you give
/// ([`ClientIpKey::peer_from`]; with axum, read `ConnectInfo<SocketAddr>`).
///
/// ```
/// use limiter_tower::{ClientIpKey, KeyExtractor, PeerAddr};
///
/// let key = ClientIpKey::behind(["10.0.0.0/8".parse().unwrap()]);
/// let mut req = http::Request::builder()
///     .header("x-forwarded-for", "6.6.6.6, 198.51.100.7")
///     .body(())
///     .unwrap();
/// req.extensions_mut().insert(PeerAddr("10.0.0.1".parse().unwrap()));
/// assert_eq!(key.key(&req).as_deref(), Some("198.51.100.7"));
/// ```
#[derive(Clone)]
pub struct ClientIpKey {
    trusted: Vec<IpNet>,
    peer: Option<Arc<PeerFn>>,
}

impl std::fmt::Debug for ClientIpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIpKey")
            .field("trusted", &self.trusted)
            .field("custom_peer", &self.peer.is_some())
            .finish()
    }
}

impl ClientIpKey {
    /// The peer address itself; `X-Forwarded-For` is never read.
    pub fn direct() -> Self {
        ClientIpKey {
            trusted: Vec::new(),
            peer: None,
        }
    }

    /// Believing `X-Forwarded-For` from peers in `trusted`.
    pub fn behind(trusted: impl IntoIterator<Item = IpNet>) -> Self {
        ClientIpKey {
            trusted: trusted.into_iter().map(canonical_net).collect(),
            peer: None,
        }
    }

    /// Reads the peer address with `f` instead of the [`PeerAddr`]/`SocketAddr` extensions.
    pub fn peer_from(
        mut self,
        f: impl Fn(&http::Extensions) -> Option<IpAddr> + Send + Sync + 'static,
    ) -> Self {
        self.peer = Some(Arc::new(f));
        self
    }

    /// The client address of a request from `peer` with `headers`; `None` when a trusted hop's
    /// entry is not an address ([`ClientIpKey::try_resolve`] says why).
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> Option<IpAddr> {
        self.try_resolve(peer, headers).ok()
    }

    /// The client address of a request from `peer` with `headers`, or why a trusted hop's entry
    /// names nobody.
    ///
    /// ```
    /// use limiter_tower::{ClientIpKey, ForwardedForError};
    ///
    /// let key = ClientIpKey::behind(["10.0.0.0/8".parse().unwrap()]);
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert("x-forwarded-for", "unknown".parse().unwrap());
    /// let peer = "10.0.0.1".parse().unwrap();
    /// assert_eq!(key.try_resolve(peer, &headers), Err(ForwardedForError::Junk));
    /// ```
    pub fn try_resolve(
        &self,
        peer: IpAddr,
        headers: &HeaderMap,
    ) -> Result<IpAddr, ForwardedForError> {
        let peer = canonical(peer);
        if !self.trusts(peer) {
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
                    if !self.trusts(ip) {
                        return Ok(ip);
                    }
                    hop = ip;
                }
            }
        }
        // Every hop is trusted: the request started inside the trusted range (a probe, say).
        Ok(hop)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    fn peer(&self, ext: &http::Extensions) -> Option<IpAddr> {
        if let Some(f) = &self.peer {
            return f(ext);
        }
        ext.get::<PeerAddr>()
            .map(|p| p.0)
            .or_else(|| ext.get::<SocketAddr>().map(SocketAddr::ip))
    }
}

impl<B> KeyExtractor<B> for ClientIpKey {
    fn key(&self, req: &Request<B>) -> Option<String> {
        let peer = self.peer(req.extensions())?;
        self.resolve(peer, req.headers()).map(ip_key)
    }
}

/// The key of an address: IPv4 as is, IPv6 as its /64.
pub(crate) fn ip_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// IPv4-mapped IPv6 (`::ffff:1.2.3.4`, what a dual-stack socket reports) as plain IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// An IPv4-mapped IPv6 block as the IPv4 block it denotes; host bits cleared.
fn canonical_net(net: IpNet) -> IpNet {
    let net = net.trunc();
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

/// One list entry: nothing, an address, or junk.
enum Entry {
    Empty,
    Addr(IpAddr),
    Junk,
}

/// `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]`, `[::1]:80`, with optional spaces or tabs around.
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http::HeaderValue;

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

    fn behind_10() -> ClientIpKey {
        ClientIpKey::behind(["10.0.0.0/8".parse().unwrap()])
    }

    #[test]
    fn untrusted_peer_header_is_ignored() {
        let k = ClientIpKey::direct();
        let peer = ip("203.0.113.9");
        assert_eq!(k.resolve(peer, &headers(&[b"1.1.1.1"])), Some(peer));
        assert_eq!(k.resolve(peer, &headers(&[b"\xff"])), Some(peer));
    }

    #[test]
    fn right_most_untrusted_entry_wins() {
        let k = behind_10();
        let peer = ip("10.0.0.1");
        let h = headers(&[b"6.6.6.6, 198.51.100.7", b"10.0.0.2"]);
        assert_eq!(k.resolve(peer, &h), Some(ip("198.51.100.7")));
        assert_eq!(k.resolve(peer, &headers(&[])), Some(peer));
        assert_eq!(
            k.resolve(peer, &headers(&[b"[2001:db8::1]:443"])),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            k.resolve(peer, &headers(&[b"::ffff:198.51.100.7"])),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(
            k.resolve(peer, &headers(&[b"10.9.9.9, 10.0.0.2"])),
            Some(ip("10.9.9.9"))
        );
    }

    #[test]
    fn junk_left_of_the_client_entry_changes_nothing() {
        let k = behind_10();
        let peer = ip("10.0.0.1");
        for sent in [
            &b"\xff, 198.51.100.7"[..],
            b"not an address, 198.51.100.7",
            b"\xff\xfe\xfd,198.51.100.7",
            b", 198.51.100.7",
            b"198.51.100.7 , ",
        ] {
            assert_eq!(
                k.resolve(peer, &headers(&[sent])),
                Some(ip("198.51.100.7")),
                "{sent:?}"
            );
        }
        // Junk on an earlier header line than the proxy's is the client's too.
        assert_eq!(
            k.resolve(peer, &headers(&[b"\xff", b"198.51.100.7"])),
            Some(ip("198.51.100.7"))
        );
    }

    #[test]
    fn junk_where_a_trusted_hop_wrote_gives_no_key() {
        let k = behind_10();
        let peer = ip("10.0.0.1");
        for sent in [
            &b"\xff"[..],
            b"junk",
            b"198.51.100.7, \xff",
            b"198.51.100.7, 10.0.0.2, unknown",
            b"1.2.3.4.5",
        ] {
            assert_eq!(k.resolve(peer, &headers(&[sent])), None, "{sent:?}");
        }
        let long = vec!["10.0.0.3"; MAX_HOPS + 1].join(",");
        assert_eq!(k.resolve(peer, &headers(&[long.as_bytes()])), None);
        assert_eq!(
            k.try_resolve(peer, &headers(&[long.as_bytes()])),
            Err(ForwardedForError::TooManyHops)
        );
        assert_eq!(
            k.try_resolve(peer, &headers(&[b"198.51.100.7, \xff"])),
            Err(ForwardedForError::Junk)
        );
        // The extractor refuses rather than keying the request as the proxy.
        let mut req = Request::builder()
            .header("x-forwarded-for", "junk")
            .body(())
            .unwrap();
        req.extensions_mut().insert(PeerAddr(peer));
        assert_eq!(k.key(&req), None);
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let k = ClientIpKey::direct();
        let mut a = Request::new(());
        a.extensions_mut()
            .insert(SocketAddr::new(ip("2001:db8:1:2:aaaa::1"), 9));
        let mut b = Request::new(());
        b.extensions_mut()
            .insert(PeerAddr(ip("2001:db8:1:2:bbbb::2")));
        assert_eq!(k.key(&a), k.key(&b));
        assert_eq!(k.key(&a).as_deref(), Some("2001:db8:1:2::/64"));
        assert_eq!(k.key(&Request::new(())), None, "no peer, no key");
    }
}
