//! A local cache of clients known to be over their limit, in front of a [`SlidingWindow`].
//!
//! Once Redis has denied a client, every replica-local call until that denial's `retry_after` is
//! also a denial (the window cannot reopen sooner: admissions only age out), so it is answered
//! from memory without a Redis round trip. This is what keeps a flood from one IP from costing
//! Redis anything. Allowed calls always go to Redis.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{LimiterError, SlidingWindow, WindowDecision};

/// Entries kept before expired ones are pruned (and, if all are live, the cache is cleared: the
/// cost of forgetting is only a Redis round trip).
const MAX_ENTRIES: usize = 100_000;

/// A sliding window with a local cache of denials.
#[derive(Debug)]
pub struct CachedWindow {
    window: SlidingWindow,
    denied: Mutex<HashMap<Vec<u8>, (Instant, WindowDecision)>>,
}

impl CachedWindow {
    /// Wraps a window.
    pub fn new(window: SlidingWindow) -> Self {
        CachedWindow {
            window,
            denied: Mutex::new(HashMap::new()),
        }
    }

    /// The wrapped window.
    pub fn window(&self) -> &SlidingWindow {
        &self.window
    }

    /// Like [`SlidingWindow::check`]; a client denied earlier is denied locally until its
    /// `retry_after` has passed. The second value says whether the answer came from the cache.
    pub async fn check(&self, client: &[u8]) -> Result<(WindowDecision, bool), LimiterError> {
        let now = Instant::now();
        if let Some(cached) = self.cached(client, now) {
            return Ok((cached, true));
        }
        let d = self.window.check(client).await?;
        if !d.allowed
            && d.retry_after > Duration::ZERO
            && let Ok(mut m) = self.denied.lock()
        {
            if m.len() >= MAX_ENTRIES {
                m.retain(|_, (until, _)| *until > now);
                if m.len() >= MAX_ENTRIES {
                    m.clear();
                }
            }
            m.insert(client.to_vec(), (now + d.retry_after, d));
        }
        Ok((d, false))
    }

    /// Whether `client` is denied from the cache right now: its next [`check`](Self::check)
    /// is a local refusal, costing Redis nothing.
    pub fn is_denied(&self, client: &[u8]) -> bool {
        self.cached(client, Instant::now()).is_some()
    }

    fn cached(&self, client: &[u8], now: Instant) -> Option<WindowDecision> {
        let mut m = self.denied.lock().ok()?;
        let (until, d) = m.get(client)?;
        if *until <= now {
            m.remove(client);
            return None;
        }
        let left = *until - now;
        Some(WindowDecision {
            allowed: false,
            remaining: 0,
            retry_after: left,
            reset: d.reset.saturating_sub(d.retry_after) + left,
            ..*d
        })
    }
}
