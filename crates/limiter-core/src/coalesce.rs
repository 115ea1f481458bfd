//! Coalescing of concurrent calls into one Redis script call.
//!
//! Redis spends a fixed cost on every script call (parsing, the EVALSHA lookup, the reply, the
//! socket), so many small concurrent calls cost it more than one call carrying all of them. A
//! [`Coalescer`] sends a call as soon as fewer than `max_in_flight` batches are on the wire (a
//! gathering one yields to the scheduler once first: callers woken by the same burst of replies,
//! as one read of a connection completes many calls and Redis answers a whole event-loop round at
//! once, run in that tick and go in the same call). No timer: an idle caller never waits for
//! company. While flights are full, later callers queue, and the queue goes as one batch as soon
//! as a flight lands. Each caller gets its own answer: the batch function returns one result per
//! item, in order.
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
    /// Queued calls whose caller went away are not sent (see [`Coalescer::skipping_abandoned`]).
    skip_abandoned: bool,
    /// A leader yields once before its flight leaves (see [`Coalescer::gathering`]).
    gather: bool,
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
            skip_abandoned: false,
            gather: false,
        }
    }

    /// A leader yields to the scheduler once before its flight leaves, so that callers woken by
    /// the same burst of replies go with it: for calls that come in bursts (entries into a queue
    /// whose grants arrive together), not for ones whose callers arrive one by one.
    pub(crate) fn gathering(mut self) -> Self {
        self.gather = true;
        self
    }

    /// A queued call whose caller was dropped before its batch left is not sent: for calls
    /// whose effect nobody must be left holding (entering a queue), unlike releases, which
    /// must reach Redis whoever waits for the answer.
    pub(crate) fn skipping_abandoned(mut self) -> Self {
        self.skip_abandoned = true;
        self
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
                // A free flight: this caller leads it (gathering: with whoever queued during its
                // yield).
                let mut flight = Flight(Some(Arc::clone(self)));
                let mut item = item;
                if self.gather {
                    tokio::task::yield_now().await;
                    match self.with_company(item) {
                        Ok(alone) => item = alone,
                        Err((batch, rx)) => {
                            // The batch is sent by a task of its own, which keeps the flight: the
                            // others' calls must go (and be answered) even if this caller goes
                            // away.
                            flight.0 = None;
                            self.spawn_drain(batch);
                            return rx.await.unwrap_or_else(|_| Err(abandoned()));
                        }
                    }
                }
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

    /// A leader's item alone (`Ok`), or, if callers queued meanwhile, the batch it heads and the
    /// receiver of its own answer.
    #[allow(clippy::type_complexity)]
    fn with_company(
        &self,
        item: K,
    ) -> Result<
        K,
        (
            Vec<Waiting<K, R>>,
            oneshot::Receiver<Result<R, LimiterError>>,
        ),
    > {
        let (tx, rx) = oneshot::channel();
        let batch = {
            let mut st = self.lock();
            st.queue.insert(0, (item, tx));
            self.take_queued(&mut st)
        };
        match <[Waiting<K, R>; 1]>::try_from(batch) {
            Ok([(item, _)]) => Ok(item),
            Err(batch) => Err((batch, rx)),
        }
    }

    /// The next batch off the head of the queue (callers gone dropped first when skipping).
    fn take_queued(&self, st: &mut State<K, R>) -> Vec<Waiting<K, R>> {
        if self.skip_abandoned {
            st.queue.retain(|(_, tx)| !tx.is_closed());
        }
        let n = st.queue.len().min(self.max_batch);
        st.queue.drain(..n).collect()
    }

    /// A flight landed (or its caller went away): start the next batch, or free the slot.
    fn landed(self: &Arc<Self>) {
        let Some(batch) = self.next_batch() else {
            return;
        };
        self.spawn_drain(batch);
    }

    /// Sends `batch` (and the batches queued after it) from a task of its own, which holds the
    /// flight slot until the queue is empty.
    fn spawn_drain(self: &Arc<Self>, batch: Vec<Waiting<K, R>>) {
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
        let batch = self.take_queued(&mut st);
        if batch.is_empty() {
            st.in_flight -= 1;
            return None;
        }
        Some(batch)
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

/// Hands the queue on when a leader's flight ends, however it ends (`None`: handed to a drain).
struct Flight<K: Send + 'static, R: Send + 'static>(Option<Arc<Coalescer<K, R>>>);

impl<K: Send + 'static, R: Send + 'static> Drop for Flight<K, R> {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.landed();
        }
    }
}

