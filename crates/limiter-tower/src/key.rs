//! Who a limit applies to: a [`KeyExtractor`] reads a key from the request.
//!
//! A request with no key (`None`) is refused with [`crate::LimitRejection::NoKey`] (400
//! `invalid_request`): a limit that cannot tell who is asking must not fall back to a shared
//! bucket that one client could exhaust for everybody. Put authentication in front of a layer
//! keyed by user, so that only malformed requests reach this refusal.
//!
//! Ready-made: [`ClientIpKey`] (the client address behind trusted proxies), [`HeaderKey`] (a header
//! set by a trusted auth proxy), [`JwtClaimKey`] (a claim of an HS256 bearer token) and
//! [`ConstantKey`] (one bucket for everyone). The first two live in `key/client_ip.rs` and
//! `key/jwt.rs`.

mod client_ip;
mod jwt;

pub(crate) use client_ip::ip_key;
pub use client_ip::{ClientIpKey, ForwardedForError, PeerAddr};
pub use jwt::{EmptySecret, JwtClaimKey};

use http::{HeaderName, Request};

/// Longest key a header or claim may give (bounded key size in Redis and in memory).
const MAX_KEY_LEN: usize = 256;

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
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http::HeaderValue;

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
}
