//! The per-IP sliding window of each route class, built from limiter-tower's
//! `SlidingWindowLayer` (see [`crate::state::AppState::ip_limit`]): the client key
//! ([`ClientKey`]), and the counters, metrics and span of every decision ([`IpWindowObserver`],
//! [`IpLimitStats`]).

mod key;
mod observer;
mod stats;

pub use key::{ClientKey, client_key};
pub use observer::IpWindowObserver;
pub use stats::{IpLimitSnapshot, IpLimitStats};
