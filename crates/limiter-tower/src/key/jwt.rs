//! [`JwtClaimKey`]: a claim of an HS256 bearer token, the algorithm pinned.

use std::collections::HashMap;

use http::{Request, header};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::{KeyExtractor, checked};

/// Bearer tokens longer than this are refused before decoding (bounded work per request).
const MAX_TOKEN_LEN: usize = 8 * 1024;

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
/// checks as [`HeaderKey`](crate::HeaderKey).
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
    use jsonwebtoken::{EncodingKey, Header, encode};

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
