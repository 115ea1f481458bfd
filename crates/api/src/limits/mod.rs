//! The three limits a user request passes, in order: the per-IP sliding window of its route
//! class (`ip_limit/`, limiter-tower's window layer), the daily quota in PostgreSQL (`quota.rs`,
//! over the `daily-quota` crate's group-committed store),
//! and admission to a fleet-wide slot, waiting in the priority queue if none is free
//! (`admission.rs`; limiter-tower's admission layer takes its slots from `slots.rs`, keyed by
//! `user_key.rs`). `render.rs` words the layers' refusals as the service's errors; `runtime.rs`
//! applies the limits operators change at runtime, fleet-wide.

pub mod admission;
pub mod ip_limit;
pub mod quota;
pub mod render;
pub mod runtime;
pub mod slots;
pub mod user_key;
