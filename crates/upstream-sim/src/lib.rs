//! A simulator of the three upstream services fleetgate calls, for local runs, tests and
//! benchmarks (never production): PubMed E-utilities, the Semantic Scholar Graph API v1 and an
//! OpenAI-compatible chat completions API, on one port, speaking the real wire formats.
//!
//! The literature APIs search a deterministic synthetic corpus (PubMed and Semantic Scholar
//! share part of it by DOI/PMID). The LLM answers from its prompt: it cites the numbered
//! sources it was given, so answers are checkable. Latency, errors, 429s, hangs, an enforced
//! requests-per-second limit and (LLM) cut-off streams are settable per service by CLI flags,
//! `POST /control`, or in-process; `GET /stats` shows what reached
//! each endpoint (counts by status, max concurrency, arrival times, `user`s, `traceparent`s),
//! the independent observer for pacing and concurrency tests.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let sim = upstream_sim::spawn(upstream_sim::SimConfig::default()).await?;
//! let esearch = format!("{}/esearch.fcgi?db=pubmed&term=metformin&retmode=json", sim.pubmed_url());
//! # let _ = esearch;
//! assert_eq!(sim.stats().group(upstream_sim::Group::Pubmed).total, 0);
//! # Ok(()) }
//! ```
//!
//! # Layout
//! `server.rs` routes and serves ([`app`], [`serve`], [`spawn`], [`RunningSim`]); `state.rs`
//! holds [`SimConfig`] and [`SimState`]; `settings.rs` the runtime-settable [`Settings`];
//! `faults.rs` the middleware that delays, fails and counts (`clock.rs` the clock of its rate
//! limit); `stats.rs` the counters (`calls.rs` the log of LLM calls);
//! `pubmed.rs`, `s2.rs`, `llm.rs` the three APIs; `answer.rs` the LLM's answer composer;
//! `corpus/` and `vocab.rs` the synthetic papers; `hostile.rs` their hostile disguise;
//! `prompts.rs` the LLM requests last received (`GET /stats/prompts`); `errors.rs` each API's error style;
//! `params.rs` query parsing; `control.rs` the control endpoints; `cli.rs` the binary's flags.

pub mod answer;
pub mod calls;
pub mod cli;
pub mod clock;
mod control;
pub mod corpus;
mod errors;
mod faults;
pub mod hostile;
mod llm;
mod params;
pub mod prompts;
mod pubmed;
mod s2;
mod server;
pub mod settings;
mod state;
pub mod stats;
mod vocab;

pub use calls::LlmCall;
pub use clock::SimClock;
pub use corpus::{Corpus, CorpusConfig, Paper};
pub use server::{RunningSim, app, serve, spawn, spawn_on};
pub use settings::{Faults, FaultsPatch, Group, Settings, SettingsError, SettingsPatch};
pub use state::{SimConfig, SimState};
pub use stats::{Endpoint, EndpointStats, RecordedTrace, RecordedUser, StatsSnapshot, UserStats};
