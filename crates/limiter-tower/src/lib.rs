//! limiter-tower: tower layers that give any axum/tower service the fleet-wide limits of
//! [`limiter_core`] and [`breaker_store`]. Every replica behind the load balancer enforces the
//! same limits, because their state lives in Redis.
//!
//! - [`SlidingWindowLayer`]: at most N requests per client in any window, with the
//!   `RateLimit`/`RateLimit-Policy` headers and a local cache of clients already over the limit.
//!   [`WindowsLayer`] checks several of them at once (per address and per user: one round trip),
//!   and [`WindowsLayer::overlapping`] alongside the layers inside it, up to a [`GateLayer`].
//! - [`AdmissionLayer`]: concurrency caps (per key and fleet-wide) with a priority wait queue; the
//!   slot is held until the response body ends, so a streamed response keeps it.
//! - [`QuotaLayer`]: calls your [`QuotaHook`] (a daily quota in your database, say): check before
//!   the request runs, commit once it succeeded, refund on a 5xx or a failure before any byte.
//!   [`QuotaLayer::overlapping`] spends while the request waits for its slot instead, a
//!   [`GateLayer`] inside the admission layer holding it until the spend answered.
//! - [`OutboundLayer`]: fleet-wide pacing, a shared circuit breaker and retries around any HTTP
//!   client service.
//! - [`LimitHandle`]: switches layers between enforce, shadow and off at runtime, and adjusts
//!   window limits.
//! - [`AdminGate`]: an operator's bearer token ([`AdminToken`]) with wrong guesses throttled per
//!   client address, fleet-wide.
//! - [`runtime`]: a versioned document of limits changed at runtime, kept in Redis and followed
//!   by every replica (pub/sub plus a version poll), for the service to apply to its handles.
//!
//! Who a limit applies to is a [`KeyExtractor`] ([`ClientIpKey`], [`HeaderKey`], [`JwtClaimKey`],
//! [`ConstantKey`]); what a refusal looks like is a [`RejectionRenderer`] (RFC 9457
//! `application/problem+json` by default, [`ProblemJson`]). The crate reads no environment
//! variable: everything is a value you build.
//!
//! Layout: `key.rs` (key extractors; `key/client_ip.rs`, `key/jwt.rs`), `admin_token.rs` and
//! `admin_gate.rs` (the admin token and its wrong-guess throttle), `reject.rs` (refusals
//! and their rendering), `body.rs` (the response-body wrapper that holds a guard until the body
//! ends), `mode.rs` ([`LimitHandle`]), `runtime/` (the runtime-limits document and its store), `observe.rs` ([`DecisionObserver`]: a window's decisions for
//! the service's own counters and spans),
//! `admit.rs` ([`Admit`]: where admission slots come from), `gate.rs` ([`GateLayer`]: where
//! a request waits for checks started outside it), `refusals.rs` ([`RecentRefusals`]: keys a
//! quota refused lately),
//! `window.rs`, `windows.rs`, `admission.rs`, `quota.rs`, `outbound.rs` (one layer each, with
//! its service).
//!
//! Each layer follows tower's shape (`XLayer` builds `XService`, generic over the inner service
//! and the body types, the inner service readied in `poll_ready` and moved into the call). Their
//! futures are boxed: each awaits Redis and then the inner service, and one allocation per request
//! is noise next to a Redis round trip. The services pass the inner service's error through
//! unchanged (refusals are responses), so they sit in an axum `Router` as they are.
//!
//! ```no_run
//! use std::time::Duration;
//! use limiter_core::{RedisConfig, RedisHandle, WindowPolicy};
//! use limiter_tower::{ClientIpKey, SlidingWindowLayer};
//! use tower::ServiceBuilder;
//!
//! # fn build() -> Result<(), Box<dyn std::error::Error>> {
//! let redis = RedisHandle::new(&RedisConfig::default())?;
//! let policy = WindowPolicy::new("api", 100, Duration::from_secs(60));
//! let window = SlidingWindowLayer::new(redis, policy, ClientIpKey::direct())?;
//! let layers = ServiceBuilder::new().layer(window);
//! # let _ = layers;
//! # Ok(())
//! # }
//! ```
//!
//! The crate's `examples/axum_app.rs` protects an axum app with a window and an admission layer.

#![warn(missing_docs)]

mod admin_gate;
mod admin_token;
mod admission;
mod admit;
mod body;
mod gate;
mod key;
mod mode;
mod observe;
mod outbound;
mod quota;
mod refusals;
mod reject;
pub mod runtime;
mod window;
mod windows;

pub use admin_gate::{AdminGate, AdminRefusal};
pub use admin_token::AdminToken;
pub use admission::{AdmissionLayer, AdmissionService};
pub use admit::{Admit, Admitted};
pub use body::{BoxError, LimitBody, Revoked};
pub use gate::{GateLayer, GateService};
pub use key::{
    ClientIpKey, ConstantKey, EmptySecret, ForwardedForError, HeaderKey, JwtClaimKey, KeyExtractor,
    PeerAddr,
};
pub use mode::{LimitHandle, Mode, SHADOW_HEADER};
pub use observe::{DecisionObserver, WindowDecision};
pub use outbound::{OutboundError, OutboundLayer, OutboundService};
pub use quota::{QuotaDenied, QuotaHook, QuotaLayer, QuotaService};
pub use refusals::RecentRefusals;
pub use reject::{LimitRejection, ProblemJson, RejectionRenderer};
pub use window::{SlidingWindowLayer, WindowService};
pub use windows::{WindowsLayer, WindowsService};

/// The inner service that `poll_ready` readied, leaving a fresh clone in its place (a clone is
/// not ready until polled itself: tower's rule for services moved into a future).
fn take_ready<S: Clone>(slot: &mut S) -> S {
    let clone = slot.clone();
    std::mem::replace(slot, clone)
}
