//! Shared by the integration tests: handles on the machine's Redis under a unique prefix.
#![allow(dead_code, clippy::unwrap_used)]

use limiter_core::{RedisConfig, RedisHandle};

/// A fresh connection (a "replica") to the machine's Redis under `prefix`.
pub fn replica(prefix: &str) -> RedisHandle {
    replica_at(&testkit::redis_url(), prefix)
}

/// A fresh connection to the Redis at `url` under `prefix`.
pub fn replica_at(url: &str, prefix: &str) -> RedisHandle {
    RedisHandle::new(&RedisConfig {
        url: url.to_string(),
        prefix: prefix.to_string(),
        ..RedisConfig::default()
    })
    .unwrap()
}

/// Three priority classes, served in this order, for the admission tests.
pub const HIGH: limiter_core::Class = limiter_core::Class::new(0);
/// The middle class.
pub const MID: limiter_core::Class = limiter_core::Class::new(1);
/// The last class.
pub const LOW: limiter_core::Class = limiter_core::Class::new(2);

/// The admission defaults with the three classes above.
pub fn adm_cfg() -> limiter_core::AdmissionConfig {
    limiter_core::AdmissionConfig {
        classes: vec!["high".into(), "mid".into(), "low".into()],
        ..limiter_core::AdmissionConfig::default()
    }
}
