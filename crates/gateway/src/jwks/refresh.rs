//! Keeping the set fresh: loading it from its source, the periodic refresh, and the refetch a
//! token naming an unknown `kid` triggers. A load that fails keeps the last good set.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::client::{FetchClient, fetch};
use super::key_set::{Key, parse_set};
use super::verifier::Inner;
use super::{JwksError, JwksSource, JwksVerifier, MAX_JWKS_LEN, UNKNOWN_KID_REFETCH};

impl JwksVerifier {
    /// Refetches the set unless it has `kid` or the last refetch for an unknown kid is less
    /// than [`UNKNOWN_KID_REFETCH`] old.
    pub(super) async fn refetch_for(&self, kid: &str) {
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

/// Reloads the set every `every` until the verifier is dropped.
pub(super) async fn refresh_loop(weak: Weak<Inner>, every: Duration) {
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

/// The usable keys of `source`, read or fetched now.
pub(super) async fn load(client: &FetchClient, source: &JwksSource) -> Result<Vec<Key>, JwksError> {
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
