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

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use axum::body::Body;
use http::{Request, StatusCode, Uri, header};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

/// The client fetching the set: plain http, or https through rustls.
type FetchClient = Client<HttpsConnector<HttpConnector>, Body>;

/// Bearer tokens longer than this are refused before decoding (bounded work per request).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Longest JWKS document read (a provider's set is a few KiB).
const MAX_JWKS_LEN: usize = 1024 * 1024;
/// Longest wait for the JWKS endpoint's whole answer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// At most one refetch for unknown `kid`s in this period.
pub const UNKNOWN_KID_REFETCH: Duration = Duration::from_secs(30);
/// Longest user id taken from `sub` (as for an identity header).
const MAX_SUB_LEN: usize = 256;

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

/// One usable key, its algorithm pinned.
struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// The algorithm a JWK is used with, or `None` for a key that cannot verify signatures here.
fn pinned_alg(jwk: &Jwk) -> Option<Algorithm> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        // `oct` (a shared secret has no place in a public key set) and anything else.
        _ => return None,
    };
    let Some(named) = jwk.common.key_algorithm else {
        return Some(by_type);
    };
    let alg = match named {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    };
    // The named algorithm must belong to the key's type (an RSA key claiming ES256 is broken).
    let same_family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => matches!(
            alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        ),
        _ => alg == by_type,
    };
    same_family.then_some(alg)
}

/// The usable keys of a JWKS document; keys it cannot use are skipped, but none at all is an
/// error.
fn parse_set(text: &[u8]) -> Result<Vec<Key>, JwksError> {
    #[derive(serde::Deserialize)]
    struct Doc {
        keys: Vec<serde_json::Value>,
    }
    let doc: Doc = serde_json::from_slice(text).map_err(|_| {
        JwksError::Parse("not a JWKS document (a JSON object with \"keys\")".into())
    })?;
    let mut keys = Vec::new();
    for (i, value) in doc.keys.into_iter().enumerate() {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            tracing::warn!(index = i, "JWKS: a key that is not a valid JWK, ignored");
            continue;
        };
        let Some(alg) = pinned_alg(&jwk) else {
            tracing::warn!(index = i, kid = ?jwk.common.key_id, "JWKS: not a signature key usable here, ignored");
            continue;
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            tracing::warn!(index = i, kid = ?jwk.common.key_id, "JWKS: key material unreadable, ignored");
            continue;
        };
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            alg,
            key,
        });
    }
    if keys.is_empty() {
        return Err(JwksError::Parse(
            "no usable signature key (RSA, EC P-256/P-384 or Ed25519) in the set".into(),
        ));
    }
    Ok(keys)
}

/// What the claims must say beyond a valid signature, `exp` and `sub`.
#[derive(Debug, Clone, Default)]
pub struct ClaimChecks {
    /// `iss` must equal this.
    pub issuer: Option<String>,
    /// `aud` must contain this.
    pub audience: Option<String>,
}

struct Inner {
    source: JwksSource,
    checks: ClaimChecks,
    client: FetchClient,
    keys: RwLock<Arc<Vec<Key>>>,
    /// When the last refetch for an unknown kid happened; the lock also makes concurrent
    /// requests with unknown kids share one fetch.
    last_unknown_refetch: tokio::sync::Mutex<Option<Instant>>,
}

/// Verifies bearer tokens against a JWKS kept fresh in the background.
#[derive(Clone)]
pub struct JwksVerifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JwksVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksVerifier")
            .field("source", &self.inner.source)
            .field("keys", &self.key_count())
            .finish_non_exhaustive()
    }
}

/// What a token's header says, when it is worth looking at.
fn token_header(token: &str) -> Option<jsonwebtoken::Header> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    jsonwebtoken::decode_header(token).ok()
}

/// The bearer token of a request.
pub fn bearer<B>(req: &Request<B>) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

impl JwksVerifier {
    /// Loads the set once (an error names what failed) and keeps it fresh every `refresh`;
    /// an https source is verified against the system's CA store.
    /// Must be called within a tokio runtime.
    pub async fn start(
        source: JwksSource,
        checks: ClaimChecks,
        refresh: Duration,
    ) -> Result<JwksVerifier, JwksError> {
        Self::start_trusting(source, JwksTrust::System, checks, refresh).await
    }

