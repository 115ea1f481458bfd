//! Coalescing of concurrent calls into one Redis script call.
//!
//! Redis spends a fixed cost on every script call (parsing, the EVALSHA lookup, the reply, the
//! socket), so many small concurrent calls cost it more than one call carrying all of them. A
//! [`Coalescer`] sends a call at once while fewer than `max_in_flight` batches are on the wire,
//! so an idle caller never waits for company (no timer, no tick); while they are, later callers
//! queue, and the queue goes as one batch as soon as a flight lands. Each caller gets its own
//! answer: the batch function returns one result per item, in order.
//!
//! Cancellation: a caller dropped while its own flight is on the wire still hands the queue on
//! (a guard does it on drop), so queued callers never wait for a flight nobody finishes.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::LimiterError;

/// Runs one batch: one result per item, in order.
pub(crate) type BatchFn<K, R> = Arc<
    dyn Fn(Vec<K>) -> Pin<Box<dyn Future<Output = Result<Vec<R>, LimiterError>> + Send>>
        + Send
        + Sync,
>;

type Waiting<K, R> = (K, oneshot::Sender<Result<R, LimiterError>>);

struct State<K, R> {
    /// Batches on the wire (a leader's own call counts as one).
    in_flight: usize,
    /// Callers waiting for the next batch, oldest first.
    queue: Vec<Waiting<K, R>>,
}

/// Coalesces concurrent calls of one kind (see the module docs).
pub(crate) struct Coalescer<K, R> {
    state: Mutex<State<K, R>>,
    run: BatchFn<K, R>,
    /// Batches at once. Two keeps Redis busy while the previous reply travels back.
    max_in_flight: usize,
    /// Items per batch: bounds the work of one script call (and so its latency for others).
    max_batch: usize,
}

impl<K, R> std::fmt::Debug for Coalescer<K, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer")
            .field("max_in_flight", &self.max_in_flight)
            .field("max_batch", &self.max_batch)
            .finish()
    }
}

impl<K: Send + 'static, R: Send + 'static> Coalescer<K, R> {
    pub(crate) fn new(run: BatchFn<K, R>, max_in_flight: usize, max_batch: usize) -> Self {
        Coalescer {
            state: Mutex::new(State {
                in_flight: 0,
                queue: Vec::new(),
            }),
            run,
            max_in_flight: max_in_flight.max(1),
            max_batch: max_batch.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K, R>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One call: sent at once if a flight is free, else with the next batch.
    pub(crate) async fn call(self: &Arc<Self>, item: K) -> Result<R, LimiterError> {
        let item = {
            let mut st = self.lock();
            if st.in_flight < self.max_in_flight && st.queue.is_empty() {
                st.in_flight += 1;
                Ok(item)
            } else {
                let (tx, rx) = oneshot::channel();
                st.queue.push((item, tx));
                Err(rx)
            }
        };
        match item {
            Err(rx) => rx.await.unwrap_or_else(|_| Err(abandoned())),
            Ok(item) => {
                // A free flight: this caller leads its own.
                let _flight = Flight(Arc::clone(self));
                let mut replies = (self.run)(vec![item]).await?;
                match replies.pop() {
                    Some(r) if replies.is_empty() => Ok(r),
                    _ => Err(LimiterError::Protocol {
                        script: "batch",
                        detail: "expected one reply".into(),
                    }),
                }
            }
        }
    }

    /// A flight landed (or its caller went away): start the next batch, or free the slot.
    fn landed(self: &Arc<Self>) {
        let Some(batch) = self.next_batch() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(Arc::clone(self).drain(batch));
            }
            // No runtime to run it on (the process is shutting down): the queued callers get
            // an error through their dropped senders; the flight slot is free again.
            Err(_) => {
                drop(batch);
                self.lock().in_flight -= 1;
            }
        }
    }

    /// Takes the next batch off the queue, keeping the flight slot; frees it if none waits.
    fn next_batch(&self) -> Option<Vec<Waiting<K, R>>> {
        let mut st = self.lock();
        if st.queue.is_empty() {
            st.in_flight -= 1;
            return None;
        }
        let n = st.queue.len().min(self.max_batch);
        Some(st.queue.drain(..n).collect())
    }

    /// Sends batches while callers keep queueing.
    async fn drain(self: Arc<Self>, first: Vec<Waiting<K, R>>) {
        let mut batch = first;
        loop {
            let (items, senders): (Vec<K>, Vec<_>) = batch.into_iter().unzip();
            let n = items.len();
            match (self.run)(items).await {
                Ok(replies) if replies.len() == n => {
                    for (tx, r) in senders.into_iter().zip(replies) {
                        let _ = tx.send(Ok(r));
                    }
                }
                Ok(replies) => {
                    let e = LimiterError::Protocol {
                        script: "batch",
                        detail: format!("expected {n} replies, got {}", replies.len()),
                    };
                    for tx in senders {
                        let _ = tx.send(Err(e.clone()));
                    }
                }
                Err(e) => {
                    for tx in senders {
                        let _ = tx.send(Err(e.clone()));
                    }
                }
            }
            match self.next_batch() {
                Some(next) => batch = next,
                None => return,
            }
        }
    }
}

/// Hands the queue on when a leader's flight ends, however it ends.
struct Flight<K: Send + 'static, R: Send + 'static>(Arc<Coalescer<K, R>>);

impl<K: Send + 'static, R: Send + 'static> Drop for Flight<K, R> {
    fn drop(&mut self) {
        self.0.landed();
    }
}

/// What a queued caller gets if its batch was dropped unsent (the runtime shut down).
fn abandoned() -> LimiterError {
    LimiterError::Unavailable(redis::RedisError::from((
        redis::ErrorKind::Io,
        "batch abandoned",
    )))
}
