//! The simulator's configuration ([`SimConfig`]) and the shared state every handler reads
//! ([`SimState`]): corpus, current settings, stats, fault dice and the shutdown signal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::watch;

use crate::clock::SimClock;
use crate::corpus::{Corpus, CorpusConfig};
use crate::faults::RateWindows;
use crate::prompts::{Prompts, RecordedPrompt};
use crate::settings::{Faults, Group, Settings, SettingsError, SettingsPatch};
use crate::stats::{Stats, StatsSnapshot};

/// Everything fixed at start, plus the initial [`Settings`].
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Corpus size, seed and PubMed/S2 overlap.
    pub corpus: CorpusConfig,
    /// Initial faults and LLM behaviour (also what `POST /control/reset` returns to).
    pub settings: Settings,
    /// Largest accepted request body in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Bound of each stats ring buffer (timestamps per endpoint, users, traceparents).
    pub stats_capacity: usize,
    /// Seed of the fault dice; `None` draws one from the OS.
    pub fault_seed: Option<u64>,
    /// Clock of the enforced rate limit (real unless a test sets a manual one).
    pub clock: SimClock,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            corpus: CorpusConfig::default(),
            settings: Settings::default(),
            max_body_bytes: 1 << 20,
            stats_capacity: 10_000,
            fault_seed: None,
            clock: SimClock::real(),
        }
    }
}

impl SimConfig {
    /// Sets the faults of one group.
    pub fn with_faults(mut self, group: Group, faults: Faults) -> Self {
        *self.settings.faults_mut(group) = faults;
        self
    }

    /// Sets a fixed latency plus uniform jitter (ms) for one group.
    pub fn with_latency(mut self, group: Group, latency_ms: u64, jitter_ms: u64) -> Self {
        let f = self.settings.faults_mut(group);
        f.latency_ms = latency_ms;
        f.jitter_ms = jitter_ms;
        self
    }

    pub fn with_llm_api_key(mut self, key: impl Into<String>) -> Self {
        self.settings.llm_api_key = Some(key.into());
        self
    }

    pub fn with_llm_chunk_delay_ms(mut self, ms: u64) -> Self {
        self.settings.llm_chunk_delay_ms = ms;
        self
    }

    pub fn with_llm_answer_latency_ms(mut self, ms: u64) -> Self {
        self.settings.llm_answer_latency_ms = ms;
        self
    }

    pub fn with_corpus_size(mut self, size: usize) -> Self {
        self.corpus.size = size;
        self
    }

    pub fn with_fault_seed(mut self, seed: u64) -> Self {
        self.fault_seed = Some(seed);
        self
    }

    /// The clock of the enforced rate limit, e.g. [`SimClock::manual`] in a test.
    pub fn with_clock(mut self, clock: SimClock) -> Self {
        self.clock = clock;
        self
    }
}

#[derive(Debug)]
struct Inner {
    corpus: Arc<Corpus>,
    initial: Settings,
    settings: RwLock<Settings>,
    stats: Stats,
    dice: Mutex<StdRng>,
    rate_windows: RateWindows,
    clock: SimClock,
    max_body_bytes: usize,
    next_id: AtomicU64,
    shutdown: watch::Sender<bool>,
    prompts: Prompts,
}

/// Shared state of one simulator; cheap to clone.
#[derive(Clone, Debug)]
pub struct SimState {
    inner: Arc<Inner>,
}

impl SimState {
    /// Builds the state (generating or reusing the cached corpus).
    pub fn new(cfg: &SimConfig) -> SimState {
        let dice = match cfg.fault_seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        let (shutdown, _) = watch::channel(false);
        SimState {
            inner: Arc::new(Inner {
                corpus: Corpus::cached(&cfg.corpus),
                initial: cfg.settings.clone(),
                settings: RwLock::new(cfg.settings.clone()),
                stats: Stats::new(cfg.stats_capacity),
                dice: Mutex::new(dice),
                rate_windows: RateWindows::default(),
                clock: cfg.clock.clone(),
                max_body_bytes: cfg.max_body_bytes,
                next_id: AtomicU64::new(1),
                shutdown,
                prompts: Prompts::default(),
            }),
        }
    }

    pub fn corpus(&self) -> &Corpus {
        &self.inner.corpus
    }

    /// Current settings (a copy).
    pub fn settings(&self) -> Settings {
        self.inner
            .settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes settings in place; the change is rejected (and nothing applied) if out of range.
    pub fn set(&self, f: impl FnOnce(&mut Settings)) -> Result<(), SettingsError> {
        let mut guard = self
            .inner
            .settings
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let mut next = guard.clone();
        f(&mut next);
        next.validate()?;
        *guard = next;
        Ok(())
    }

    /// Applies a partial update, as `POST /control` does.
    pub fn apply(&self, patch: &SettingsPatch) -> Result<Settings, SettingsError> {
        let mut guard = self
            .inner
            .settings
            .write()
            .unwrap_or_else(|e| e.into_inner());
        guard.apply(patch)?;
        Ok(guard.clone())
    }

    /// Back to the settings the simulator started with.
    pub fn reset_settings(&self) {
        *self
            .inner
            .settings
            .write()
            .unwrap_or_else(|e| e.into_inner()) = self.inner.initial.clone();
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    pub fn reset_stats(&self) {
        self.inner.stats.reset();
        self.inner.prompts.clear();
    }

    /// The LLM requests last received.
    pub fn prompts(&self) -> Vec<RecordedPrompt> {
        self.inner.prompts.snapshot()
    }

    pub(crate) fn live_prompts(&self) -> &Prompts {
        &self.inner.prompts
    }

    pub(crate) fn live_stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// The clock of the enforced rate limit.
    pub fn clock(&self) -> &SimClock {
        &self.inner.clock
    }

    pub(crate) fn rate_windows(&self) -> &RateWindows {
        &self.inner.rate_windows
    }

    pub(crate) fn max_body_bytes(&self) -> usize {
        self.inner.max_body_bytes
    }

    /// Draws with the shared fault dice.
    pub(crate) fn roll<T>(&self, f: impl FnOnce(&mut StdRng) -> T) -> T {
        let mut rng = self.inner.dice.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut rng)
    }

    /// A process-unique sequence number (for response ids).
    pub(crate) fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Tells the server and hanging requests to stop.
    pub fn trigger_shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Resolves once [`trigger_shutdown`](Self::trigger_shutdown) was called.
    pub fn shutdown_signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.shutdown.subscribe();
        async move {
            // Err means the sender is gone, which also means shutting down.
            let _ = rx.wait_for(|v| *v).await;
        }
    }
}
