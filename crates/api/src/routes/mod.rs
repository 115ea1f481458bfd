//! The routes, one module each, with a `router()` merged by [`crate::app`].

pub mod chat;
pub mod export;
pub mod health;
pub mod openapi;
pub mod probes;
pub mod research;

mod guard;

pub use guard::{TicketGuard, admit};
