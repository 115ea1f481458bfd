//! api: the fleetgate service (binary `fleetgate`). An Axum app that puts the fleet-wide limits of
//! `limiter-core` in front of the clinical research chat (crate `chat`):
//!
//! 1. per-IP sliding windows per route class ([`limits::ip_limit`], tower layers);
//! 2. the daily query quota in PostgreSQL ([`limits::quota`], `migrations/`);
//! 3. admission: per-user and global concurrency caps with a wait ([`limits::admission`]);
//!
//! plus JWT auth and the admin token ([`auth`]), client-IP resolution behind trusted proxies
//! ([`server::client_ip`]), the health report ([`health`]), admin actions and the fleet view
//! ([`admin`]), probes and the OpenAPI document ([`routes`]). The chat is called through
//! `chat::Assistant` once a request has passed every limit ([`assistant`] builds the one a
//! replica runs).
//!
//! Use: build an [`AppState`] with [`AppState::new`] (config + assistant), then [`app`] for the
//! router or [`run`] to serve it with graceful shutdown.
//!
//! Layout: `config/` (layered configuration: `env.rs` the table of variables, `sections.rs`,
//! `validate.rs`, `http.rs` the connection limits, `secret.rs`, `cidr.rs`), `error.rs`
//! (problem+json), `auth/` (the user and the admin token, `jwt.rs`, `admin_gate.rs` its throttle,
//! `pseudonym.rs`), `limits/` (`ip_limit/` the per-IP window's key, observer and counters, `quota.rs`,
//! `admission.rs`, `slots.rs` and `user_key.rs` for limiter-tower's admission layer, `render.rs`
//! the layers' refusals), `admin/` (`breakers.rs`,
//! `fleet_view.rs` + `fleet_status.rs`, `slot_holders.rs`), `health/` (`report.rs`, `check.rs`,
//! `cache.rs`, `stats.rs`), `server/` (`mod.rs` with `app` and `run`, `connection.rs`,
//! `client_ip.rs`, `json.rs`, `request_id.rs`, `middleware.rs`), `routes/` (one file per route
//! group; `pages.rs` and `web/` the chat page and the admin console, embedded), `state.rs`
//! ([`AppState`]), `assistant.rs`, `metrics.rs` (Prometheus), `telemetry.rs` (logs, traces).
//!
//! No import circle: only the modules that work on a request or a replica read [`AppState`]
//! (`server/mod.rs`, `server/middleware.rs`, `routes/`, `health/check.rs`,
//! `admin/fleet_status.rs`); what the state holds (verifiers, limiters, counters, the health
//! cache) never depends on it.

pub mod admin;
pub mod assistant;
pub mod auth;
#[doc(hidden)]
pub mod bench_support;
pub mod config;
pub mod error;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod routes;
pub mod server;
pub mod state;
pub mod telemetry;

// Kept at the root too: the fleet tests mint tokens and pseudonyms through these paths.
pub use admin::breakers::BreakerControl;
pub use auth::{jwt, pseudonym};
pub use config::{Config, ConfigError};
pub use error::ApiError;
pub use server::{app, run};
pub use state::{AppState, StartError};