/// What a queued caller gets if its batch was dropped unsent (the runtime shut down).
fn abandoned() -> LimiterError {
    LimiterError::Unavailable(redis::RedisError::from((
        redis::ErrorKind::Io,
        "batch abandoned",
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::Notify;

    /// A coalescer whose first flight waits for `gate`; records every batch it sends.
    fn gated(gate: Arc<Notify>, sent: Arc<Mutex<Vec<Vec<u32>>>>) -> Coalescer<u32, u32> {
        let run: BatchFn<u32, u32> = Arc::new(move |items: Vec<u32>| {
            let (gate, sent) = (Arc::clone(&gate), Arc::clone(&sent));
            Box::pin(async move {
                let first = {
                    let mut s = sent.lock().unwrap_or_else(|p| p.into_inner());
                    s.push(items.clone());
                    s.len() == 1
                };
                if first {
                    gate.notified().await;
                }
                Ok(items)
            })
        });
        Coalescer::new(run, 1, 16)
    }

    async fn batches_after_one_queued_caller_leaves(skip: bool) -> Vec<Vec<u32>> {
        let (gate, sent) = (Arc::new(Notify::new()), Arc::new(Mutex::new(Vec::new())));
        let c = gated(Arc::clone(&gate), Arc::clone(&sent));
        let c = Arc::new(if skip { c.skipping_abandoned() } else { c });
        let lead = tokio::spawn({
            let c = Arc::clone(&c);
            async move { c.call(1).await }
        });
        // The leader's flight is on the wire (recorded) before the others queue behind it.
        while sent.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
            tokio::task::yield_now().await;
        }
        let stays = tokio::spawn({
            let c = Arc::clone(&c);
            async move { c.call(2).await }
        });
        let leaves = tokio::spawn({
            let c = Arc::clone(&c);
            async move { c.call(3).await }
        });
        while c.lock().queue.len() < 2 {
            tokio::task::yield_now().await;
        }
        leaves.abort();
        let _ = leaves.await;
        gate.notify_one();
        assert_eq!(lead.await.ok().and_then(Result::ok), Some(1));
        assert_eq!(stays.await.ok().and_then(Result::ok), Some(2));
        let batches = sent.lock().unwrap_or_else(|p| p.into_inner());
        batches.clone()
    }

    #[tokio::test]
    async fn callers_of_one_scheduler_tick_go_in_one_call() {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let run: BatchFn<u32, u32> = Arc::new({
            let sent = Arc::clone(&sent);
            move |items: Vec<u32>| {
                sent.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(items.clone());
                Box::pin(async move { Ok(items.iter().map(|i| i * 10).collect()) })
            }
        });
        let c = Arc::new(Coalescer::new(run, 1, 16).gathering());
        // Spawned together, as tasks woken by one read: they run in one tick of this
        // single-threaded runtime.
        let calls: Vec<_> = (0..5)
            .map(|i| {
                let c = Arc::clone(&c);
                tokio::spawn(async move { c.call(i).await })
            })
            .collect();
        for (i, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.ok().and_then(Result::ok), Some(i as u32 * 10));
        }
        assert_eq!(
            *sent.lock().unwrap_or_else(|p| p.into_inner()),
            [vec![0, 1, 2, 3, 4]]
        );
        assert_eq!(c.lock().in_flight, 0, "the flight is free again");
    }

    #[tokio::test]
    async fn a_caller_gone_before_its_batch_left_is_not_sent_when_skipping() {
        assert_eq!(
            batches_after_one_queued_caller_leaves(true).await,
            [vec![1], vec![2]]
        );
    }

    #[tokio::test]
    async fn without_skipping_every_queued_call_is_sent() {
        assert_eq!(
            batches_after_one_queued_caller_leaves(false).await,
            [vec![1], vec![2, 3]]
        );
    }
}
