//! gateway: fleetgate in front of any HTTP app, whatever it is written in. A TOML policy names
//! the app, how callers are identified and each route's limits; the gateway applies them with
//! the fleet-wide layers of [`limiter_tower`] (state in Redis, so every gateway replica enforces
//! the same limits) and streams requests and responses through to the app.
//!
//! Layout: `policy.rs` (the policy file, checked at load), `routes.rs` (method and path
//! matching), `identity.rs` (who is calling; the identity header the app receives), `jwks/` (tokens
//! verified against an identity provider's published keys),
//! `proxy.rs` (the streaming reverse proxy and its header rules), `quota.rs` (daily quotas in
//! PostgreSQL, through the `daily-quota` crate), `breaker.rs` (the circuit breaker on the app), `tunnel.rs` (WebSocket pass-through), `problem.rs` (the gateway's own refusals),
//! `router.rs` (each route's stack of limits, and the service dispatching to them),
//! `runtime.rs` (runtime limits applied to the routes' layers), `admin.rs` (the admin endpoint:
//! limits in force, runtime changes), `run.rs` (building and serving it).
//!
//! ```no_run
//! use gateway::{Policy, Settings};
//!
//! # async fn start() -> Result<(), Box<dyn std::error::Error>> {
//! let policy = Policy::load("gateway.toml".as_ref())?;
//! let settings = Settings {
//!     listen: "0.0.0.0:8080".parse()?,
//!     redis: limiter_core::RedisConfig::default(),
//!     trusted_proxies: Vec::new(),
//!     admission: limiter_core::AdmissionConfig::default(),
//!     database: None,
//!     shutdown_grace: std::time::Duration::from_secs(30),
//!     admin_token: Some(gateway::AdminToken::new("s3cret")),
//!     admin_failures_per_min: 10,
//! };
//! gateway::run(&policy, &settings, std::future::pending()).await?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod admin;
mod breaker;
mod identity;
mod jwks;
mod policy;
mod problem;
mod proxy;
mod quota;
mod router;
mod routes;
mod run;
mod runtime;
mod tunnel;

pub use breaker::AppBreaker;
pub use identity::IdentityResolver;
pub use jwks::{ClaimChecks, JwksError, JwksSource, JwksTrust, JwksVerifier, UNKNOWN_KID_REFETCH};
pub use limiter_tower::AdminToken;
pub use policy::{
    AdminPolicy, AdmissionPolicy, AppBreakerPolicy, DefaultPolicy, Identity, Policy, PolicyError,
    RoutePolicy,
};
pub use problem::GatewayProblem;
pub use proxy::{Proxy, strip_hop_by_hop};
pub use quota::{Database, QuotaStore, RouteQuota, until_next_utc_midnight};
pub use router::{Gateway, RouteDeps};
pub use routes::{PathPattern, RouteMatch, first_match};
pub use run::{GatewayError, RUNTIME_LIMITS_POLL, Settings, build, run, serve};
