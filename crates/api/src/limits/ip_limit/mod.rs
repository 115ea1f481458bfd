//! Layer 1: per-IP sliding windows as a tower layer ([`IpRateLimitLayer`] builds [`IpRateLimit`]),
//! backed by `limiter_core::CachedWindow` (a sliding window in Redis plus a local cache that
//! answers IPs already over their limit until their reset without a Redis round trip), with
//! counters for the health endpoint ([`IpLimitStats`]).

mod headers;
mod layer;
mod service;
mod stats;

pub use headers::{policy_header, ratelimit_header};
pub use layer::IpRateLimitLayer;
pub use service::{IpRateLimit, client_key};
pub use stats::{IpLimitSnapshot, IpLimitStats};
