//! HS256 JWT verification, Supabase-compatible (`sub` = user id, `exp` required, `aud` checked when
//! configured). Written out rather than pulled from a JWT crate so that exactly one algorithm can
//! ever be accepted: the header must say `HS256` (so `none`, `HS512`, `RS256`... are refused before
//! any crypto), and the MAC is compared in constant time by `hmac`'s `verify_slice`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// Tokens longer than this are refused before decoding (bounded work per request).
const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Longest accepted `sub`.
const MAX_SUB_LEN: usize = 256;

/// Why a token was refused. Shown to nobody: every variant is a plain 401 for the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    /// Not three base64url parts of sane size, or not JSON.
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
    /// `sub` missing, empty or too long.
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
struct Header {
    alg: String,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct RawClaims {
    sub: Option<String>,
    exp: Option<f64>,
    nbf: Option<f64>,
    aud: Option<Audience>,
}

/// Verifies tokens signed with one shared secret.
#[derive(Clone)]
pub struct JwtVerifier {
    key: Vec<u8>,
    audience: Option<String>,
    leeway_secs: u64,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// A verifier for `secret`, requiring `audience` when given.
    pub fn new(secret: &[u8], audience: Option<String>, leeway_secs: u64) -> Self {
        JwtVerifier {
            key: secret.to_vec(),
            audience,
            leeway_secs,
        }
    }

    /// Verifies against the system clock.
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.verify_at(token, now)
    }

    /// Verifies at a given time (seconds since the epoch).
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Claims, JwtError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let header: Header = decode_json(h)?;
        if header.alg != "HS256" || header.crit.is_some() {
            return Err(JwtError::Algorithm);
        }
        let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).map_err(|_| JwtError::Signature)?;
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(p.as_bytes());
        mac.verify_slice(&sig).map_err(|_| JwtError::Signature)?;
        // Only a token we signed reaches the claims parser.
        let claims: RawClaims = decode_json(p)?;
        let leeway = self.leeway_secs as f64;
        let now_f = now as f64;
        let exp = claims.exp.ok_or(JwtError::Expired)?;
        if !exp.is_finite() || exp + leeway < now_f {
            return Err(JwtError::Expired);
        }
        if let Some(nbf) = claims.nbf
            && (!nbf.is_finite() || nbf - leeway > now_f)
        {
            return Err(JwtError::NotYetValid);
        }
        if let Some(want) = &self.audience {
            let ok = match &claims.aud {
                Some(Audience::One(a)) => a == want,
                Some(Audience::Many(list)) => list.iter().any(|a| a == want),
                None => false,
            };
            if !ok {
                return Err(JwtError::Audience);
            }
        }
        let sub = claims.sub.ok_or(JwtError::Subject)?;
        if sub.is_empty() || sub.len() > MAX_SUB_LEN || sub.chars().any(char::is_control) {
            return Err(JwtError::Subject);
        }
        Ok(Claims {
            sub,
            exp: exp as u64,
        })
    }
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
}

/// Signs claims with HS256 (tests, tools and the schemathesis script mint tokens with it).
pub fn sign_hs256(secret: &[u8], claims: &serde_json::Value) -> String {
    sign_with_header(
        secret,
        &serde_json::json!({"alg": "HS256", "typ": "JWT"}),
        claims,
    )
}

/// Signs with an arbitrary header (tests of refused algorithms).
pub fn sign_with_header(
    secret: &[u8],
    header: &serde_json::Value,
    claims: &serde_json::Value,
) -> String {
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let p = URL_SAFE_NO_PAD.encode(claims.to_string());
    let sig = match Hmac::<Sha256>::new_from_slice(secret) {
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
    use serde_json::json;

    const KEY: &[u8] = b"test-secret-of-reasonable-length-123";
    const NOW: u64 = 1_800_000_000;

    fn v() -> JwtVerifier {
        JwtVerifier::new(KEY, Some("authenticated".into()), 30)
    }

    #[test]
    fn accepts_a_supabase_token() {
        let t = sign_hs256(
            KEY,
            &json!({"sub": "u-1", "exp": NOW + 60, "aud": "authenticated", "role": "authenticated"}),
        );
        assert_eq!(v().verify_at(&t, NOW).map(|c| c.sub), Ok("u-1".into()));
        let t = sign_hs256(
            KEY,
            &json!({"sub": "u-1", "exp": NOW + 60, "aud": ["x", "authenticated"]}),
        );
        assert!(v().verify_at(&t, NOW).is_ok());
    }

    #[test]
    fn refuses_everything_else() {
        let good = json!({"sub": "u-1", "exp": NOW + 60, "aud": "authenticated"});
        let cases = [
            (sign_hs256(b"other-key", &good), JwtError::Signature),
            (
                sign_with_header(KEY, &json!({"alg": "none"}), &good),
                JwtError::Algorithm,
            ),
            (
                sign_with_header(KEY, &json!({"alg": "HS512"}), &good),
                JwtError::Algorithm,
            ),
            (
                sign_with_header(KEY, &json!({"alg": "HS256", "crit": ["b64"]}), &good),
                JwtError::Algorithm,
            ),
            (
                sign_hs256(
                    KEY,
                    &json!({"sub": "u", "exp": NOW - 31, "aud": "authenticated"}),
                ),
                JwtError::Expired,
            ),
            (
                sign_hs256(KEY, &json!({"sub": "u", "aud": "authenticated"})),
                JwtError::Expired,
            ),
            (
                sign_hs256(KEY, &json!({"sub": "u", "exp": NOW + 60, "aud": "anon"})),
                JwtError::Audience,
            ),
            (
                sign_hs256(
                    KEY,
                    &json!({"sub": "", "exp": NOW + 60, "aud": "authenticated"}),
                ),
                JwtError::Subject,
            ),
            (
                sign_hs256(
                    KEY,
                    &json!({"sub": "u", "exp": NOW + 60, "nbf": NOW + 100, "aud": "authenticated"}),
                ),
                JwtError::NotYetValid,
            ),
            (
                sign_hs256(KEY, &json!({"sub": 5, "exp": NOW + 60})),
                JwtError::Malformed,
            ),
            ("a.b".into(), JwtError::Malformed),
            ("a.b.c.d".into(), JwtError::Malformed),
            ("!!.!!.!!".into(), JwtError::Malformed),
            ("".into(), JwtError::Malformed),
        ];
        for (token, want) in cases {
            assert_eq!(v().verify_at(&token, NOW), Err(want), "{token}");
        }
        // alg none with an empty signature, the classic forgery.
        let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let p = URL_SAFE_NO_PAD.encode(good.to_string());
        assert_eq!(
            v().verify_at(&format!("{h}.{p}."), NOW),
            Err(JwtError::Algorithm)
        );
        // A valid token with a tampered payload.
        let t = sign_hs256(KEY, &good);
        let mut parts: Vec<&str> = t.split('.').collect();
        let evil = URL_SAFE_NO_PAD
            .encode(json!({"sub": "admin", "exp": NOW + 60, "aud": "authenticated"}).to_string());
        parts[1] = &evil;
        assert_eq!(
            v().verify_at(&parts.join("."), NOW),
            Err(JwtError::Signature)
        );
    }
}
