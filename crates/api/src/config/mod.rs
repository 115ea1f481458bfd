//! Configuration, layered: built-in defaults → the TOML file named by `FLEETGATE_CONFIG` →
//! environment variables. The variables are one table, [`env::VARS`]: the loader applies it,
//! `--help` lists it (with [`variables`]), and the README documents each. A value that cannot be
//! read, or a combination that cannot work, is an error naming the variable (or TOML key), never a
//! silent default.
//!
//! TOML uses the struct field names below, e.g.
//! ```toml
//! listen = "0.0.0.0:8080"
//! [limits]
//! chat_per_ip_per_min = 5
//! [quota.tiers]
//! pro = 100
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use ipnet::IpNet;

use crate::config::cidr::parse_list;

pub mod cidr;
pub mod env;
mod http;
pub mod secret;
mod sections;
mod validate;
pub use env::names as variables;
pub use http::HttpSettings;
pub use sections::{
    AdmissionSettings, AuthSettings, DatabaseSettings, LimitSettings, OutagePolicy, QuotaSettings,
    RedisSettings, ServerSettings, UpstreamSettings,
};

/// Shortest accepted `FLEETGATE_JWT_SECRET`, `FLEETGATE_ADMIN_TOKEN` and `FLEETGATE_USER_HASH_KEY`,
/// in bytes: 256 bits, what HS256 needs to be as strong as its hash.
pub const MIN_SECRET_BYTES: usize = 32;
/// Largest accepted `FLEETGATE_JWT_LEEWAY_SECS`: clocks off by more than five minutes are a fault
/// to fix, not a skew to tolerate (every second of leeway extends a stolen token's life).
pub const MAX_JWT_LEEWAY_SECS: u64 = 300;
/// Largest accepted `FLEETGATE_LLM_MAX_TOKENS`.
pub const MAX_LLM_TOKENS: u32 = 32_768;

/// Why the configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("{0} is required but not set")]
    Missing(&'static str),
    /// A variable is set to something that does not parse.
    #[error("{var} has an invalid value: {reason}")]
    Invalid {
        /// The variable (or TOML key).
        var: String,
        /// What was expected (never the value itself: it may be a secret).
        reason: String,
    },
    /// The TOML file could not be read or parsed.
    #[error("config file {path} (FLEETGATE_CONFIG): {reason}")]
    File {
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `FLEETGATE_LISTEN`: address to bind.
    pub listen: SocketAddr,
    /// Redis connection and key prefix.
    pub redis: RedisSettings,
    /// PostgreSQL.
    pub database: DatabaseSettings,
    /// JWT verification and the admin token.
    pub auth: AuthSettings,
    /// `FLEETGATE_TRUSTED_PROXIES`: peers whose `X-Forwarded-For` is believed (CIDR strings).
    pub trusted_proxies: Vec<String>,
    /// Per-IP windows (layer 1).
    pub limits: LimitSettings,
    /// Admission (layer 2).
    pub admission: AdmissionSettings,
    /// Daily quota (layer 3).
    pub quota: QuotaSettings,
    /// Upstream services (for the chat assistant, [`crate::assistant`]).
    pub upstream: UpstreamSettings,
    /// Shutdown and request handling.
    pub server: ServerSettings,
    /// Client connections: timeouts, body size, connection cap.
    pub http: HttpSettings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            redis: RedisSettings::default(),
            database: DatabaseSettings::default(),
            auth: AuthSettings::default(),
            trusted_proxies: Vec::new(),
            limits: LimitSettings::default(),
            admission: AdmissionSettings::default(),
            quota: QuotaSettings::default(),
            upstream: UpstreamSettings::default(),
            server: ServerSettings::default(),
            http: HttpSettings::default(),
        }
    }
}

impl Config {
    /// Defaults → `FLEETGATE_CONFIG` file → process environment.
    pub fn load() -> Result<Config, ConfigError> {
        Self::load_from(|name| std::env::var(name).ok())
    }

