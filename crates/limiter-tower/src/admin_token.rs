//! [`AdminToken`]: an operator's bearer secret, compared in constant time and never printed.

use sha2::{Digest, Sha256};

/// An admin bearer token. Only its SHA-256 digest is kept: comparing digests makes the time
/// independent of the candidate's content and length, and a memory dump does not hold the token.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl AdminToken {
    /// From the configured secret.
    pub fn new(token: &str) -> Self {
        AdminToken {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// Whether `candidate` is the token.
    ///
    /// ```
    /// use limiter_tower::AdminToken;
    ///
    /// let t = AdminToken::new("s3cret");
    /// assert!(t.matches("s3cret"));
    /// assert!(!t.matches("s3cre"));
    /// ```
    pub fn matches(&self, candidate: &str) -> bool {
        let d: [u8; 32] = Sha256::digest(candidate.as_bytes()).into();
        // Fold every byte in: no early exit.
        d.iter()
            .zip(self.digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<hidden>)")
    }
}
