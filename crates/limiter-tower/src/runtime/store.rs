//! Where the runtime-limits document lives: one Redis hash under the service's prefix,
//! `{prefix}:runtime-limits:{name}` with fields `v` (the version) and `doc` (the JSON), so that a
//! replica can poll the version alone.
//!
//! Writes go through `lua/runtime_limits_write.lua`: it replaces the document only if it is still
//! at the version the writer read, bumps the version, stamps Redis time and publishes the new
//! version on `{prefix}:runtime-limits:{name}:ch`. [`LimitsStore::update`] reads, applies a change
//! and writes; when another write came first it reads again and applies the change to that, so
//! two operators changing different things at once both get their change.
//!
//! Every replica follows the document with [`LimitsStore::watch`]: the pub/sub announcement
//! brings a change within one hop, and a poll of the version every `poll` (500 ms by default)
//! catches a lost message, so a change reaches every replica within `poll` plus a round trip
//! even without pub/sub. The key keeps a TTL of 90 days, renewed by every write and hourly by
//! every replica following it: it outlives restarts, and only a service gone for 90 days loses it.

use std::ops::ControlFlow;
use std::sync::{Arc, Weak};
use std::time::Duration;

use limiter_core::scripts::LuaScript;
use limiter_core::{LimiterError, PubSubEvent, RedisHandle, follow_channel};
use tokio::sync::{Notify, watch};

use super::document::{InvalidChange, LimitsDocument};

static WRITE: LuaScript = LuaScript::new(
    "runtime_limits_write",
    include_str!("../../../../lua/runtime_limits_write.lua"),
);

/// How long the document outlives its last write or its last follower.
const KEY_TTL: Duration = Duration::from_secs(90 * 86_400);
/// How often followers renew the key's TTL.
const TOUCH_EVERY: Duration = Duration::from_secs(3600);
/// Writes retried on a conflict before giving up (each conflict is another writer's success).
const MAX_ATTEMPTS: usize = 16;

