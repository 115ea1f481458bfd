//! Who a limit applies to: a [`KeyExtractor`] reads a key from the request.
//!
//! A request with no key (`None`) is refused with [`crate::LimitRejection::NoKey`] (400
//! `invalid_request`): a limit that cannot tell who is asking must not fall back to a shared
//! bucket that one client could exhaust for everybody. Put authentication in front of a layer
//! keyed by user, so that only malformed requests reach this refusal.
//!
//! Ready-made: [`ClientIpKey`] (the client address behind trusted proxies), [`HeaderKey`] (a header
//! set by a trusted auth proxy), [`JwtClaimKey`] (a claim of an HS256 bearer token) and
//! [`ConstantKey`] (one bucket for everyone).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{HeaderMap, HeaderName, Request, header};
use ipnet::{IpNet, Ipv4Net};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// Longest key a header or claim may give (bounded key size in Redis and in memory).
const MAX_KEY_LEN: usize = 256;
/// Longest chain of trusted hops believed (real chains have a handful).
const MAX_HOPS: usize = 32;
/// Bearer tokens longer than this are refused before decoding (bounded work per request).
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Reads the key a limit applies to from a request.
///
/// ```
/// use http::Request;
/// use limiter_tower::KeyExtractor;
///
/// /// One bucket per API version (`/v1/...`, `/v2/...`).
/// #[derive(Debug)]
/// struct ByVersion;
///
/// impl<B> KeyExtractor<B> for ByVersion {
///     fn key(&self, req: &Request<B>) -> Option<String> {
///         req.uri().path().split('/').nth(1).map(str::to_string)
///     }
/// }
///
/// let req = Request::get("/v2/items").body(()).unwrap();
/// assert_eq!(ByVersion.key(&req).as_deref(), Some("v2"));
/// ```
pub trait KeyExtractor<B>: Send + Sync + 'static {
    /// The key, or `None` if the request carries none (it is then refused).
    fn key(&self, req: &Request<B>) -> Option<String>;
}

/// The same key for every request: one fleet-wide bucket.
///
/// ```
/// use limiter_tower::{ConstantKey, KeyExtractor};
///
/// let req = http::Request::new(());
/// assert_eq!(ConstantKey::new("all").key(&req).as_deref(), Some("all"));
/// ```
#[derive(Debug, Clone)]
pub struct ConstantKey(String);

impl ConstantKey {
    /// Always `key`.
    pub fn new(key: impl Into<String>) -> Self {
        ConstantKey(key.into())
    }
}

