//! What every fleet test needs: the binaries ([`bins`]), child processes killed on drop
//! ([`process`]), the simulator ([`sim`]), PostgreSQL databases and clusters ([`postgres`]), a
//! fleet of replicas ([`fleet`]), load from many users and IPs ([`load`]) and one-at-a-time
//! scheduling ([`serial`]).
#![allow(dead_code)]

pub mod admission_keys;
pub mod at_cap;
pub mod bins;
pub mod fleet;
pub mod load;
pub mod postgres;
pub mod process;
pub mod sentinel;
pub mod serial;
pub mod sim;

pub use fleet::{Fleet, FleetOptions, RedisTarget};
pub use load::{Load, LoadOptions};
pub use postgres::{PgCluster, TestDb};
pub use serial::serial;

use std::time::Duration;

/// Polls `check` every 100 ms until it returns `Some` or `timeout` passes.
pub async fn wait_for<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The HTTP client of the tests: no proxy, no connection reuse (each request opens its own
/// connection, as through a load balancer, so a replica going away never breaks a reused one).
pub fn client() -> reqwest::Client {
    // reqwest is built with rustls-no-provider: a provider must be installed first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(120))
        .build()
        .expect("reqwest client")
}

/// A user's pseudonym (HMAC-SHA256 keyed from the fleet's JWT secret): the `user` field replicas
/// send to the LLM (and the simulator's key).
pub fn user_hash(user: &str) -> String {
    api::pseudonym::Pseudonymizer::derived_from(fleet::JWT_SECRET.as_bytes()).pseudonym(user)
}
