//! A model of the fleet-wide admission queue's protocol (the `admission_*` scripts, the replicas
//! that call them, their clients), checked exhaustively at small bounds with `stateright`.
//!
//! - [`store`]: the shared state as the scripts keep it, one atomic step per script. The lockstep
//!   test (`tests/lockstep.rs`) runs the real scripts on Redis beside it.
//! - [`system`]: replicas, clients, pub/sub and faults around the store, with the properties
//!   checked (`tests/check.rs` at CI bounds, the `deep-check` binary deeper); what each step
//!   does is in `steps.rs`, a cut replica's degraded mode (local admission, recovery) in
//!   `degraded.rs`, the bounded liveness check in `drain.rs`.

mod degraded;
mod drain;
mod steps;
pub mod store;
pub mod system;

pub use degraded::{LocalFlaw, LocalLimit, Outage};
pub use store::{
    Entered, Flaw, Id, Lease, Left, Msg, Params, Published, Replica, Store, User, Waiter,
};
