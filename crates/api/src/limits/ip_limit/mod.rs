//! The per-IP sliding window of each route class, built from limiter-tower's
//! `SlidingWindowLayer` (built in `state.rs`, one per route class): the client key
//! ([`ClientKey`]), and the counters, metrics and span of every decision ([`IpWindowObserver`],
//! [`IpLimitStats`]).

mod key;
mod observer;
mod stats;

pub use key::{ClientKey, client_key};
pub use observer::IpWindowObserver;
pub use stats::{IpLimitSnapshot, IpLimitStats};
