//! Runtime-settable behaviour: latency, failure and throttling rates per endpoint group, and the
//! LLM's pacing. Read on every request, changed by `POST /control`, CLI flags or
//! [`RunningSim::set`](crate::RunningSim::set).

use serde::{Deserialize, Serialize};

/// A setting out of its range; nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting: {0}")]
pub struct SettingsError(pub String);

/// The three simulated upstream services; faults are set per group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    /// PubMed E-utilities (`/pubmed`, `/entrez/eutils`).
    Pubmed,
    /// Semantic Scholar Graph API v1 (`/s2/graph/v1`, `/graph/v1`).
    S2,
    /// OpenAI-compatible chat completions (`/v1`).
    Llm,
}

impl Group {
    pub const ALL: [Group; 3] = [Group::Pubmed, Group::S2, Group::Llm];

    pub fn as_str(self) -> &'static str {
        match self {
            Group::Pubmed => "pubmed",
            Group::S2 => "s2",
            Group::Llm => "llm",
        }
    }

    pub fn parse(s: &str) -> Option<Group> {
        Group::ALL.into_iter().find(|g| g.as_str() == s)
    }
}

/// Faults injected into one endpoint group, applied in this order for each request:
/// answer 429 at once if over `rate_limit_per_sec`, then wait `latency_ms + uniform(0..=jitter_ms)`, then hang with probability `hang_rate`, else answer
/// 429 with probability `throttle_rate`, else fail with `error_status` with probability
/// `error_rate`, else answer normally.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Fixed delay before every answer, in ms.
    pub latency_ms: u64,
    /// Extra delay drawn uniformly from `0..=jitter_ms`, in ms.
    pub jitter_ms: u64,
    /// Fraction (0..=1) of requests answered with `error_status`.
    pub error_rate: f64,
    /// Status for injected errors (400..=599; default 500).
    pub error_status: u16,
    /// Fraction (0..=1) of requests answered 429 with `Retry-After`.
    pub throttle_rate: f64,
    /// `Retry-After` value on injected 429s, in seconds.
    pub retry_after_secs: u64,
    /// Fraction (0..=1) of requests that never answer: they wait until the client gives up,
    /// the simulator shuts down, or `hang_max_ms` passes (then 504).
    pub hang_rate: f64,
    /// Upper bound of a hang, in ms, so forgotten requests do not pile up forever.
    pub hang_max_ms: u64,
    /// Enforced limit like the real services' (PubMed 3/s, S2 1/s): a request arriving when
    /// this many were already accepted in the last 1000 ms gets 429 at once. 0 = no limit.
    pub rate_limit_per_sec: u32,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            latency_ms: 0,
            jitter_ms: 0,
            error_rate: 0.0,
            error_status: 500,
            throttle_rate: 0.0,
            retry_after_secs: 1,
            hang_rate: 0.0,
            hang_max_ms: 600_000,
            rate_limit_per_sec: 0,
        }
    }
}

impl Faults {
    fn validate(&self) -> Result<(), SettingsError> {
        for (name, v) in [
            ("error_rate", self.error_rate),
            ("throttle_rate", self.throttle_rate),
            ("hang_rate", self.hang_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(SettingsError(format!(
                    "{name} must be within 0..=1, got {v}"
                )));
            }
        }
        if !(400..=599).contains(&self.error_status) {
            return Err(SettingsError(format!(
                "error_status must be within 400..=599, got {}",
                self.error_status
            )));
        }
        Ok(())
    }
}

/// Everything a running simulator can be told to change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub pubmed: Faults,
    pub s2: Faults,
    pub llm: Faults,
    /// Delay between two streamed chunks, in ms.
    pub llm_chunk_delay_ms: u64,
    /// Time to the first token: delay before a non-streamed answer or the first content chunk of
    /// a stream (after the response head was sent), in ms.
    pub llm_answer_latency_ms: u64,
    /// When set, `/v1` requires `Authorization: Bearer <key>` and answers 401 otherwise.
    pub llm_api_key: Option<String>,
    /// Fraction (0..=1) of streams cut off half-way: the connection is closed without a finish
    /// chunk or `[DONE]`, as when an upstream dies mid-answer.
    pub llm_stream_abort_rate: f64,
    /// Generation time per word of an answer, in ms, streamed or not (a long answer takes long,
    /// as with a real model); 0 = answers cost only the latencies above.
    pub llm_token_ms: u64,
    /// Answers are padded with filler words (about 200 bytes each) up to this many words (a long
    /// generation); 0 = as composed.
    pub llm_answer_pad_words: u64,
    /// Hostile literature: titles, abstracts, authors and links carry HTML, Markdown images and
    /// `javascript:` links, control characters and `&#0;`, text written to steer a model, and
    /// oversized fields (see `hostile.rs`). The search results stay the same papers.
    pub hostile: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            pubmed: Faults::default(),
            s2: Faults::default(),
            llm: Faults::default(),
            llm_chunk_delay_ms: 10,
            llm_answer_latency_ms: 0,
            llm_api_key: None,
            llm_stream_abort_rate: 0.0,
            llm_token_ms: 0,
            llm_answer_pad_words: 0,
            hostile: false,
        }
    }
}