impl<B> KeyExtractor<B> for ConstantKey {
    fn key(&self, _: &Request<B>) -> Option<String> {
        Some(self.0.clone())
    }
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
    /// entry is not an address.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return Some(peer);
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
                Entry::Junk => return None,
                Entry::Addr(ip) => {
                    hops += 1;
                    if hops > MAX_HOPS {
                        return None;
                    }
                    if !self.trusts(ip) {
                        return Some(ip);
                    }
                    hop = ip;
                }
            }
        }
        // Every hop is trusted: the request started inside the trusted range (a probe, say).
        Some(hop)
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
fn ip_key(ip: IpAddr) -> String {
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

/// A key that is not empty, at most 256 bytes, and visible ASCII only (no control characters,
/// no spaces: nothing that could be confused in logs or keys).
fn checked(value: &[u8]) -> Option<String> {
    if value.is_empty() || value.len() > MAX_KEY_LEN || !value.iter().all(|b| b.is_ascii_graphic())
    {
        return None;
    }
    String::from_utf8(value.to_vec()).ok()
}

/// The value of a header set by a trusted authentication proxy (`X-User-Id`, say). Only use it
/// behind a proxy that overwrites the header: a client can send any header it likes.
///
/// Refused (no key): a missing or repeated header, an empty value, one over 256 bytes or with
/// bytes other than visible ASCII.
///
/// ```
/// use limiter_tower::{HeaderKey, KeyExtractor};
///
/// let key = HeaderKey::new(http::HeaderName::from_static("x-user-id"));
/// let req = http::Request::builder().header("x-user-id", "u-42").body(()).unwrap();
/// assert_eq!(key.key(&req).as_deref(), Some("u-42"));
/// let bad = http::Request::builder().header("x-user-id", "a\tb").body(()).unwrap();
/// assert_eq!(key.key(&bad), None);
/// ```
#[derive(Debug, Clone)]
pub struct HeaderKey(HeaderName);

impl HeaderKey {
    /// Reads `name`.
    pub fn new(name: HeaderName) -> Self {
        HeaderKey(name)
    }
}

impl<B> KeyExtractor<B> for HeaderKey {
    fn key(&self, req: &Request<B>) -> Option<String> {
        let mut values = req.headers().get_all(&self.0).iter();
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        checked(value.as_bytes())
    }
}

/// [`JwtClaimKey::hs256`] was given an empty secret.
///
/// ```
/// assert!(limiter_tower::JwtClaimKey::hs256(b"").is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the JWT secret is empty")]
pub struct EmptySecret;

/// A claim (`sub` by default) of the `Authorization: Bearer` token, an HS256 JWT verified with a
/// shared secret. The algorithm is pinned: a token whose header names any other (`none`,
/// `RS256`, ...) is refused, as are expired tokens (`exp` is required) and tokens not yet valid
/// (`nbf`). The claim must be a string (a number is taken as its decimal text) passing the same
/// checks as [`HeaderKey`].
///
/// ```
/// use jsonwebtoken::{EncodingKey, Header, encode};
/// use limiter_tower::{JwtClaimKey, KeyExtractor};
///
/// let secret = b"a secret of at least thirty-two bytes!!";
/// let claims = serde_json::json!({"sub": "user-7", "exp": 4_000_000_000u64});
/// let signing = EncodingKey::from_secret(secret).unwrap();
/// let token = encode(&Header::default(), &claims, &signing).unwrap();
/// let req = http::Request::builder()
///     .header("authorization", format!("Bearer {token}"))
///     .body(())
///     .unwrap();
/// let key = JwtClaimKey::hs256(secret).unwrap();
/// assert_eq!(key.key(&req).as_deref(), Some("user-7"));
/// ```
#[derive(Clone)]
pub struct JwtClaimKey {
    key: DecodingKey,
    validation: Validation,
    claim: String,
}

impl std::fmt::Debug for JwtClaimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtClaimKey")
            .field("claim", &self.claim)
            .finish_non_exhaustive()
    }
}

impl JwtClaimKey {
    /// Verifies with `secret`, keys by `sub`. Refuses an empty secret.
    pub fn hs256(secret: &[u8]) -> Result<Self, EmptySecret> {
        if secret.is_empty() {
            return Err(EmptySecret);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        Ok(JwtClaimKey {
            key: DecodingKey::from_secret(secret).map_err(|_| EmptySecret)?,
            validation,
            claim: "sub".into(),
        })
    }

    /// Keys by `claim` instead of `sub`.
    pub fn claim(mut self, claim: impl Into<String>) -> Self {
        self.claim = claim.into();
        self
    }

    /// Requires `aud` to contain `audience`.
    pub fn audience(mut self, audience: &str) -> Self {
        self.validation.set_audience(&[audience]);
        self.validation.validate_aud = true;
        self
    }

    /// Requires `iss` to be `issuer`.
    pub fn issuer(mut self, issuer: &str) -> Self {
        self.validation.set_issuer(&[issuer]);
        self
    }

    /// The claim of a token, if it verifies.
    pub fn verify(&self, token: &str) -> Option<String> {
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let data = jsonwebtoken::decode::<HashMap<String, serde_json::Value>>(
            token,
            &self.key,
            &self.validation,
        )
        .ok()?;
        match data.claims.get(&self.claim)? {
            serde_json::Value::String(s) => checked(s.as_bytes()),
            serde_json::Value::Number(n) => checked(n.to_string().as_bytes()),
            _ => None,
        }
    }
}

impl<B> KeyExtractor<B> for JwtClaimKey {
    fn key(&self, req: &Request<B>) -> Option<String> {
        let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        self.verify(token.trim())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http::HeaderValue;
    use jsonwebtoken::{EncodingKey, Header, encode};

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
            b", 198.51.100.7",
            b"198.51.100.7 , ",
        ] {
            assert_eq!(
                k.resolve(peer, &headers(&[sent])),
                Some(ip("198.51.100.7")),
                "{sent:?}"
            );
        }
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
        ] {
            assert_eq!(k.resolve(peer, &headers(&[sent])), None, "{sent:?}");
        }
        let long = vec!["10.0.0.3"; MAX_HOPS + 1].join(",");
        assert_eq!(k.resolve(peer, &headers(&[long.as_bytes()])), None);
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

