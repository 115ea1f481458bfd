//! breaker-store: circuit breakers shared by the fleet through Redis (work in progress).
