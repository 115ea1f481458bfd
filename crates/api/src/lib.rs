//! api: the fleetgate service (binary `fleetgate`). An Axum app that puts the fleet-wide limits of
//! `limiter-core` in front of the clinical research chat:
//!
//! 1. per-IP sliding windows per route class ([`ip_limit`], tower layers);
//! 2. admission: per-user and global concurrency caps with a wait ([`admission`]);
//! 3. the daily query quota in PostgreSQL ([`quota`], `migrations/`);
//!
//! plus JWT auth ([`auth`], [`jwt`]), client-IP resolution behind trusted proxies ([`client_ip`]),
//! health and admin actions, probes and the OpenAPI document ([`routes`]). The chat itself is the
//! crate `chat`, called through its `Assistant` trait once a request has passed every limit
//! ([`assistant`] builds the one a replica runs); circuit breakers behind [`BreakerControl`].
//!
//! Use: build an [`AppState`] with [`AppState::new`] (config + assistant), then [`app`] for the
//! router or [`run`] to serve it with graceful shutdown.
//!
//! Layout: `config.rs` (layered configuration; `config/http.rs` the connection limits), `secret.rs`,
//! `cidr.rs`, `error.rs` (problem+json), `jwt.rs` + `auth.rs`, `admin_gate.rs` (the admin token,
//! throttled), `pseudonym.rs` (keyed user pseudonyms), `client_ip.rs`, `ip_limit/` (layer,
//! service, headers, stats), `admission.rs`, `quota.rs`, `assistant.rs`, `breakers.rs`, `stats.rs`,
//! `json.rs` (body extractor), `request_id.rs`, `state.rs`, `routes/` (one file per route group),
//! `server.rs` (`app`, `run`; `server/connection.rs` the per-connection timeouts), `telemetry.rs`
//! (logs, traces), `metrics.rs` (Prometheus), `slot_holders.rs` and `fleet_status.rs` (the admin console's fleet view), `routes/pages.rs`
//! and `web/` (the chat page and the admin console, embedded).

pub mod admin_gate;
pub mod admission;
pub mod assistant;
pub mod auth;
#[doc(hidden)]
pub mod bench_support;
pub mod breakers;
pub mod cidr;
pub mod client_ip;
pub mod config;
pub mod error;
pub mod fleet_status;
pub mod ip_limit;
pub mod json;
pub mod jwt;
pub mod metrics;
pub mod pseudonym;
pub mod quota;
pub mod request_id;
pub mod routes;
pub mod secret;
mod server;
pub mod slot_holders;
pub mod state;
pub mod stats;
pub mod telemetry;

pub use breakers::BreakerControl;
pub use config::{Config, ConfigError};
pub use error::ApiError;
pub use server::{app, run};
pub use state::{AppState, StartError};
