//! The verifier: a token's key chosen from the current set by `kid`, its algorithm the key's
//! pinned one, then signature and claims checked.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http::{Request, header};
use jsonwebtoken::Validation;

use super::client::{FetchClient, fetch_client};
use super::key_set::Key;
use super::refresh::{load, refresh_loop};
use super::{ClaimChecks, JwksError, JwksSource, JwksTrust, MAX_TOKEN_LEN};

/// Longest user id taken from `sub` (as for an identity header).
const MAX_SUB_LEN: usize = 256;

/// What a verifier and its refresh task share.
pub(super) struct Inner {
    pub(super) source: JwksSource,
    checks: ClaimChecks,
    pub(super) client: FetchClient,
    pub(super) keys: RwLock<Arc<Vec<Key>>>,
    /// When the last refetch for an unknown kid happened; the lock also makes concurrent
    /// requests with unknown kids share one fetch.
    pub(super) last_unknown_refetch: tokio::sync::Mutex<Option<Instant>>,
}

/// Verifies bearer tokens against a JWKS kept fresh in the background.
#[derive(Clone)]
pub struct JwksVerifier {
    pub(super) inner: Arc<Inner>,
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

    pub(super) fn current(&self) -> Arc<Vec<Key>> {
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
    /// (at most once per [`UNKNOWN_KID_REFETCH`](super::UNKNOWN_KID_REFETCH) however many such tokens arrive).
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
}
