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