    /// The same with an injected environment (tests).
    pub fn load_from(vars: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut cfg = match vars(env::CONFIG_FILE) {
            Some(path) => Self::from_file(&path)?,
            None => Config::default(),
        };
        env::apply(&mut cfg, &vars)?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn from_file(path: &str) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.into(),
            reason: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.into(),
            reason: file_error(&text, &e),
        })
    }

    /// The trusted proxy blocks, parsed.
    pub fn trusted_proxies(&self) -> Result<Vec<IpNet>, ConfigError> {
        parse_list(&self.trusted_proxies.join(",")).map_err(|e| ConfigError::Invalid {
            var: "FLEETGATE_TRUSTED_PROXIES".into(),
            reason: e.to_string(),
        })
    }

    /// Queue timeout as a duration.
    pub fn queue_timeout(&self) -> Duration {
        Duration::from_millis(self.admission.queue_timeout_ms)
    }

    /// The limiter-core Redis configuration.
    pub fn redis_config(&self) -> limiter_core::RedisConfig {
        limiter_core::RedisConfig {
            url: self.redis.url.expose().to_string(),
            cluster_nodes: self.redis.cluster.clone(),
            sentinels: self.redis.sentinels.clone(),
            sentinel_master: self.redis.sentinel_master.clone(),
            sentinel_password: self
                .redis
                .sentinel_password
                .as_ref()
                .map(|p| p.expose().to_string()),
            prefix: self.redis.prefix.clone(),
            response_timeout: Duration::from_millis(self.redis.timeout_ms),
            ..limiter_core::RedisConfig::default()
        }
    }
}

fn parse_tiers(list: &str) -> Result<BTreeMap<String, u32>, ConfigError> {
    let err = || ConfigError::Invalid {
        var: "FLEETGATE_QUOTA_TIERS".into(),
        reason: "expected name=count pairs separated by commas, e.g. pro=100,team=500".into(),
    };
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (name, n) = pair.split_once('=').ok_or_else(err)?;
            let n = n.trim().parse::<u32>().map_err(|_| err())?;
            Ok((name.trim().to_string(), n))
        })
        .collect()
}

/// A config-file error a log may show: the line, and serde's message with every quoted value
/// hidden. serde quotes the string it found ("invalid type: string \"...\", expected u64"), and
/// a secret typed under the wrong key would otherwise be printed at start; key names, which
/// serde puts in backticks, stay.
fn file_error(text: &str, e: &toml::de::Error) -> String {
    let mut out = String::new();
    let mut quoted = false;
    for c in e.message().chars() {
        match (c, quoted) {
            ('"', false) => {
                quoted = true;
                out.push_str("(value hidden)");
            }
            ('"', true) => quoted = false,
            (c, false) => out.push(c),
            (_, true) => {}
        }
    }
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {out}")
        }
        None => out,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load_from(|k| env.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = load(&[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.limits.chat_per_ip_per_min, 5);
        assert_eq!(c.admission.max_concurrent_global, 20);
        assert_eq!(c.quota.free_daily_queries, 3);
        assert!(matches!(
            c.require_serve(),
            Err(ConfigError::Missing("FLEETGATE_JWT_SECRET"))
        ));
    }

    #[test]
    fn bad_values_name_the_variable_not_the_value() {
        let err = load(&[("FLEETGATE_MAX_CONCURRENT_GLOBAL", "lots")]).unwrap_err();
        assert!(
            err.to_string().contains("FLEETGATE_MAX_CONCURRENT_GLOBAL"),
            "{err}"
        );
        assert!(!err.to_string().contains("lots"));
        let err = load(&[("FLEETGATE_TRUSTED_PROXIES", "10.0.0.0/99")]).unwrap_err();
        assert!(
            err.to_string().contains("FLEETGATE_TRUSTED_PROXIES"),
            "{err}"
        );
    }

    #[test]
    fn file_then_env() {
        let dir = std::env::temp_dir().join(format!("fg-cfg-{}", rand::random::<u32>()));
        std::fs::write(
            &dir,
            "listen = \"0.0.0.0:9000\"\n[limits]\nchat_per_ip_per_min = 7\n[quota.tiers]\npro = 100\n",
        )
        .unwrap();
        let path = dir.to_string_lossy().to_string();
        let c = load(&[
            ("FLEETGATE_CONFIG", &path),
            ("FLEETGATE_LISTEN", "127.0.0.1:1"),
        ])
        .unwrap();
        assert_eq!(c.limits.chat_per_ip_per_min, 7);
        assert_eq!(c.quota.tiers.get("pro"), Some(&100));
        assert_eq!(c.listen.port(), 1);
        std::fs::write(&dir, "[limits]\nnope = 1\n").unwrap();
        let err = load(&[("FLEETGATE_CONFIG", &path)]).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let _ = std::fs::remove_file(&dir);
    }
}
