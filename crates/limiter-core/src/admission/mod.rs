//! Admission through a priority wait queue that spans every replica.
//!
//! [`Admission::admit`] grants a lease in the user's scope and the global scope at once, or queues
//! the request. The queue lives in Redis (`lua/admission_*.lua`, sharing `admission_lib.lua`):
//! strict priority between the configured classes, FIFO within a class in fleet-wide arrival
//! order, and no head-of-line blocking (a waiter held back only by its own user cap keeps its
//! place while others pass it, and costs a dispatch nothing). One user's waiters are capped, so
//! one user cannot fill the queue for everyone.
//!
//! A release hands the slot to the next eligible waiter inside the same script and pushes the grant
//! to that waiter's replica over pub/sub, so a slot freed on replica A reaches a waiter on replica B
//! within one pub/sub hop; no waiter polls. The safety nets are per replica, not per waiter: a
//! heartbeat every `heartbeat_ttl / 3` keeps the replica in the registry, collects grants whose push
//! was lost, runs a dispatch (slots freed by lease expiry rather than release are handed on there)
//! and refreshes watched queue positions. A replica that dies stops heartbeating; its waiters are
//! dropped by the next dispatch after `heartbeat_ttl`, and its leases expire after `lease_ttl`.
//!
//! Cancellation is safe at every await: a waiter whose future is dropped leaves the queue (spawned),
//! and if a grant raced with its leaving, the leave script releases the slot and hands it on.
//!
//! Redis unreachable: each replica admits from its share of the caps (`local.rs`, `degraded.rs`),
//! less what the shared slots still running elsewhere take of the global cap (`outage.rs`), and
//! registers what it granted when Redis returns (`recovery.rs`).
//!
//! Layout: `handle.rs` ([`Admission`], the public API), `config.rs`, `caps.rs` (the caps in force, changeable at runtime), `class.rs`, `rejection.rs`,
//! `permit.rs`, `stats.rs`; inside: `inner.rs` (state shared with the background tasks),
//! `shared.rs` (the path through Redis), `waiter.rs` (delivering grants to waiting requests),
//! `scripts.rs` (typed script calls), `background.rs` (pub/sub listener, heartbeat), `mode.rs`,
//! `local_queue.rs` (the local queue's bookkeeping), `local.rs` (it behind a lock), `outage.rs` (the
//! limit during an outage), `degraded.rs` (the path through it), `recovery.rs`, `released.rs`
//! (recent releases, sent again to a new master after a failover).

mod background;
mod caps;
mod class;
mod config;
mod degraded;
mod handle;
mod inner;
mod local;
mod local_queue;
mod mode;
mod outage;
mod permit;
mod recovery;
mod rejection;
mod released;
mod revocation;
mod scripts;
mod shared;
mod stats;
mod waiter;

pub(crate) use caps::Caps;
pub use class::{Class, Classes, MAX_CLASSES};
pub use config::{AdmissionConfig, OutagePolicy};
pub use handle::Admission;
pub use permit::Permit;
pub use rejection::Rejection;
pub use revocation::Revocation;
pub use stats::QueueStats;
