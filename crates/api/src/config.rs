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

use crate::cidr::parse_list;
use crate::secret::Secret;

pub mod env;
mod http;
pub use env::names as variables;
pub use http::HttpSettings;

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
    /// Upstream services (used by the pipeline, an issue of its own).
    pub upstream: UpstreamSettings,
    /// Shutdown and request handling.
    pub server: ServerSettings,
    /// Client connections: timeouts, body size, connection cap.
    pub http: HttpSettings,
}

/// Redis.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `FLEETGATE_REDIS_URL`.
    pub url: Secret,
    /// `FLEETGATE_REDIS_CLUSTER`: node URLs; non-empty switches to Cluster.
    pub cluster: Vec<String>,
    /// `FLEETGATE_REDIS_PREFIX`.
    pub prefix: String,
    /// `FLEETGATE_REDIS_TIMEOUT_MS`: reply timeout of one call.
    pub timeout_ms: u64,
}

/// PostgreSQL.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `FLEETGATE_DATABASE_URL` (a secret: it may carry a password).
    pub url: Secret,
    /// `FLEETGATE_DATABASE_MAX_CONNECTIONS`: pool size of this replica.
    pub max_connections: u32,
    /// `FLEETGATE_DATABASE_ACQUIRE_TIMEOUT_MS`: how long a request waits for a connection before
    /// it is answered `service_unavailable`.
    pub acquire_timeout_ms: u64,
    /// `FLEETGATE_EMERGENCY_CLEANUP_IDLE_SECS`: the admin action `emergency-cleanup` ends this
    /// database's sessions idle inside a transaction for at least this long.
    pub emergency_idle_secs: u64,
}

/// Authentication.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// `FLEETGATE_JWT_SECRET`: HS256 key; required for `serve`.
    pub jwt_secret: Option<Secret>,
    /// `FLEETGATE_JWT_AUDIENCE`: when set, tokens must carry this `aud` (Supabase: `authenticated`).
    pub jwt_audience: Option<String>,
    /// `FLEETGATE_JWT_ISSUER`: when set, tokens must carry this `iss` (Supabase:
    /// `https://<project>.supabase.co/auth/v1`).
    pub jwt_issuer: Option<String>,
    /// `FLEETGATE_JWT_LEEWAY_SECS`: clock skew tolerated on `exp`/`nbf` (at most
    /// [`MAX_JWT_LEEWAY_SECS`]).
    pub jwt_leeway_secs: u64,
    /// `FLEETGATE_ADMIN_TOKEN`: bearer token of the admin API; unset disables admin actions (403).
    pub admin_token: Option<Secret>,
    /// `FLEETGATE_ADMIN_AUTH_FAILURES_PER_MIN`: wrong admin tokens one client address may send in
    /// any 60 s before every admin attempt from it is answered 429 without being checked.
    pub admin_failures_per_min: u32,
    /// `FLEETGATE_USER_HASH_KEY`: key of the HMAC-SHA256 that turns a user id into the pseudonym
    /// logs and the LLM's `user` field carry. Unset: derived from the JWT secret.
    pub user_hash_key: Option<Secret>,
}

/// Layer 1.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// `FLEETGATE_CHAT_PER_IP_PER_MIN`.
    pub chat_per_ip_per_min: u32,
    /// `FLEETGATE_RESEARCH_PER_IP_PER_MIN`.
    pub research_per_ip_per_min: u32,
    /// `FLEETGATE_EXPORT_PER_IP_PER_MIN`.
    pub export_per_ip_per_min: u32,
    /// `FLEETGATE_IP_LIMIT_FAIL_OPEN`: admit (true) or refuse with 503 (false) when Redis cannot
    /// answer.
    pub fail_open: bool,
}

/// Layer 2.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionSettings {
    /// `FLEETGATE_MAX_CONCURRENT_PER_USER`.
    pub max_concurrent_per_user: u32,
    /// `FLEETGATE_MAX_CONCURRENT_GLOBAL`.
    pub max_concurrent_global: u32,
    /// `FLEETGATE_QUEUE_TIMEOUT_MS`.
    pub queue_timeout_ms: u64,
    /// `FLEETGATE_LEASE_TTL_MS`.
    pub lease_ttl_ms: u64,
    /// `FLEETGATE_MAX_QUEUE`: waiters allowed fleet-wide before `queue_full`.
    pub max_queue: u32,
    /// `FLEETGATE_MAX_QUEUED_PER_USER`: waiters one user may have fleet-wide before
    /// `user_queue_full`.
    pub max_queued_per_user: u32,
    /// `FLEETGATE_ADMISSION_GROUP`: the lease group (one per protected service).
    pub group: String,
    /// `FLEETGATE_ADMISSION_HEARTBEAT_MS`: a replica silent this long is dead; its waiters leave.
    pub heartbeat_ttl_ms: u64,
    /// `FLEETGATE_ADMISSION_LOCAL_FALLBACK`: while Redis is down, admit within this replica's
    /// share of the caps (true) or refuse with 503 (false).
    pub local_fallback: bool,
    /// `FLEETGATE_EXPECTED_REPLICAS`: fleet size assumed for that share before Redis was reached.
    pub expected_replicas: u32,
}