    /// As [`JwksVerifier::start`], an https source verified against `trust`.
    pub async fn start_trusting(
        source: JwksSource,
        trust: JwksTrust,
        checks: ClaimChecks,
        refresh: Duration,
    ) -> Result<JwksVerifier, JwksError> {
        let client = fetch_client(&source, &trust)?;
        let keys = load(&client, &source).await?;
        let inner = Arc::new(Inner {
            source,
            checks,
            client,
            keys: RwLock::new(Arc::new(keys)),
            last_unknown_refetch: tokio::sync::Mutex::new(None),
        });
        // The task holds a weak reference: it ends once the verifier is dropped.
        let weak = Arc::downgrade(&inner);
        tokio::spawn(refresh_loop(weak, refresh.max(Duration::from_secs(1))));
        Ok(JwksVerifier { inner })
    }

    /// Keys in the current set.
    pub fn key_count(&self) -> usize {
        self.current().len()
    }

    fn current(&self) -> Arc<Vec<Key>> {
        match self.inner.keys.read() {
            Ok(k) => Arc::clone(&k),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The `sub` of `token`, if it verifies against the current set.
    pub fn verify(&self, token: &str) -> Option<String> {
        let head = token_header(token)?;
        let keys = self.current();
        let key = match &head.kid {
            Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid))?,
            // No kid: only a set with a single key of the token's algorithm says which key.
            None => {
                let mut same = keys.iter().filter(|k| k.alg == head.alg);
                let only = same.next()?;
                if same.next().is_some() {
                    return None;
                }
                only
            }
        };
        // The key's pinned algorithm, never the one the token proposes.
        if head.alg != key.alg {
            return None;
        }
        let mut v = Validation::new(key.alg);
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "sub"]);
        match &self.inner.checks.audience {
            Some(aud) => v.set_audience(&[aud]),
            None => v.validate_aud = false,
        }
        if let Some(iss) = &self.inner.checks.issuer {
            v.set_issuer(&[iss]);
        }
        let data =
            jsonwebtoken::decode::<HashMap<String, serde_json::Value>>(token, &key.key, &v).ok()?;
        let sub = data.claims.get("sub")?.as_str()?;
        let ok = !sub.is_empty()
            && sub.len() <= MAX_SUB_LEN
            && sub.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| sub.to_string())
    }

    /// Before `req` is verified: when its token names a kid the set lacks, refetch the set
    /// (at most once per [`UNKNOWN_KID_REFETCH`] however many such tokens arrive).
    pub fn prepare<B>(
        &self,
        req: &Request<B>,
    ) -> impl Future<Output = ()> + Send + 'static + use<B> {
        // The kid is read now: the request itself need not live across the fetch.
        let kid = bearer(req).and_then(token_header).and_then(|h| h.kid);
        let this = self.clone();
        async move {
            if let Some(kid) = kid {
                this.refetch_for(&kid).await;
            }
        }
    }

    async fn refetch_for(&self, kid: &str) {
        if self.knows(kid) {
            return;
        }
        let mut last = self.inner.last_unknown_refetch.lock().await;
        // Another request may have refetched while this one waited for the lock.
        if self.knows(kid) || last.is_some_and(|t| t.elapsed() < UNKNOWN_KID_REFETCH) {
            return;
        }
        *last = Some(Instant::now());
        match load(&self.inner.client, &self.inner.source).await {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), "JWKS refetched for an unknown kid");
                self.store(keys);
            }
            Err(e) => tracing::warn!(error = %e, "JWKS refetch failed; keeping the last good set"),
        }
    }

    fn knows(&self, kid: &str) -> bool {
        self.current().iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    fn store(&self, keys: Vec<Key>) {
        store(&self.inner, keys);
    }
}

fn store(inner: &Inner, keys: Vec<Key>) {
    let keys = Arc::new(keys);
    match inner.keys.write() {
        Ok(mut k) => *k = keys,
        Err(poisoned) => *poisoned.into_inner() = keys,
    }
}

async fn refresh_loop(weak: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        match load(&inner.client, &inner.source).await {
            Ok(keys) => store(&inner, keys),
            Err(e) => {
                tracing::warn!(error = %e, "JWKS refresh failed; keeping the last good set");
            }
        }
    }
}

