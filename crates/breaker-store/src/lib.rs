//! breaker-store: circuit breakers shared by every replica through Redis, and the resilient
//! outbound call wrapper every upstream client goes through.
//!
//! A breaker per upstream service moves CLOSED → OPEN → HALF_OPEN → CLOSED only inside Lua scripts
//! (`lua/breaker_*.lua`), with Redis `TIME` as the clock, so the whole fleet sees one state:
//! failures on any replica count together, an OPEN breaker stops every replica, and HALF_OPEN lets
//! at most `probe_permits` probes through fleet-wide. Each transition is published; every replica
//! keeps a cache fed by that push, so a call to an OPEN breaker is refused with no Redis round trip
//! and a CLOSED call costs one script call (recording its outcome). When Redis is unreachable a
//! replica falls back to a local breaker with the same policy and reports `degraded()`.
//!
//! [`Outbound`] wraps each upstream call: fleet-wide pacing (limiter-core's `Pacer`), breaker
//! permit, timeout, and retries of idempotent calls with exponential backoff, full jitter and
//! `Retry-After`, each retry paced again and counted by the breaker.
//!
//! The crate reads no environment variable: [`BreakersConfig`], [`BreakerPolicy`] and
//! [`OutboundConfig`] are plain values the service fills from its own configuration.
//!
//! Layout: `policy.rs` (trip/open/recovery rules), `state.rs` (states, observations, push
//! messages), `scripts.rs` (script loading and EVALSHA), `shared.rs` (typed script calls),
//! `local.rs` (the in-memory fallback breaker), `permit.rs` (permits and outcomes), `config.rs`,
//! `cache.rs` (a replica's view of a shared breaker), `entry.rs` (one service's breaker on a
//! replica), `registry.rs` ([`Breakers`]: hot path, degraded mode), `admin.rs` (forced states),
//! `snapshot.rs` (health views), `subscriber.rs` (pub/sub task), `retry.rs` (backoff policy),
//! `attempt.rs` (classifying one attempt), `call_error.rs`, `outbound.rs` ([`Outbound`]),
//! `error.rs`.

#![warn(missing_docs)]

mod admin;
mod attempt;
mod cache;
mod call_error;
mod config;
mod entry;
mod error;
mod local;
mod outbound;
mod permit;
mod policy;
mod registry;
mod retry;
mod scripts;
mod shared;
mod snapshot;
mod state;
mod subscriber;

pub use attempt::{Attempt, StatusClass, classify_status, parse_retry_after};
pub use call_error::CallError;
pub use config::{BreakersConfig, MAX_BACKGROUND_RECORDS, TALLY_EVERY};
pub use error::BreakerError;
pub use outbound::{Outbound, OutboundConfig, ServiceOutbound};
pub use permit::{Outcome, Permit};
pub use policy::BreakerPolicy;
pub use registry::Breakers;
pub use retry::RetryPolicy;
pub use snapshot::BreakerSnapshot;
pub use state::BreakerState;
