//! limiter-core: the Redis primitives that let every replica of a service enforce the same limits.
//!
//! Each decision is one Lua script run atomically in Redis, with Redis `TIME` as the only clock, so
//! replicas never disagree and never race each other (no check-then-act from Rust):
//!
//! - [`SlidingWindow`]: at most N calls per client in any window (per-IP limits);
//!   [`CachedWindow`] answers clients already over their limit from memory.
//! - [`Pacer`]: fleet-wide pacing of outbound calls (GCRA token bucket with `reserve`).
//! - [`LeaseManager`] / [`Lease`]: concurrency slots held in several scopes at once, with TTLs,
//!   renewal and fencing tokens.
//! - [`Admission`]: a priority wait queue across the fleet in front of per-user and global caps,
//!   with configured priority classes ([`Classes`]), a cap on each user's waiters, push hand-off
//!   of released slots, and a degraded mode on a local share of the caps while Redis is down.
//!
//! A Redis that cannot answer is [`LimiterError::Unavailable`], never a denial. The crate reads
//! no environment variable: every primitive takes its configuration as values ([`RedisConfig`],
//! [`AdmissionConfig`], [`WindowPolicy`], ...). Every key starts with a configured prefix, and
//! the keys one script touches share a hash tag, so the same scripts run on Redis Cluster.
//!
//! Layout: `redis_handle.rs` (standalone/Cluster connection, FCALL or EVALSHA with load fallback),
//! `redis_functions.rs` (the Functions library loaded on demand, EVALSHA where refused),
//! `redis_sentinel.rs` (following the master a Sentinel names),
//! `scripts.rs` (the Lua sources in `lua/`), `keys.rs` (key naming and id encoding), `error.rs`,
//! `reply.rs` (reply decoding), `coalesce.rs` (concurrent calls as one script call), then one file per primitive: `sliding_window.rs` (+
//! `deny_cache.rs`), `token_bucket.rs`, `lease.rs`, and the folder `admission/` (one concept per
//! file; its `mod.rs` describes them).

#![warn(missing_docs)]

mod admission;
mod coalesce;
mod deny_cache;
mod error;
mod keys;
mod lease;
mod lease_keeper;
mod pubsub;
mod redis_functions;
mod redis_handle;
mod redis_sentinel;
mod reply;
pub mod scripts;
mod sliding_window;
mod token_bucket;

pub use admission::{
    Admission, AdmissionConfig, Class, Classes, MAX_CLASSES, OutagePolicy, Permit, QueueStats,
    Rejection, Revocation,
};
pub use deny_cache::CachedWindow;
pub use error::LimiterError;
pub use keys::{Keys, encode_component};
pub use lease::{Acquire, Lease, LeaseManager, LeaseScope, redis_now_ms};
pub use pubsub::{PubSubEvent, follow_channel, follow_shard_channel};
pub use redis_handle::{
    RedisConfig, RedisHandle, ScriptObserver, ScriptOutcome, ToRedisArgsDyn, set_script_observer,
    split_nodes,
};
pub use sliding_window::{
    MAX_EXACT_LIMIT, SlidingWindow, WindowAlgorithm, WindowDecision, WindowPolicy,
};
pub use token_bucket::{Pace, Pacer, Reservation};
