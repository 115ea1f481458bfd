//! The background work of one replica: a pub/sub listener that delivers pushed grants, and a
//! heartbeat every `heartbeat_ttl / 3`.
//!
//! The heartbeat keeps the replica in the registry, collects grants whose push was lost, runs a
//! dispatch (slots freed by lease expiry rather than release are handed on there), refreshes
//! watched queue positions, and drives degraded mode and recovery.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use std::ops::ControlFlow;
use tokio::sync::oneshot;

use super::inner::Inner;
use super::mode::Mode;
use crate::pubsub::PubSubEvent;
use crate::{LimiterError, RedisHandle};

impl Inner {
    /// One heartbeat: registry, lost grants, dispatch, watched positions, live replica count, the
    /// fleet's recent peak of slots in use.
    pub(crate) async fn heartbeat(&self) -> Result<(), LimiterError> {
        let watched = self.waiters.watched();
        let ids: Vec<(String, super::class::Class)> =
            watched.iter().map(|(id, c, _)| (id.clone(), *c)).collect();
        let sent = tokio::time::Instant::now();
        let beat = self.scripts.heartbeat(&ids).await?;
        self.outage
            .observe(u32::try_from(beat.peak).unwrap_or(u32::MAX), sent);
        if beat.live > 0 {
            let live = u32::try_from(beat.live).unwrap_or(u32::MAX);
            self.registered_now.store(live, Ordering::Relaxed);
            if self.mode() == Mode::Shared {
                self.live_replicas.store(live, Ordering::Relaxed);
            } else {
                // A Redis that came back empty refills its registry as replicas heartbeat: a
                // count read now may miss replicas still admitting from their local shares, and
                // lowering it would raise this replica's share. Only raise it until shared
                // admission resumes.
                self.live_replicas.fetch_max(live, Ordering::Relaxed);
            }
        }
        for g in beat.grants {
            self.waiters.deliver(&format!("g {g}"));
        }
        for ((_, _, tx), pos) in watched.iter().zip(beat.positions) {
            let pos = u32::try_from(pos).unwrap_or(0);
            // Position 0 means granted: the grant itself reports that.
            if pos > 0 {
                tx.send_if_modified(|p| std::mem::replace(p, pos) != pos);
            }
        }
        Ok(())
    }
}

/// Keeps a pub/sub subscription to this replica's channel (reconnecting with backoff). After each
/// (re)subscription it triggers a heartbeat, which collects grants pushed while unsubscribed.
pub(crate) async fn listen(
    inner: Weak<Inner>,
    redis: RedisHandle,
    channel: String,
    subscribed: oneshot::Sender<()>,
) {
    let mut subscribed = Some(subscribed);
    crate::pubsub::follow_shard_channel(redis, channel, move |event| {
        let Some(inner) = inner.upgrade() else {
            return ControlFlow::Break(());
        };
        match event {
            PubSubEvent::Subscribed => {
                if let Some(tx) = subscribed.take() {
                    let _ = tx.send(());
                }
                inner.heartbeat_now.notify_one();
            }
            PubSubEvent::Message(payload) => inner.waiters.deliver(payload),
            PubSubEvent::Disconnected => {}
        }
        ControlFlow::Continue(())
    })
    .await;
}

/// Heartbeats every `heartbeat_ttl / 3` (or at once when asked), while the admission lives.
pub(crate) async fn heartbeat_loop(inner: Weak<Inner>) {
    let period = match inner.upgrade() {
        Some(i) => i.cfg.heartbeat_ttl / 3,
        None => return,
    };
    loop {
        let notified = match inner.upgrade() {
            Some(i) => {
                let i2 = Arc::clone(&i);
                drop(i);
                tokio::select! {
                    () = tokio::time::sleep(period) => {}
                    () = i2.heartbeat_now.notified() => {}
                }
                i2
            }
            None => return,
        };
        notified.follow_failover();
        if notified.mode() == Mode::Degraded {
            notified.try_recover().await;
            if notified.mode() == Mode::Degraded {
                // Still unreachable: a heartbeat would fail the same way.
                continue;
            }
        }
        let result = notified.heartbeat().await;
        if let Err(e) = &result {
            tracing::debug!(error = %e, "admission heartbeat failed");
        }
        let ok = match &result {
            Ok(()) => true,
            Err(e) => !e.is_unavailable(),
        };
        notified.after_heartbeat(ok).await;
    }
}