/// Why a change could not be made.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// The change itself is refused.
    #[error(transparent)]
    Invalid(#[from] InvalidChange),
    /// Redis could not be reached or answered oddly.
    #[error(transparent)]
    Redis(#[from] LimiterError),
    /// The stored document is not a document (written by something else).
    #[error("the stored runtime-limits document cannot be read: {0}")]
    Corrupt(String),
    /// Other writes kept coming first.
    #[error("too many concurrent changes; try again")]
    Contended,
}

/// The document of one service in Redis.
#[derive(Debug, Clone)]
pub struct LimitsStore {
    redis: RedisHandle,
    key: String,
    channel: String,
}

impl LimitsStore {
    /// The document named `name` (one per protected service) under `redis`'s prefix.
    pub fn new(redis: RedisHandle, name: &str) -> Self {
        let key = format!("{}:runtime-limits:{name}", redis.keys().prefix());
        LimitsStore {
            channel: format!("{key}:ch"),
            key,
            redis,
        }
    }

    /// The Redis key (tests, operators).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The stored document (an empty one at version 0 if none is).
    pub async fn load(&self) -> Result<LimitsDocument, UpdateError> {
        let cmd = redis::cmd("HGET").arg(&self.key).arg("doc").clone();
        let json: Option<String> = self.redis.cmd(&cmd).await?;
        match json {
            None => Ok(LimitsDocument::default()),
            Some(j) => serde_json::from_str(&j).map_err(|e| UpdateError::Corrupt(e.to_string())),
        }
    }

    /// The stored version alone (0 if none): what the poll reads.
    pub async fn version(&self) -> Result<u64, LimiterError> {
        let cmd = redis::cmd("HGET").arg(&self.key).arg("v").clone();
        let v: Option<u64> = self.redis.cmd(&cmd).await?;
        Ok(v.unwrap_or(0))
    }

    /// Writes `doc` if the stored version is still `doc.version`; the stored document (with its
    /// new version and time) or `None` if another write came first.
    pub async fn write_if_current(
        &self,
        doc: &LimitsDocument,
    ) -> Result<Option<LimitsDocument>, UpdateError> {
        let json = serde_json::to_string(doc).map_err(|e| UpdateError::Corrupt(e.to_string()))?;
        let expected = doc.version.to_string();
        let ttl = KEY_TTL.as_millis().to_string();
        let (written, _version, stored): (i64, u64, String) = self
            .redis
            .eval(
                &WRITE,
                &[&self.key],
                &[&expected, &json, &self.channel, &ttl],
            )
            .await?;
        if written != 1 {
            return Ok(None);
        }
        serde_json::from_str(&stored)
            .map(Some)
            .map_err(|e| UpdateError::Corrupt(e.to_string()))
    }

    /// Applies `change` to the stored document as `by` and writes it; on a conflict, applies it
    /// again to the newer document. Returns the document before and after.
    pub async fn update(
        &self,
        by: &str,
        mut change: impl FnMut(&mut LimitsDocument) -> Result<(), InvalidChange>,
    ) -> Result<(LimitsDocument, LimitsDocument), UpdateError> {
        for _ in 0..MAX_ATTEMPTS {
            let old = self.load().await?;
            let mut new = old.clone();
            change(&mut new)?;
            new.updated_by = by.to_string();
            if let Some(stored) = self.write_if_current(&new).await? {
                return Ok((old, stored));
            }
        }
        Err(UpdateError::Contended)
    }

    /// Follows the document: loads it now (an empty one if Redis cannot answer yet), then keeps
    /// the returned receiver at the newest version (pub/sub, and a version poll every `poll`).
    /// The background tasks end when every receiver is dropped.
    pub async fn watch(&self, poll: Duration) -> watch::Receiver<Arc<LimitsDocument>> {
        let first = match self.load().await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "runtime limits not loaded yet; following them");
                LimitsDocument::default()
            }
        };
        let (tx, rx) = watch::channel(Arc::new(first));
        let tx = Arc::new(tx);
        let wake = Arc::new(Notify::new());
        let weak: Weak<Notify> = Arc::downgrade(&wake);
        tokio::spawn(follow_channel(
            self.redis.clone(),
            self.channel.clone(),
            move |event| {
                let Some(wake) = weak.upgrade() else {
                    return ControlFlow::Break(());
                };
                // A message is a new version; a (re)subscription may have missed one.
                if matches!(event, PubSubEvent::Message(_) | PubSubEvent::Subscribed) {
                    wake.notify_one();
                }
                ControlFlow::Continue(())
            },
        ));
        tokio::spawn(follow(self.clone(), tx, wake, poll));
        rx
    }

    /// Brings `tx` to the stored document if its version differs (a newer one, or an older one
    /// after Redis lost the key: the stored state is the fleet's truth).
    async fn refresh(&self, tx: &watch::Sender<Arc<LimitsDocument>>) -> Result<(), UpdateError> {
        let stored = self.version().await?;
        if stored == tx.borrow().version {
            return Ok(());
        }
        let doc = self.load().await?;
        tx.send_if_modified(|cur| {
            if cur.version == doc.version {
                return false;
            }
            *cur = Arc::new(doc);
            true
        });
        Ok(())
    }

    async fn touch(&self) -> Result<(), LimiterError> {
        let cmd = redis::cmd("PEXPIRE")
            .arg(&self.key)
            .arg(KEY_TTL.as_millis().to_string())
            .clone();
        let _: i64 = self.redis.cmd(&cmd).await?;
        Ok(())
    }
}

/// The poll loop: wakes on a pub/sub announcement or every `poll`, and refreshes.
async fn follow(
    store: LimitsStore,
    tx: Arc<watch::Sender<Arc<LimitsDocument>>>,
    wake: Arc<Notify>,
    poll: Duration,
) {
    let mut touched = tokio::time::Instant::now() - TOUCH_EVERY;
    loop {
        if tx.is_closed() {
            return;
        }
        if touched.elapsed() >= TOUCH_EVERY && store.touch().await.is_ok() {
            touched = tokio::time::Instant::now();
        }
        if let Err(e) = store.refresh(&tx).await {
            tracing::debug!(error = %e, "runtime limits poll failed");
        }
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            () = wake.notified() => {}
        }
    }
}
