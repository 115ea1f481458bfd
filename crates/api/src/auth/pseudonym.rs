//! Pseudonyms of users: hex HMAC-SHA256 of the JWT `sub` under a server key. Logs and the LLM's
//! `user` field (which OpenAI asks for abuse monitoring) carry the pseudonym, never the id.
//!
//! Keyed, not a plain hash: user ids are often guessable (sequential, emails, UUIDs listed
//! elsewhere), and a plain SHA-256 of a guessable id is reversed by hashing the guesses. Without
//! the key nobody can go from an id to its pseudonym or back. The key is `FLEETGATE_USER_HASH_KEY`,
//! or, unset, derived from the JWT secret (so one secret suffices; rotating that secret then
//! changes every pseudonym, which only breaks the continuity of logs and upstream abuse reports).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What the derived key is an HMAC of (under the JWT secret): a fixed label, so the key is
/// unrelated to anything else the secret signs.
const DERIVATION_LABEL: &[u8] = b"fleetgate user pseudonym v1";

/// Turns user ids into pseudonyms.
#[derive(Clone)]
pub struct Pseudonymizer {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymizer(***)")
    }
}

impl Pseudonymizer {
    /// Keyed by `key` itself.
    pub fn with_key(key: &[u8]) -> Self {
        Pseudonymizer {
            // HMAC takes keys of any length: this cannot fail.
            mac: Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!()),
        }
    }

    /// Keyed by a key derived from the JWT secret.
    pub fn derived_from(jwt_secret: &[u8]) -> Self {
        let mut m = Self::with_key(jwt_secret).mac;
        m.update(DERIVATION_LABEL);
        Self::with_key(&m.finalize().into_bytes())
    }

    /// The configured key, or one derived from the JWT secret.
    pub fn from_config(key: Option<&str>, jwt_secret: &str) -> Self {
        match key {
            Some(k) => Self::with_key(k.as_bytes()),
            None => Self::derived_from(jwt_secret.as_bytes()),
        }
    }

    /// The pseudonym of `user_id`: 64 lower-case hex digits.
    pub fn pseudonym(&self, user_id: &str) -> String {
        let mut m = self.mac.clone();
        m.update(user_id.as_bytes());
        hex::encode(m.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    #[test]
    fn keyed_stable_and_not_a_plain_hash() {
        let p = Pseudonymizer::derived_from(b"a-jwt-secret-of-at-least-32-bytes!!");
        let h = p.pseudonym("user-42");
        assert_eq!(h.len(), 64);
        assert_eq!(h, p.pseudonym("user-42"));
        assert_ne!(h, p.pseudonym("user-43"));
        assert_ne!(h, hex::encode(Sha256::digest(b"user-42")));
        let other = Pseudonymizer::derived_from(b"another-jwt-secret-of-32-bytes!!!!");
        assert_ne!(h, other.pseudonym("user-42"));
        // RFC 4231 test case 2: the MAC is plain HMAC-SHA256.
        assert_eq!(
            Pseudonymizer::with_key(b"Jefe").pseudonym("what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