/// Layer 3.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaSettings {
    /// `FLEETGATE_FREE_DAILY_QUERIES`: daily chat queries of the `free` tier.
    pub free_daily_queries: u32,
    /// Other tiers: name → daily queries (TOML `[quota.tiers]`, or `FLEETGATE_QUOTA_TIERS` as
    /// `pro=100,team=500`).
    pub tiers: BTreeMap<String, u32>,
}

/// Upstreams (read here so one file configures the service; used by the pipeline issue).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamSettings {
    /// `FLEETGATE_PUBMED_URL`.
    pub pubmed_url: String,
    /// `FLEETGATE_SEMANTIC_SCHOLAR_URL`.
    pub semantic_scholar_url: String,
    /// `FLEETGATE_LLM_URL`.
    pub llm_url: String,
    /// `FLEETGATE_LLM_MODEL`.
    pub llm_model: String,
    /// `FLEETGATE_LLM_API_KEY`.
    pub llm_api_key: Option<Secret>,
    /// `FLEETGATE_NCBI_API_KEY`.
    pub ncbi_api_key: Option<Secret>,
    /// `FLEETGATE_NCBI_EMAIL`: the `email` parameter NCBI asks E-utilities clients to send.
    pub ncbi_email: Option<String>,
    /// `FLEETGATE_S2_API_KEY`.
    pub s2_api_key: Option<Secret>,
    /// `FLEETGATE_PUBMED_RATE_PER_SEC`.
    pub pubmed_rate_per_sec: u32,
    /// `FLEETGATE_SEMANTIC_SCHOLAR_RATE_PER_SEC`.
    pub semantic_scholar_rate_per_sec: u32,
    /// `FLEETGATE_UPSTREAM_TIMEOUT_MS`: one attempt at PubMed or Semantic Scholar; for the LLM,
    /// the time to the first token and each gap between tokens (not the whole answer).
    pub timeout_ms: u64,
    /// `FLEETGATE_BREAKER_FAILURE_THRESHOLD`.
    pub breaker_failure_threshold: u32,
    /// `FLEETGATE_BREAKER_OPEN_MS`.
    pub breaker_open_ms: u64,
    /// `FLEETGATE_LLM_MAX_TOKENS`: `max_tokens` of every LLM request (the longest answer).
    pub llm_max_tokens: u32,
    /// `FLEETGATE_LLM_ANSWER_TIMEOUT_MS`: the longest a whole answer may take. Not a fault of the
    /// upstream (it is still answering), so it never counts against the breaker.
    pub llm_answer_timeout_ms: u64,
}

/// Server behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// `FLEETGATE_SHUTDOWN_GRACE_MS`: how long in-flight requests may run after SIGTERM.
    pub shutdown_grace_ms: u64,
    /// `FLEETGATE_PIPELINE`: `rag` (the real pipeline: PubMed, Semantic Scholar, the LLM),
    /// `unconfigured` (chat answers 503) or `echo` (development and API-fuzzing only: answers
    /// with the question, calls no upstream).
    pub pipeline: String,
    /// `FLEETGATE_LOG_FORMAT`: `human` (default) or `json` (one object per line).
    pub log_format: String,
    /// `FLEETGATE_HEALTH_CACHE_MS`: how long one health report is served before the next is
    /// computed (one at a time, whatever the probe rate).
    pub health_cache_ms: u64,
    /// `FLEETGATE_EXPORT_MAX_MESSAGES`: longest conversation an export renders.
    pub export_max_messages: u32,
    /// `FLEETGATE_GATEWAY_CONFIG`: the policy file of `fleetgate gateway`.
    pub gateway_config: Option<String>,
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

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            url: Secret::new("redis://127.0.0.1:6379"),
            cluster: Vec::new(),
            prefix: "fg".into(),
            timeout_ms: 1000,
        }
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: Secret::new("postgres://localhost/fleetgate"),
            max_connections: 10,
            acquire_timeout_ms: 2000,
            emergency_idle_secs: 300,
        }
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            jwt_secret: None,
            jwt_audience: None,
            jwt_issuer: None,
            jwt_leeway_secs: 30,
            admin_token: None,
            admin_failures_per_min: 10,
            user_hash_key: None,
        }
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            chat_per_ip_per_min: 5,
            research_per_ip_per_min: 10,
            export_per_ip_per_min: 3,
            fail_open: true,
        }
    }
}