    #[test]
    fn header_values_are_bounded() {
        let k = HeaderKey::new(HeaderName::from_static("x-user"));
        let req = |v: &[u8]| {
            Request::builder()
                .header("x-user", HeaderValue::from_bytes(v).unwrap())
                .body(())
                .unwrap()
        };
        assert_eq!(k.key(&req(b"alice")).as_deref(), Some("alice"));
        assert_eq!(k.key(&req(b"")), None);
        assert_eq!(k.key(&req(b"a b")), None);
        assert_eq!(k.key(&req(b"a\tb")), None);
        assert_eq!(k.key(&req(b"caf\xc3\xa9")), None);
        assert_eq!(k.key(&req(&[b'a'; 257])), None);
        assert_eq!(k.key(&req(&[b'a'; 256])).map(|s| s.len()), Some(256));
        let twice = Request::builder()
            .header("x-user", "a")
            .header("x-user", "b")
            .body(())
            .unwrap();
        assert_eq!(k.key(&twice), None);
    }

    #[test]
    fn jwt_is_pinned_to_hs256_and_checked() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let k = JwtClaimKey::hs256(secret).unwrap();
        assert!(JwtClaimKey::hs256(b"").is_err());
        let sign = |alg: Algorithm, claims: serde_json::Value| {
            encode(
                &Header::new(alg),
                &claims,
                &EncodingKey::from_secret(secret).unwrap(),
            )
            .unwrap()
        };
        let future = 4_000_000_000u64;
        let good = sign(
            Algorithm::HS256,
            serde_json::json!({"sub": "u1", "org": "o9", "exp": future}),
        );
        assert_eq!(k.verify(&good).as_deref(), Some("u1"));
        assert_eq!(k.clone().claim("org").verify(&good).as_deref(), Some("o9"));
        let hs512 = sign(
            Algorithm::HS512,
            serde_json::json!({"sub": "u1", "exp": future}),
        );
        assert_eq!(k.verify(&hs512), None, "another algorithm");
        let expired = sign(Algorithm::HS256, serde_json::json!({"sub": "u1", "exp": 1}));
        assert_eq!(k.verify(&expired), None, "expired");
        let no_exp = sign(Algorithm::HS256, serde_json::json!({"sub": "u1"}));
        assert_eq!(k.verify(&no_exp), None, "exp required");
        let other = JwtClaimKey::hs256(b"another secret of thirty-two bytes!!").unwrap();
        assert_eq!(other.verify(&good), None, "wrong secret");
        let ctl = sign(
            Algorithm::HS256,
            serde_json::json!({"sub": "a\nb", "exp": future}),
        );
        assert_eq!(k.verify(&ctl), None, "control character");
        // `none`: header {"alg":"none"}, no signature.
        let none = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            good.split('.').nth(1).unwrap()
        );
        assert_eq!(k.verify(&none), None, "alg none");
        let req = Request::builder()
            .header("authorization", format!("bearer {good}"))
            .body(())
            .unwrap();
        assert_eq!(k.key(&req).as_deref(), Some("u1"));
        let basic = Request::builder()
            .header("authorization", format!("Basic {good}"))
            .body(())
            .unwrap();
        assert_eq!(k.key(&basic), None);
    }
}
