//! HS256 JWT verification, Supabase-compatible (`sub` = user id, `exp` required, `aud` and `iss`
//! checked when configured), by the `jsonwebtoken` crate pinned to exactly one algorithm: a header
//! naming any other (`none`, `HS512`, `RS256`...) is refused before any signature work, and
//! unknown critical header extensions are refused. `nbf` is checked too (the crate's default
//! leaves it out).

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::Deserialize;

/// Tokens longer than this are refused before decoding (bounded work per request).
const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Longest accepted `sub`.
const MAX_SUB_LEN: usize = 256;

/// Why a token was refused. Shown to nobody: every variant is a plain 401 for the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    /// Not three base64url parts of sane size, or not JSON, or a claim of the wrong type.
    #[error("malformed token")]
    Malformed,
    /// The header names an algorithm other than HS256 (including `none`) or critical extensions.
    #[error("algorithm not accepted")]
    Algorithm,
    /// The MAC does not match.
    #[error("bad signature")]
    Signature,
    /// `exp` is in the past (beyond the leeway) or missing.
    #[error("expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("not yet valid")]
    NotYetValid,
    /// `aud` does not contain the configured audience.
    #[error("wrong audience")]
    Audience,
    /// `iss` is missing or not the configured issuer.
    #[error("wrong issuer")]
    Issuer,
    /// `sub` missing, empty, too long or with control characters.
    #[error("bad subject")]
    Subject,
}

/// The claims the service uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
}

#[derive(Deserialize)]
struct RawClaims {
    sub: Option<String>,
    // Optional here so that a missing `exp` is reported by the validation (as expired), not as
    // malformed JSON.
    exp: Option<u64>,
}

/// Verifies tokens signed with one shared secret.
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("audience", &self.validation.aud)
            .field("issuer", &self.validation.iss)
            .field("leeway_secs", &self.validation.leeway)
            .finish_non_exhaustive()
    }
}

/// The secret was empty (the configuration refuses short ones before this).
#[derive(Debug, thiserror::Error)]
#[error("the JWT secret is empty")]
pub struct EmptySecret;

impl JwtVerifier {
    /// A verifier for `secret`, requiring `audience` and `issuer` when given.
    pub fn new(
        secret: &[u8],
        audience: Option<String>,
        issuer: Option<String>,
        leeway_secs: u64,
    ) -> Result<Self, EmptySecret> {
        let key = DecodingKey::from_secret(secret).map_err(|_| EmptySecret)?;
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = leeway_secs;
        v.validate_exp = true;
        v.validate_nbf = true;
        match audience {
            Some(a) => v.set_audience(&[a]),
            // Supabase tokens carry `aud`; without a configured audience it is not checked.
            None => v.validate_aud = false,
        }
        if let Some(i) = issuer {
            v.set_issuer(&[i]);
            v.required_spec_claims.insert("iss".into());
        }
        Ok(JwtVerifier { key, validation: v })
    }

    /// Verifies against the system clock.
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtError::Malformed);
        }
        let data = jsonwebtoken::decode::<RawClaims>(token, &self.key, &self.validation)
            .map_err(|e| refusal(e.kind()))?;
        let sub = data.claims.sub.ok_or(JwtError::Subject)?;
        if sub.is_empty() || sub.len() > MAX_SUB_LEN || sub.chars().any(char::is_control) {
            return Err(JwtError::Subject);
        }
        Ok(Claims {
            sub,
            exp: data.claims.exp.ok_or(JwtError::Expired)?,
        })
    }
}

fn refusal(kind: &ErrorKind) -> JwtError {
    match kind {
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm => JwtError::Algorithm,
        ErrorKind::InvalidSignature => JwtError::Signature,
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::MissingRequiredClaim(c) if c == "exp" => JwtError::Expired,
        ErrorKind::MissingRequiredClaim(c) if c == "iss" => JwtError::Issuer,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidAudience => JwtError::Audience,
        ErrorKind::InvalidIssuer => JwtError::Issuer,
        ErrorKind::InvalidSubject => JwtError::Subject,
        _ => JwtError::Malformed,
    }
}

/// Signs claims with HS256 (tests, tools and the schemathesis script mint tokens with it).
pub fn sign_hs256(secret: &[u8], claims: &serde_json::Value) -> String {
    EncodingKey::from_secret(secret)
        .and_then(|k| jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &k))
        .unwrap_or_default()
}

