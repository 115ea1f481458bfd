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
//! - [`Admission`]: a priority wait queue across the fleet in front of user and global caps, with
//!   push hand-off of released slots.
//!
//! A Redis that cannot answer is [`LimiterError::Unavailable`], never a denial.
//!
//! Layout: `redis_handle.rs` (standalone/Cluster connection, EVALSHA with load fallback),
//! `scripts.rs` (the Lua sources in `lua/`), `keys.rs` (key naming and id encoding), `error.rs`,
//! `reply.rs` (reply decoding), then one file per primitive: `sliding_window.rs` (+ `deny_cache.rs`), `token_bucket.rs`,
//! `lease.rs`, `queue.rs` (admission).

mod admission;
mod deny_cache;
mod error;
mod keys;
mod lease;
mod redis_handle;
mod reply;
pub mod scripts;
mod sliding_window;
mod token_bucket;

pub use admission::{
    Admission, AdmissionConfig, Class, Classes, MAX_CLASSES, Permit, QueueStats, Rejection,
};
pub use deny_cache::CachedWindow;
pub use error::LimiterError;
pub use keys::{Keys, encode_component};
pub use lease::{Acquire, Lease, LeaseManager, LeaseScope, redis_now_ms};
pub use redis_handle::{
    RedisConfig, RedisHandle, ScriptObserver, ScriptOutcome, ToRedisArgsDyn, set_script_observer,
    split_nodes,
};
pub use sliding_window::{
    MAX_EXACT_LIMIT, SlidingWindow, WindowAlgorithm, WindowDecision, WindowPolicy,
};
pub use token_bucket::{Pace, Pacer, Reservation};