/// The roots of `trust`, read now (a CA file is not read again at refreshes).
fn roots(trust: &JwksTrust) -> Result<RootCertStore, JwksError> {
    let mut roots = RootCertStore::empty();
    match trust {
        JwksTrust::CaFile(path) => {
            let shown = path.display();
            let bad = |why: String| JwksError::CaFile(format!("{shown}: {why}"));
            let pem =
                std::fs::read(path).map_err(|e| bad(format!("cannot read ({})", e.kind())))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| bad(format!("not valid PEM ({e})")))?;
                roots
                    .add(cert)
                    .map_err(|e| bad(format!("not a usable CA certificate ({e})")))?;
            }
            if roots.is_empty() {
                return Err(bad(
                    "no CA certificate in it (PEM, BEGIN CERTIFICATE)".into()
                ));
            }
        }
        JwksTrust::System => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "JWKS: a system CA certificate could not be read");
            }
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            if ignored > 0 {
                tracing::warn!(
                    ignored,
                    "JWKS: system CA certificates rustls cannot use, ignored"
                );
            }
            if added == 0 {
                return Err(JwksError::Trust(
                    "no CA certificate in the system store to verify https with (install the \
                     ca-certificates package, or set identity.jwks_ca_file)"
                        .into(),
                ));
            }
        }
    }
    Ok(roots)
}

/// The client of `source`: for an `https://` URL, rustls with the ring provider and the roots
/// of `trust`, https only (no fallback to plain http); otherwise plain http, its TLS side
/// trusting nothing (it is never used: the URL does not change and redirects are not followed).
fn fetch_client(source: &JwksSource, trust: &JwksTrust) -> Result<FetchClient, JwksError> {
    let https = matches!(source, JwksSource::Url(u) if u.scheme_str() == Some("https"));
    let roots = if https {
        roots(trust)?
    } else {
        RootCertStore::empty()
    };
    // The provider is named here, not taken from the process default: the gateway never runs
    // with another one, whatever else installed one.
    let tls =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| JwksError::Trust(format!("TLS setup: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = HttpsConnectorBuilder::new().with_tls_config(tls);
    let connector = if https {
        connector.https_only()
    } else {
        connector.https_or_http()
    };
    Ok(Client::builder(TokioExecutor::new()).build(connector.enable_http1().build()))
}

/// `e` and its sources (hyper's own text is only "client error (Connect)"; the cause, such as
/// a certificate refused, is further down).
fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

async fn load(client: &FetchClient, source: &JwksSource) -> Result<Vec<Key>, JwksError> {
    let text = match source {
        JwksSource::File(path) => {
            let shown = path.display().to_string();
            let bytes = tokio::fs::read(path)
                .await
                .map_err(|e| JwksError::Read(format!("{shown}: {}", e.kind())))?;
            if bytes.len() > MAX_JWKS_LEN {
                return Err(JwksError::Parse(format!("{shown}: larger than 1 MiB")));
            }
            bytes
        }
        JwksSource::Url(uri) => fetch(client, uri).await?,
    };
    parse_set(&text).map_err(|e| JwksError::Parse(format!("{source}: {e}")))
}

async fn fetch(client: &FetchClient, uri: &Uri) -> Result<Vec<u8>, JwksError> {
    let failed = |why: String| JwksError::Fetch(format!("{uri}: {why}"));
    let req = Request::get(uri.clone())
        .header(header::ACCEPT, "application/json")
        .body(Body::empty())
        .map_err(|_| failed("not a usable URL".into()))?;
    let work = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| failed(format!("connection failed ({})", causes(&e))))?;
        if resp.status() != StatusCode::OK {
            return Err(failed(format!("answered {}", resp.status())));
        }
        let body = axum::body::to_bytes(Body::new(resp.into_body()), MAX_JWKS_LEN)
            .await
            .map_err(|_| failed("body unreadable or larger than 1 MiB".into()))?;
        Ok(body.to_vec())
    };
    tokio::time::timeout(FETCH_TIMEOUT, work)
        .await
        .map_err(|_| failed(format!("no answer within {} s", FETCH_TIMEOUT.as_secs())))?
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn jwk(kty: &str, extra: &str) -> Vec<u8> {
        format!("{{\"keys\":[{{\"kty\":\"{kty}\",\"kid\":\"k\"{extra}}}]}}").into_bytes()
    }

    #[test]
    fn symmetric_and_encryption_keys_are_not_usable() {
        assert!(parse_set(&jwk("oct", ",\"k\":\"c2VjcmV0\"")).is_err());
        assert!(parse_set(b"{\"keys\":[]}").is_err());
        assert!(parse_set(b"[]").is_err());
        assert!(parse_set(b"not json").is_err());
    }
}
