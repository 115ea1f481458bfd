//! api: the fleetgate service (binary `fleetgate`). An Axum app that puts the fleet-wide limits of
//! `limiter-core` in front of the clinical research chat:
//!
//! 1. per-IP sliding windows per route class ([`ip_limit`], tower layers);
//! 2. admission: per-user and global concurrency caps with a wait ([`admission`]);
//! 3. the daily query quota in PostgreSQL ([`quota`], `migrations/`);
//!
//! plus JWT auth ([`auth`], [`jwt`]), client-IP resolution behind trusted proxies ([`client_ip`]),
//! health and admin actions, probes and the OpenAPI document ([`routes`]). The chat pipeline
//! itself sits behind the [`ChatPipeline`] trait (its parts: upstream clients and RAG in
//! [`upstream`], conversation storage in [`conversations`], export renderers in [`export`]);
//! circuit breakers behind [`BreakerControl`].
//!
//! Use: build an [`AppState`] with [`AppState::new`] (config + pipeline), then [`app`] for the
//! router or [`run`] to serve it with graceful shutdown.
//!
//! Layout: `config.rs` (layered configuration; `config/http.rs` the connection limits), `secret.rs`,
//! `cidr.rs`, `error.rs` (problem+json), `jwt.rs` + `auth.rs`, `admin_gate.rs` (the admin token,
//! throttled), `pseudonym.rs` (keyed user pseudonyms), `client_ip.rs`, `ip_limit/` (layer,
//! service, headers, stats), `admission.rs`, `quota.rs`, `pipeline.rs`, `breakers.rs`, `stats.rs`,
//! `json.rs` (body extractor), `request_id.rs`, `state.rs`, `routes/` (one file per route group),
//! `server.rs` (`app`, `run`; `server/connection.rs` the per-connection timeouts), `telemetry.rs`
//! (logs, traces), `metrics.rs` (Prometheus), `upstream/` (PubMed, Semantic Scholar and LLM
//! clients, retrieval), `text/` (control characters, Markdown neutralisation),
//! `conversations.rs` (history in PostgreSQL), `export.rs` (Markdown, JSON, BibTeX, RIS),
//! `slot_holders.rs` and `fleet_status.rs` (the admin console's fleet view), `routes/pages.rs`
//! and `web/` (the chat page and the admin console, embedded).

pub mod admin_gate;
pub mod admission;
pub mod auth;
#[doc(hidden)]
pub mod bench_support;
pub mod breakers;
pub mod cidr;
pub mod client_ip;
pub mod config;
pub mod conversations;
pub mod error;
pub mod export;
pub mod fleet_status;
pub mod ip_limit;
pub mod json;
pub mod jwt;
pub mod metrics;
pub mod pipeline;
pub mod pseudonym;
pub mod quota;
pub mod rag_pipeline;
pub mod request_id;
pub mod routes;
pub mod secret;
mod server;
pub mod slot_holders;
pub mod state;
pub mod stats;
pub mod telemetry;
pub mod text;
pub mod upstream;

pub use breakers::BreakerControl;
pub use config::{Config, ConfigError};
pub use error::ApiError;
pub use pipeline::{
    ChatAnswer, ChatContext, ChatPipeline, ChatRequest, Citation, EchoPipeline, PipelineError,
    PipelineFuture, UnconfiguredPipeline,
};
pub use rag_pipeline::RagPipeline;
pub use server::{app, run};
pub use state::{AppState, StartError};
