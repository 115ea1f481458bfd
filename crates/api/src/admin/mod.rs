//! What the admin API and console act on and read beyond the health report: the shared circuit
//! breakers (`breakers.rs`), each replica's status record for the fleet view (`fleet_view.rs` the records,
//! `fleet_status.rs` publishing and reading them)
//! the users at their per-user cap (`slot_holders.rs`), and the limits changed at runtime
//! (`runtime_limits.rs`).

pub mod breakers;
pub mod fleet_status;
pub mod fleet_view;
pub mod runtime_limits;
pub mod slot_holders;