/// Signs with an arbitrary header, HMAC-SHA256 over it whatever it says: forged tokens for tests
/// of refused algorithms (`alg: none`, `HS512`...), which a JWT library will not produce.
pub fn sign_with_header(
    secret: &[u8],
    header: &serde_json::Value,
    claims: &serde_json::Value,
) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use hmac::{Hmac, Mac};
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let p = URL_SAFE_NO_PAD.encode(claims.to_string());
    let sig = match Hmac::<sha2::Sha256>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(format!("{h}.{p}").as_bytes());
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    };
    format!("{h}.{p}.{sig}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    const KEY: &[u8] = b"test-secret-of-reasonable-length-123";

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    fn v() -> JwtVerifier {
        JwtVerifier::new(KEY, Some("authenticated".into()), None, 30)
            .unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn accepts_a_supabase_token() {
        let now = now();
        let t = sign_hs256(
            KEY,
            &json!({"sub": "u-1", "exp": now + 60, "aud": "authenticated", "role": "authenticated"}),
        );
        assert_eq!(v().verify(&t).map(|c| c.sub), Ok("u-1".into()));
        let t = sign_hs256(
            KEY,
            &json!({"sub": "u-1", "exp": now + 60, "aud": ["x", "authenticated"]}),
        );
        assert!(v().verify(&t).is_ok());
        // Within the leeway.
        let t = sign_hs256(
            KEY,
            &json!({"sub": "u", "exp": now - 10, "nbf": now + 10, "aud": "authenticated"}),
        );
        assert!(v().verify(&t).is_ok());
        // No audience configured: `aud` is not checked.
        let open = JwtVerifier::new(KEY, None, None, 0).unwrap_or_else(|_| unreachable!());
        let t = sign_hs256(
            KEY,
            &json!({"sub": "u", "exp": now + 60, "aud": "anything"}),
        );
        assert!(open.verify(&t).is_ok());
    }

    #[test]
    fn refuses_everything_else() {
        let now = now();
        let good = json!({"sub": "u-1", "exp": now + 60, "aud": "authenticated"});
        let cases = [
            (sign_hs256(b"other-key", &good), JwtError::Signature),
            (
                sign_with_header(KEY, &json!({"alg": "none"}), &good),
                JwtError::Malformed,
            ),
            (
                sign_with_header(KEY, &json!({"alg": "HS512"}), &good),
                JwtError::Algorithm,
            ),
            (
                sign_with_header(KEY, &json!({"alg": "RS256"}), &good),
                JwtError::Algorithm,
            ),
            (
                sign_with_header(KEY, &json!({"alg": "HS256", "crit": ["b64"]}), &good),
                JwtError::Malformed,
            ),
            (
                sign_hs256(
                    KEY,
                    &json!({"sub": "u", "exp": now - 31, "aud": "authenticated"}),
                ),
                JwtError::Expired,
            ),
            (
                sign_hs256(KEY, &json!({"sub": "u", "aud": "authenticated"})),
                JwtError::Expired,
            ),
            (
                sign_hs256(KEY, &json!({"sub": "u", "exp": now + 60, "aud": "anon"})),
                JwtError::Audience,
            ),
            (
                sign_hs256(
                    KEY,
                    &json!({"sub": "", "exp": now + 60, "aud": "authenticated"}),
                ),
                JwtError::Subject,
            ),
            (
                sign_hs256(
                    KEY,
                    &json!({"sub": "a\u{0}b", "exp": now + 60, "aud": "authenticated"}),
                ),
                JwtError::Subject,
            ),
            (
                sign_hs256(KEY, &json!({"exp": now + 60, "aud": "authenticated"})),
                JwtError::Subject,
            ),
            (
                sign_hs256(
                    KEY,
                    &json!({"sub": "u", "exp": now + 60, "nbf": now + 100, "aud": "authenticated"}),
                ),
                JwtError::NotYetValid,
            ),
            (
                sign_hs256(
                    KEY,
                    &json!({"sub": "u", "exp": now + 60, "nbf": "soon", "aud": "authenticated"}),
                ),
                JwtError::Malformed,
            ),
            (
                sign_hs256(KEY, &json!({"sub": 5, "exp": now + 60})),
                JwtError::Malformed,
            ),
            ("a.b".into(), JwtError::Malformed),
            ("a.b.c.d".into(), JwtError::Malformed),
            ("!!.!!.!!".into(), JwtError::Malformed),
            ("".into(), JwtError::Malformed),
            ("a".repeat(MAX_TOKEN_LEN + 1), JwtError::Malformed),
        ];
        for (token, want) in cases {
            assert_eq!(v().verify(&token), Err(want), "{token}");
        }
        // alg none with an empty signature, the classic forgery.
        let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let p = URL_SAFE_NO_PAD.encode(good.to_string());
        assert!(v().verify(&format!("{h}.{p}.")).is_err());
        // A valid token with a tampered payload.
        let t = sign_hs256(KEY, &good);
        let mut parts: Vec<&str> = t.split('.').collect();
        let evil = URL_SAFE_NO_PAD
            .encode(json!({"sub": "admin", "exp": now + 60, "aud": "authenticated"}).to_string());
        parts[1] = &evil;
        assert_eq!(v().verify(&parts.join(".")), Err(JwtError::Signature));
    }

    #[test]
    fn issuer_is_required_when_configured() {
        let now = now();
        let v = JwtVerifier::new(KEY, None, Some("https://issuer.example".into()), 30)
            .unwrap_or_else(|_| unreachable!());
        let ok = sign_hs256(
            KEY,
            &json!({"sub": "u", "exp": now + 60, "iss": "https://issuer.example"}),
        );
        assert!(v.verify(&ok).is_ok());
        for claims in [
            json!({"sub": "u", "exp": now + 60}),
            json!({"sub": "u", "exp": now + 60, "iss": "https://other.example"}),
        ] {
            assert_eq!(v.verify(&sign_hs256(KEY, &claims)), Err(JwtError::Issuer));
        }
        assert!(JwtVerifier::new(b"", None, None, 0).is_err());
    }
}
