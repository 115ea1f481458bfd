//! Layer 1: per-IP sliding windows as a tower layer ([`IpRateLimitLayer`] builds [`IpRateLimit`]),
//! backed by `limiter_core::SlidingWindow`, with a local cache of denied IPs ([`DenyCache`]) and
//! counters for the health endpoint ([`IpLimitStats`]).

mod deny_cache;
mod headers;
mod layer;
mod service;
mod stats;

pub use deny_cache::DenyCache;
pub use headers::{policy_header, ratelimit_header};
pub use layer::IpRateLimitLayer;
pub use service::IpRateLimit;
pub use stats::{IpLimitSnapshot, IpLimitStats};