impl Default for AdmissionSettings {
    fn default() -> Self {
        AdmissionSettings {
            max_concurrent_per_user: 2,
            max_concurrent_global: 20,
            queue_timeout_ms: 60_000,
            lease_ttl_ms: 15_000,
            max_queue: 500,
            max_queued_per_user: 10,
            group: "api".into(),
            heartbeat_ttl_ms: 3000,
            local_fallback: true,
            expected_replicas: 3,
        }
    }
}

impl Default for QuotaSettings {
    fn default() -> Self {
        QuotaSettings {
            free_daily_queries: 3,
            tiers: BTreeMap::new(),
        }
    }
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            pubmed_url: "https://eutils.ncbi.nlm.nih.gov/entrez/eutils".into(),
            semantic_scholar_url: "https://api.semanticscholar.org/graph/v1".into(),
            llm_url: "https://api.openai.com/v1".into(),
            llm_model: "gpt-4o-mini".into(),
            llm_api_key: None,
            ncbi_api_key: None,
            ncbi_email: None,
            s2_api_key: None,
            pubmed_rate_per_sec: 3,
            semantic_scholar_rate_per_sec: 1,
            timeout_ms: 30_000,
            breaker_failure_threshold: 5,
            breaker_open_ms: 30_000,
            llm_max_tokens: 1024,
            llm_answer_timeout_ms: 300_000,
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            shutdown_grace_ms: 30_000,
            pipeline: "rag".into(),
            log_format: "human".into(),
            health_cache_ms: 1000,
            export_max_messages: 1000,
            gateway_config: None,
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
            // The message names the key and position; the span snippet could show a secret.
            reason: e.message().to_string(),
        })
    }

    /// Checks the values that every command needs (secrets are checked by [`Config::require_serve`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |var: &str, reason: &str| ConfigError::Invalid {
            var: var.into(),
            reason: reason.into(),
        };
        self.trusted_proxies()?;
        limiter_core::Keys::new(&self.redis.prefix).map_err(|_| {
            invalid(
                "FLEETGATE_REDIS_PREFIX",
                "1-64 characters of [A-Za-z0-9_.-/]",
            )
        })?;
        let (a, l, u) = (&self.admission, &self.limits, &self.upstream);
        for (v, var) in [
            (l.chat_per_ip_per_min, "FLEETGATE_CHAT_PER_IP_PER_MIN"),
            (
                l.research_per_ip_per_min,
                "FLEETGATE_RESEARCH_PER_IP_PER_MIN",
            ),
            (l.export_per_ip_per_min, "FLEETGATE_EXPORT_PER_IP_PER_MIN"),
            (
                a.max_concurrent_per_user,
                "FLEETGATE_MAX_CONCURRENT_PER_USER",
            ),
            (a.max_concurrent_global, "FLEETGATE_MAX_CONCURRENT_GLOBAL"),
            (a.max_queued_per_user, "FLEETGATE_MAX_QUEUED_PER_USER"),
            (a.expected_replicas, "FLEETGATE_EXPECTED_REPLICAS"),
            (
                self.database.max_connections,
                "FLEETGATE_DATABASE_MAX_CONNECTIONS",
            ),
            (u.pubmed_rate_per_sec, "FLEETGATE_PUBMED_RATE_PER_SEC"),
            (
                u.semantic_scholar_rate_per_sec,
                "FLEETGATE_SEMANTIC_SCHOLAR_RATE_PER_SEC",
            ),
            (
                u.breaker_failure_threshold,
                "FLEETGATE_BREAKER_FAILURE_THRESHOLD",
            ),
        ] {
            if v == 0 {
                return Err(invalid(var, "must be at least 1"));
            }
        }
        if a.max_concurrent_per_user > a.max_concurrent_global {
            return Err(invalid(
                "FLEETGATE_MAX_CONCURRENT_PER_USER",
                "must not exceed FLEETGATE_MAX_CONCURRENT_GLOBAL (one user could never use more \
                 slots than the fleet has)",
            ));
        }
        // Below these the background renewals and heartbeats (a third of the TTL) could not
        // keep up with a Redis round trip on a loaded machine.
        if a.heartbeat_ttl_ms < 30 {
            return Err(invalid(
                "FLEETGATE_ADMISSION_HEARTBEAT_MS",
                "must be at least 30 (ms)",
            ));
        }
        if a.lease_ttl_ms < 100 {
            return Err(invalid(
                "FLEETGATE_LEASE_TTL_MS",
                "must be at least 100 (ms)",
            ));
        }
        if self.database.emergency_idle_secs == 0 {
            return Err(invalid(
                "FLEETGATE_EMERGENCY_CLEANUP_IDLE_SECS",
                "must be at least 1 (s)",
            ));
        }
        if !matches!(
            self.server.pipeline.as_str(),
            "rag" | "unconfigured" | "echo"
        ) {
            return Err(invalid(
                "FLEETGATE_PIPELINE",
                "expected `rag`, `unconfigured` or `echo`",
            ));
        }
        if !matches!(self.server.log_format.as_str(), "human" | "json") {
            return Err(invalid(
                "FLEETGATE_LOG_FORMAT",
                "expected `human` or `json`",
            ));
        }
        if i32::try_from(self.quota.free_daily_queries).is_err() {
            return Err(invalid("FLEETGATE_FREE_DAILY_QUERIES", "too large"));
        }
        if self
            .quota
            .tiers
            .values()
            .any(|v| i32::try_from(*v).is_err())
        {
            return Err(invalid(
                "FLEETGATE_QUOTA_TIERS",
                "a tier's count is too large",
            ));
        }
        if self.auth.jwt_leeway_secs > MAX_JWT_LEEWAY_SECS {
            return Err(invalid(
                "FLEETGATE_JWT_LEEWAY_SECS",
                &format!("must be at most {MAX_JWT_LEEWAY_SECS} (seconds); fix the clocks instead"),
            ));
        }
        if self.auth.admin_failures_per_min == 0 || self.auth.admin_failures_per_min > 1000 {
            return Err(invalid(
                "FLEETGATE_ADMIN_AUTH_FAILURES_PER_MIN",
                "must be within 1..=1000",
            ));
        }
        if !(1..=MAX_LLM_TOKENS).contains(&self.upstream.llm_max_tokens) {
            return Err(invalid(
                "FLEETGATE_LLM_MAX_TOKENS",
                &format!("must be within 1..={MAX_LLM_TOKENS}"),
            ));
        }
        if self.upstream.llm_answer_timeout_ms < self.upstream.timeout_ms {
            return Err(invalid(
                "FLEETGATE_LLM_ANSWER_TIMEOUT_MS",
                "must be at least FLEETGATE_UPSTREAM_TIMEOUT_MS",
            ));
        }
        if !(100..=60_000).contains(&self.server.health_cache_ms) {
            return Err(invalid(
                "FLEETGATE_HEALTH_CACHE_MS",
                "must be within 100..=60000",
            ));
        }
        if !(1..=100_000).contains(&self.server.export_max_messages) {
            return Err(invalid(
                "FLEETGATE_EXPORT_MAX_MESSAGES",
                "must be within 1..=100000",
            ));
        }
        self.http.validate()
    }

    /// What `serve` needs on top of [`Config::validate`]: a JWT secret, and secrets long enough to
    /// resist guessing (the admin token and the user-hash key when set).
    pub fn require_serve(&self) -> Result<(), ConfigError> {
        let secret = match &self.auth.jwt_secret {
            Some(s) if !s.expose().is_empty() => s,
            _ => return Err(ConfigError::Missing("FLEETGATE_JWT_SECRET")),
        };
        for (value, var, hint) in [
            (Some(secret), "FLEETGATE_JWT_SECRET", "openssl rand -hex 32"),
            (
                self.auth.admin_token.as_ref(),
                "FLEETGATE_ADMIN_TOKEN",
                "openssl rand -hex 32",
            ),
            (
                self.auth.user_hash_key.as_ref(),
                "FLEETGATE_USER_HASH_KEY",
                "openssl rand -hex 32",
            ),
        ] {
            if let Some(v) = value
                && v.expose().len() < MIN_SECRET_BYTES
            {
                return Err(ConfigError::Invalid {
                    var: var.into(),
                    reason: format!(
                        "must be at least {MIN_SECRET_BYTES} bytes long (it has {}); generate one with `{hint}`",
                        v.expose().len()
                    ),
                });
            }
        }
        Ok(())
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
