//! A pub/sub subscription that survives its connection: [`follow_channel`] subscribes to one
//! channel on a dedicated connection and, whenever that connection is lost, connects again with
//! backoff (50 ms doubling to 1 s). Messages sent while it was away are lost, which is why every
//! user of it also has a timer or a poll that catches up (the admission heartbeat, the runtime
//! limits' version poll); [`PubSubEvent::Subscribed`] after each (re)subscription is the moment to
//! catch up at once. [`follow_shard_channel`] does the same for a channel that scripts push to
//! with SPUBLISH on a Redis Cluster.

use std::ops::ControlFlow;
use std::time::Duration;

use futures_util::StreamExt;
use redis::PushKind;

use crate::RedisHandle;
use crate::error::is_availability_error;

/// What [`follow_channel`] reports to its callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubSubEvent<'a> {
    /// Subscribed (the first time, or again after a lost connection): anything published while
    /// not subscribed was missed.
    Subscribed,
    /// A message's payload (messages that are not UTF-8 are skipped).
    Message(&'a str),
    /// The connection was lost or could not be made; a new attempt follows after the backoff.
    Disconnected,
}

/// Follows `channel` until `on` answers [`ControlFlow::Break`] (checked on every event, so an
/// owner that went away is noticed at the next message or reconnection attempt). Meant to be
/// spawned as a task.
///
/// ```no_run
/// use std::ops::ControlFlow;
/// use limiter_core::{PubSubEvent, RedisConfig, RedisHandle, follow_channel};
///
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisHandle::new(&RedisConfig::default())?;
/// tokio::spawn(follow_channel(redis, "fg:news".into(), |event| {
///     if let PubSubEvent::Message(m) = event {
///         println!("{m}");
///     }
///     ControlFlow::Continue(())
/// }));
/// # Ok(())
/// # }
/// ```
pub async fn follow_channel<F>(redis: RedisHandle, channel: String, mut on: F)
where
    F: FnMut(PubSubEvent<'_>) -> ControlFlow<()> + Send,
{
    let mut backoff = Duration::from_millis(50);
    loop {
        // Asked again for each connection: behind Sentinel the master may have moved.
        let connect = async {
            redis
                .pubsub_client()
                .await
                .ok()?
                .get_async_pubsub()
                .await
                .ok()
        };
        let connected = tokio::time::timeout(Duration::from_secs(2), connect).await;
        if let Ok(Some(mut pubsub)) = connected
            && pubsub.subscribe(&channel).await.is_ok()
        {
            backoff = Duration::from_millis(50);
            if on(PubSubEvent::Subscribed).is_break() {
                return;
            }
            let mut messages = pubsub.on_message();
            while let Some(msg) = messages.next().await {
                if let Ok(payload) = msg.get_payload::<String>()
                    && on(PubSubEvent::Message(&payload)).is_break()
                {
                    return;
                }
            }
            tracing::warn!(%channel, "pub/sub connection lost; reconnecting");
        }
        if on(PubSubEvent::Disconnected).is_break() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Like [`follow_channel`], for a channel that scripts push to with SPUBLISH when the server is a
/// Redis Cluster 7.0+ (a shard channel: its messages stay on the shard that owns its slot, where a
/// PUBLISH would cross every node of the cluster). Anywhere else (standalone, Sentinel, a cluster
/// without sharded pub/sub) it is [`follow_channel`].
///
/// In Cluster mode the subscription lives on a cluster connection of its own; when a node's
/// connection drops or the slot moves to another shard (the server then unsubscribes), it starts
/// over on a fresh one, which finds the slot's owner again.
pub async fn follow_shard_channel<F>(redis: RedisHandle, channel: String, mut on: F)
where
    F: FnMut(PubSubEvent<'_>) -> ControlFlow<()> + Send,
{
    if !redis.is_cluster() {
        return follow_channel(redis, channel, on).await;
    }
    let mut backoff = Duration::from_millis(50);
    loop {
        let (tx, mut pushes) = tokio::sync::mpsc::unbounded_channel();
        let connect = async {
            let mut conn = redis.cluster_push_connection(tx).await.ok()?;
            Some(conn.ssubscribe(&channel).await.map(|()| conn))
        };
        match tokio::time::timeout(Duration::from_secs(2), connect).await {
            Ok(Some(Ok(_conn))) => {
                backoff = Duration::from_millis(50);
                if on(PubSubEvent::Subscribed).is_break() {
                    return;
                }
                while let Some(push) = pushes.recv().await {
                    match push.kind {
                        PushKind::SMessage => {
                            let payload = push
                                .data
                                .into_iter()
                                .nth(1)
                                .map(redis::from_redis_value::<String>);
                            if let Some(Ok(payload)) = payload
                                && on(PubSubEvent::Message(&payload)).is_break()
                            {
                                return;
                            }
                        }
                        PushKind::Disconnection | PushKind::SUnsubscribe => break,
                        _ => {}
                    }
                }
                tracing::warn!(%channel, "sharded pub/sub connection lost; reconnecting");
            }
            // A server that refuses SSUBSCRIBE has no sharded pub/sub: the scripts PUBLISH there.
            Ok(Some(Err(e))) if !is_availability_error(&e) => {
                tracing::info!(%channel, error = %e, "no sharded pub/sub; plain pub/sub instead");
                return follow_channel(redis, channel, on).await;
            }
            _ => {}
        }
        if on(PubSubEvent::Disconnected).is_break() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}
