//! Bearer tokens signed by an identity provider (RS256, ES256, ...) and verified against its
//! published keys, a JWKS (RFC 7517) read from a file or fetched over HTTP or HTTPS.
//!
//! Over https the endpoint's certificate must chain to the trusted CAs and name the URL's host
//! (rustls, ring provider): by default the system's CA store, or, with [`JwksTrust::CaFile`],
//! only the CAs of that PEM file (a private identity provider's own CA, so no other CA, public or
//! not, can stand in for it). The CAs are read once, at start. Redirects are not followed.
//!
//! Each key's algorithm is pinned when the set is loaded: the JWK's `alg` when it names an
//! asymmetric signature algorithm of the key's type, else the type's usual one (RSA → RS256,
//! EC P-256 → ES256, EC P-384 → ES384, Ed25519 → EdDSA). A token must name exactly that
//! algorithm: `none`, HMAC (a public key used as an HMAC secret is the classic confusion) and any
//! other mismatch are refused. Symmetric (`oct`) and encryption keys in the set are ignored.
//!
//! The set is refreshed every `jwks_refresh_secs`; a refresh that fails keeps the last good set.
//! A token naming a `kid` the set does not have triggers one refetch (a key rotated at the
//! provider works at once), but at most one per [`UNKNOWN_KID_REFETCH`], so tokens with made-up
//! kids cannot turn the gateway into a flood against the provider.
//!
//! Layout: `key_set.rs` (a JWKS document read into pinned keys), `client.rs` (the http/https
//! client fetching it), `refresh.rs` (loading, the periodic refresh, the unknown-`kid` refetch),
//! `verifier.rs` ([`JwksVerifier`]: a token checked against the current set).

mod client;
mod key_set;
mod refresh;
mod verifier;

use std::path::PathBuf;
use std::time::Duration;

use http::Uri;

pub use verifier::{JwksVerifier, bearer};

/// Bearer tokens longer than this are refused before decoding (bounded work per request).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Longest JWKS document read (a provider's set is a few KiB).
const MAX_JWKS_LEN: usize = 1024 * 1024;
/// At most one refetch for unknown `kid`s in this period.
pub const UNKNOWN_KID_REFETCH: Duration = Duration::from_secs(30);

/// Why a JWKS could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The file could not be read.
    #[error("cannot read {0}")]
    Read(String),
    /// The endpoint could not be reached, or did not answer 200 in time.
    #[error("cannot fetch {0}")]
    Fetch(String),
    /// Not a JWKS, or no usable signature key in it.
    #[error("{0}")]
    Parse(String),
    /// The CA file ([`JwksTrust::CaFile`]) is missing, unreadable or holds no usable CA
    /// certificate.
    #[error("{0}")]
    CaFile(String),
    /// No CA to verify an https endpoint with (the system store is empty or unreadable).
    #[error("{0}")]
    Trust(String),
}

/// Where the set comes from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    /// A file, read again at each refresh.
    File(PathBuf),
    /// An `http://` or `https://` URL.
    Url(Uri),
}

/// Which certificate authorities an `https://` source's certificate must chain to (unused for
/// other sources).
#[derive(Debug, Clone, Default)]
pub enum JwksTrust {
    /// The system's CA store (`SSL_CERT_FILE` / `SSL_CERT_DIR` when set, as for OpenSSL).
    #[default]
    System,
    /// Only the CA certificates of this PEM file; the system store is not consulted.
    CaFile(PathBuf),
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksSource::File(p) => write!(f, "{}", p.display()),
            JwksSource::Url(u) => write!(f, "{u}"),
        }
    }
}

/// What the claims must say beyond a valid signature, `exp` and `sub`.
#[derive(Debug, Clone, Default)]
pub struct ClaimChecks {
    /// `iss` must equal this.
    pub issuer: Option<String>,
    /// `aud` must contain this.
    pub audience: Option<String>,
}

#[cfg(test)]
mod tests;
