//! The background task of a [`crate::Breakers`]: a dedicated pub/sub connection that pushes every
//! state change into the local caches, with the safety nets that make a lost message harmless.
//!
//! - On every (re)connect it re-reads every breaker (messages published while it was away are
//!   lost by pub/sub's design).
//! - Every `refresh_interval` it PINGs the pub/sub connection (a silently dead connection is
//!   noticed) and re-reads every breaker.
//! - While degraded it retries that every 250 ms; a full successful re-read ends degraded mode.
//! - It reconnects by itself with exponential backoff (50 ms doubling to 2 s).
//!
//! It holds only a weak reference to what it feeds ([`Listener`]), so dropping the last
//! `Breakers` clone ends it (the clone's drop also aborts it).

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use limiter_core::RedisHandle;
use tokio::task::AbortHandle;
use tokio::time::{Instant, MissedTickBehavior, timeout};

/// What the task feeds: the breakers of one replica.
pub(crate) trait Listener: Send + Sync + 'static {
    /// Applies a pushed message.
    fn on_message(self: Arc<Self>, payload: &str);
    /// Whether the replica runs on its local breakers (Redis unreachable).
    fn degraded(&self) -> bool;
    /// Re-reads every breaker from Redis; whether every read succeeded.
    fn resync(self: Arc<Self>) -> impl Future<Output = bool> + Send;
}

const TICK: Duration = Duration::from_millis(250);
const IO_TIMEOUT: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Starts the task on `runtime`: subscribed to `channel` through `redis`, re-reading every
/// breaker at least every `refresh`.
pub(crate) fn spawn<L: Listener>(
    runtime: &tokio::runtime::Handle,
    target: &Arc<L>,
    redis: RedisHandle,
    channel: String,
    refresh: Duration,
) -> AbortHandle {
    runtime
        .spawn(run(Arc::downgrade(target), redis, channel, refresh))
        .abort_handle()
}

async fn run<L: Listener>(weak: Weak<L>, redis: RedisHandle, channel: String, refresh: Duration) {
    let mut backoff = BACKOFF_MIN;
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
        let pubsub = match timeout(IO_TIMEOUT, connect).await {
            Ok(Some(mut p)) => match timeout(IO_TIMEOUT, p.subscribe(&channel)).await {
                Ok(Ok(())) => Some(p),
                _ => None,
            },
            _ => None,
        };
        let Some(pubsub) = pubsub else {
            if weak.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            continue;
        };
        backoff = BACKOFF_MIN;
        let (mut sink, mut stream) = pubsub.split();
        let Some(b) = weak.upgrade() else { return };
        let mut last_sync = Instant::now();
        let mut synced = Arc::clone(&b).resync().await;
        drop(b);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else { break };
                    let Some(b) = weak.upgrade() else { return };
                    match std::str::from_utf8(msg.get_payload_bytes()) {
                        Ok(payload) => b.on_message(payload),
                        Err(_) => tracing::warn!("non-UTF-8 breaker message"),
                    }
                }
                _ = tick.tick() => {
                    let Some(b) = weak.upgrade() else { return };
                    let due = !synced || b.degraded() || last_sync.elapsed() >= refresh;
                    if !due {
                        continue;
                    }
                    if !matches!(timeout(IO_TIMEOUT, sink.ping::<String>()).await, Ok(Ok(_))) {
                        break;
                    }
                    last_sync = Instant::now();
                    synced = Arc::clone(&b).resync().await;
                }
            }
        }
        tracing::debug!("breaker pub/sub connection lost; reconnecting");
    }
}