impl Settings {
    pub fn faults(&self, group: Group) -> &Faults {
        match group {
            Group::Pubmed => &self.pubmed,
            Group::S2 => &self.s2,
            Group::Llm => &self.llm,
        }
    }

    pub fn faults_mut(&mut self, group: Group) -> &mut Faults {
        match group {
            Group::Pubmed => &mut self.pubmed,
            Group::S2 => &mut self.s2,
            Group::Llm => &mut self.llm,
        }
    }

    /// Checks ranges; called before any change is applied.
    pub fn validate(&self) -> Result<(), SettingsError> {
        for g in Group::ALL {
            self.faults(g)
                .validate()
                .map_err(|e| SettingsError(format!("{}.{}", g.as_str(), e.0)))?;
        }
        if !(0.0..=1.0).contains(&self.llm_stream_abort_rate) {
            return Err(SettingsError(format!(
                "llm_stream_abort_rate must be within 0..=1, got {}",
                self.llm_stream_abort_rate
            )));
        }
        Ok(())
    }

    /// Applies a partial update (`all` first, then each group), all or nothing.
    pub fn apply(&mut self, patch: &SettingsPatch) -> Result<(), SettingsError> {
        let mut next = self.clone();
        if let Some(all) = &patch.all {
            for g in Group::ALL {
                all.apply_to(next.faults_mut(g));
            }
        }
        for (g, p) in [
            (Group::Pubmed, &patch.pubmed),
            (Group::S2, &patch.s2),
            (Group::Llm, &patch.llm),
        ] {
            if let Some(p) = p {
                p.apply_to(next.faults_mut(g));
            }
        }
        if let Some(v) = patch.llm_chunk_delay_ms {
            next.llm_chunk_delay_ms = v;
        }
        if let Some(v) = patch.llm_answer_latency_ms {
            next.llm_answer_latency_ms = v;
        }
        if let Some(v) = patch.llm_stream_abort_rate {
            next.llm_stream_abort_rate = v;
        }
        if let Some(v) = patch.llm_token_ms {
            next.llm_token_ms = v;
        }
        if let Some(v) = patch.llm_answer_pad_words {
            next.llm_answer_pad_words = v;
        }
        if let Some(v) = patch.hostile {
            next.hostile = v;
        }
        if let Some(k) = &patch.llm_api_key {
            // An empty key switches authentication off.
            next.llm_api_key = (!k.is_empty()).then(|| k.clone());
        }
        next.validate()?;
        *self = next;
        Ok(())
    }
}

/// A partial [`Faults`]: only the fields present change.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultsPatch {
    pub latency_ms: Option<u64>,
    pub jitter_ms: Option<u64>,
    pub error_rate: Option<f64>,
    pub error_status: Option<u16>,
    pub throttle_rate: Option<f64>,
    pub retry_after_secs: Option<u64>,
    pub hang_rate: Option<f64>,
    pub hang_max_ms: Option<u64>,
    pub rate_limit_per_sec: Option<u32>,
}

impl FaultsPatch {
    fn apply_to(&self, f: &mut Faults) {
        if let Some(v) = self.latency_ms {
            f.latency_ms = v;
        }
        if let Some(v) = self.jitter_ms {
            f.jitter_ms = v;
        }
        if let Some(v) = self.error_rate {
            f.error_rate = v;
        }
        if let Some(v) = self.error_status {
            f.error_status = v;
        }
        if let Some(v) = self.throttle_rate {
            f.throttle_rate = v;
        }
        if let Some(v) = self.retry_after_secs {
            f.retry_after_secs = v;
        }
        if let Some(v) = self.hang_rate {
            f.hang_rate = v;
        }
        if let Some(v) = self.hang_max_ms {
            f.hang_max_ms = v;
        }
        if let Some(v) = self.rate_limit_per_sec {
            f.rate_limit_per_sec = v;
        }
    }
}

/// Body of `POST /control`: e.g. `{"all": {"latency_ms": 50}, "pubmed": {"error_rate": 0.2},
/// "llm_chunk_delay_ms": 25}`. `all` applies to every group before the per-group patches.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SettingsPatch {
    pub all: Option<FaultsPatch>,
    pub pubmed: Option<FaultsPatch>,
    pub s2: Option<FaultsPatch>,
    pub llm: Option<FaultsPatch>,
    pub llm_chunk_delay_ms: Option<u64>,
    pub llm_answer_latency_ms: Option<u64>,
    /// `""` switches authentication off.
    pub llm_api_key: Option<String>,
    pub llm_stream_abort_rate: Option<f64>,
    pub llm_token_ms: Option<u64>,
    pub llm_answer_pad_words: Option<u64>,
    pub hostile: Option<bool>,
}
