//! The environment variables of the configuration, in one table: [`VARS`] is what the loader
//! applies, what `fleetgate --help` lists and what the deploy-file checks accept, so a variable
//! cannot be read without being listed, nor listed without being read.
//!
//! Each entry names a variable and how its value sets the configuration. A value is applied only
//! when the variable is set and not blank; one that does not parse is an error naming the variable
//! (never the value: it may be a secret).

use std::str::FromStr;

use super::{Config, ConfigError, parse_tiers};
use crate::config::secret::Secret;

/// Names the TOML file read before the environment (not in [`VARS`]: it is read first, to find
/// the file the other values are layered on).
pub const CONFIG_FILE: &str = "FLEETGATE_CONFIG";

/// One environment variable and how it sets the configuration.
pub struct EnvVar {
    /// Its name.
    pub name: &'static str,
    apply: fn(&mut Config, &'static str, String) -> Result<(), ConfigError>,
}

impl std::fmt::Debug for EnvVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvVar").field("name", &self.name).finish()
    }
}

type Apply = fn(&mut Config, &'static str, String) -> Result<(), ConfigError>;

const fn var(name: &'static str, apply: Apply) -> EnvVar {
    EnvVar { name, apply }
}

/// Every variable the loader reads besides [`CONFIG_FILE`], in the order it applies them.
pub static VARS: &[EnvVar] = &[
    var("FLEETGATE_LISTEN", |c, n, v| parse(&mut c.listen, n, &v)),
    var("FLEETGATE_REDIS_URL", |c, _, v| {
        c.redis.url = Secret::new(v);
        Ok(())
    }),
    var("FLEETGATE_REDIS_CLUSTER", |c, _, v| {
        c.redis.cluster = limiter_core::split_nodes(&v);
        Ok(())
    }),
    var("FLEETGATE_REDIS_SENTINELS", |c, _, v| {
        c.redis.sentinels = limiter_core::split_nodes(&v);
        Ok(())
    }),
    var("FLEETGATE_REDIS_SENTINEL_MASTER", |c, _, v| {
        c.redis.sentinel_master = v;
        Ok(())
    }),
    var("FLEETGATE_REDIS_SENTINEL_PASSWORD", |c, _, v| {
        c.redis.sentinel_password = Some(Secret::new(v));
        Ok(())
    }),
    var("FLEETGATE_REDIS_PREFIX", |c, _, v| {
        c.redis.prefix = v;
        Ok(())
    }),
    var("FLEETGATE_REDIS_TIMEOUT_MS", |c, n, v| {
        parse(&mut c.redis.timeout_ms, n, &v)
    }),
    var("FLEETGATE_DATABASE_URL", |c, _, v| {
        c.database.url = Secret::new(v);
        Ok(())
    }),
    var("FLEETGATE_DATABASE_MAX_CONNECTIONS", |c, n, v| {
        parse(&mut c.database.max_connections, n, &v)
    }),
    var("FLEETGATE_DATABASE_ACQUIRE_TIMEOUT_MS", |c, n, v| {
        parse(&mut c.database.acquire_timeout_ms, n, &v)
    }),
    var("FLEETGATE_EMERGENCY_CLEANUP_IDLE_SECS", |c, n, v| {
        parse(&mut c.database.emergency_idle_secs, n, &v)
    }),
    var("FLEETGATE_JWT_SECRET", |c, _, v| {
        c.auth.jwt_secret = Some(Secret::new(v));
        Ok(())
    }),
    var("FLEETGATE_JWT_AUDIENCE", |c, _, v| {
        c.auth.jwt_audience = Some(v);
        Ok(())
    }),
    var("FLEETGATE_JWT_ISSUER", |c, _, v| {
        c.auth.jwt_issuer = Some(v);
        Ok(())
    }),
    var("FLEETGATE_JWT_LEEWAY_SECS", |c, n, v| {
        parse(&mut c.auth.jwt_leeway_secs, n, &v)
    }),
    var("FLEETGATE_ADMIN_TOKEN", |c, _, v| {
        c.auth.admin_token = Some(Secret::new(v));
        Ok(())
    }),
    var("FLEETGATE_ADMIN_AUTH_FAILURES_PER_MIN", |c, n, v| {
        parse(&mut c.auth.admin_failures_per_min, n, &v)
    }),
    var("FLEETGATE_USER_HASH_KEY", |c, _, v| {
        c.auth.user_hash_key = Some(Secret::new(v));
        Ok(())
    }),
    var("FLEETGATE_TRUSTED_PROXIES", |c, _, v| {
        c.trusted_proxies = limiter_core::split_nodes(&v);
        Ok(())
    }),
    var("FLEETGATE_CHAT_PER_IP_PER_MIN", |c, n, v| {
        parse(&mut c.limits.chat_per_ip_per_min, n, &v)
    }),
    var("FLEETGATE_RESEARCH_PER_IP_PER_MIN", |c, n, v| {
        parse(&mut c.limits.research_per_ip_per_min, n, &v)
    }),
    var("FLEETGATE_EXPORT_PER_IP_PER_MIN", |c, n, v| {
        parse(&mut c.limits.export_per_ip_per_min, n, &v)
    }),
    var("FLEETGATE_IP_LIMIT_FAIL_OPEN", |c, n, v| {
        parse(&mut c.limits.fail_open, n, &v)
    }),
    var("FLEETGATE_MAX_CONCURRENT_PER_USER", |c, n, v| {
        parse(&mut c.admission.max_concurrent_per_user, n, &v)
    }),
    var("FLEETGATE_MAX_CONCURRENT_GLOBAL", |c, n, v| {
        parse(&mut c.admission.max_concurrent_global, n, &v)
    }),
    var("FLEETGATE_QUEUE_TIMEOUT_MS", |c, n, v| {
        parse(&mut c.admission.queue_timeout_ms, n, &v)
    }),
    var("FLEETGATE_LEASE_TTL_MS", |c, n, v| {
        parse(&mut c.admission.lease_ttl_ms, n, &v)
    }),
    var("FLEETGATE_MAX_QUEUE", |c, n, v| {
        parse(&mut c.admission.max_queue, n, &v)
    }),
    var("FLEETGATE_MAX_QUEUED_PER_USER", |c, n, v| {
        parse(&mut c.admission.max_queued_per_user, n, &v)
    }),
    var("FLEETGATE_ADMISSION_GROUP", |c, _, v| {
        c.admission.group = v;
        Ok(())
    }),
    var("FLEETGATE_ADMISSION_HEARTBEAT_MS", |c, n, v| {
        parse(&mut c.admission.heartbeat_ttl_ms, n, &v)
    }),
    var("FLEETGATE_ADMISSION_LOCAL_FALLBACK", |c, n, v| {
        parse(&mut c.admission.local_fallback, n, &v)
    }),
    var("FLEETGATE_EXPECTED_REPLICAS", |c, n, v| {
        parse(&mut c.admission.expected_replicas, n, &v)
    }),
    var("FLEETGATE_OUTAGE_POLICY", |c, n, v| {
        parse(&mut c.admission.outage_policy, n, &v)
    }),
    var("FLEETGATE_FREE_DAILY_QUERIES", |c, n, v| {
        parse(&mut c.quota.free_daily_queries, n, &v)
    }),
    var("FLEETGATE_QUOTA_TIERS", |c, _, v| {
        c.quota.tiers = parse_tiers(&v)?;
        Ok(())
    }),
    var("FLEETGATE_QUOTA_ASYNC_COMMIT", |c, n, v| {
        parse(&mut c.quota.async_commit, n, &v)
    }),
    var("FLEETGATE_PUBMED_URL", |c, _, v| {
        c.upstream.pubmed_url = v;
        Ok(())
    }),
    var("FLEETGATE_SEMANTIC_SCHOLAR_URL", |c, _, v| {
        c.upstream.semantic_scholar_url = v;
        Ok(())
    }),
    var("FLEETGATE_LLM_URL", |c, _, v| {
        c.upstream.llm_url = v;
        Ok(())
    }),
    var("FLEETGATE_LLM_MODEL", |c, _, v| {
        c.upstream.llm_model = v;
        Ok(())
    }),
    var("FLEETGATE_LLM_API_KEY", |c, _, v| {
        c.upstream.llm_api_key = Some(Secret::new(v));
        Ok(())
    }),
    var("FLEETGATE_NCBI_API_KEY", |c, _, v| {
        c.upstream.ncbi_api_key = Some(Secret::new(v));
        Ok(())
    }),
    var("FLEETGATE_NCBI_EMAIL", |c, _, v| {
        c.upstream.ncbi_email = Some(v);
        Ok(())
    }),
    var("FLEETGATE_S2_API_KEY", |c, _, v| {
        c.upstream.s2_api_key = Some(Secret::new(v));
        Ok(())
    }),
    var("FLEETGATE_PUBMED_RATE_PER_SEC", |c, n, v| {
        parse(&mut c.upstream.pubmed_rate_per_sec, n, &v)
    }),
    var("FLEETGATE_SEMANTIC_SCHOLAR_RATE_PER_SEC", |c, n, v| {
        parse(&mut c.upstream.semantic_scholar_rate_per_sec, n, &v)
    }),
    var("FLEETGATE_UPSTREAM_TIMEOUT_MS", |c, n, v| {
        parse(&mut c.upstream.timeout_ms, n, &v)
    }),
    var("FLEETGATE_BREAKER_FAILURE_THRESHOLD", |c, n, v| {
        parse(&mut c.upstream.breaker_failure_threshold, n, &v)
    }),
    var("FLEETGATE_BREAKER_OPEN_MS", |c, n, v| {
        parse(&mut c.upstream.breaker_open_ms, n, &v)
    }),
    var("FLEETGATE_LLM_MAX_TOKENS", |c, n, v| {
        parse(&mut c.upstream.llm_max_tokens, n, &v)
    }),
    var("FLEETGATE_LLM_ANSWER_TIMEOUT_MS", |c, n, v| {
        parse(&mut c.upstream.llm_answer_timeout_ms, n, &v)
    }),
    var("FLEETGATE_SHUTDOWN_GRACE_MS", |c, n, v| {
        parse(&mut c.server.shutdown_grace_ms, n, &v)
    }),
    var("FLEETGATE_PIPELINE", |c, _, v| {
        c.server.pipeline = v;
        Ok(())
    }),
    var("FLEETGATE_LOG_FORMAT", |c, _, v| {
        c.server.log_format = v;
        Ok(())
    }),
    var("FLEETGATE_HEALTH_CACHE_MS", |c, n, v| {
        parse(&mut c.server.health_cache_ms, n, &v)
    }),
    var("FLEETGATE_EXPORT_MAX_MESSAGES", |c, n, v| {
        parse(&mut c.server.export_max_messages, n, &v)
    }),
    var("FLEETGATE_GATEWAY_CONFIG", |c, _, v| {
        c.server.gateway_config = Some(v);
        Ok(())
    }),
    var("FLEETGATE_HTTP_HEADER_TIMEOUT_MS", |c, n, v| {
        parse(&mut c.http.header_timeout_ms, n, &v)
    }),
    var("FLEETGATE_HTTP_IDLE_TIMEOUT_MS", |c, n, v| {
        parse(&mut c.http.idle_timeout_ms, n, &v)
    }),
    var("FLEETGATE_HTTP_BODY_TIMEOUT_MS", |c, n, v| {
        parse(&mut c.http.body_timeout_ms, n, &v)
    }),
    var("FLEETGATE_HTTP_MAX_BODY_BYTES", |c, n, v| {
        parse(&mut c.http.max_body_bytes, n, &v)
    }),
    var("FLEETGATE_HTTP_WRITE_TIMEOUT_MS", |c, n, v| {
        parse(&mut c.http.write_timeout_ms, n, &v)
    }),
    var("FLEETGATE_HTTP_MAX_CONNECTIONS", |c, n, v| {
        parse(&mut c.http.max_connections, n, &v)
    }),
];

/// Every variable name the configuration reads: [`CONFIG_FILE`], then [`VARS`].
pub fn names() -> impl Iterator<Item = &'static str> {
    std::iter::once(CONFIG_FILE).chain(VARS.iter().map(|v| v.name))
}

/// Applies every variable of [`VARS`] that `env` has set (and not blank) to `cfg`.
pub(super) fn apply(
    cfg: &mut Config,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for var in VARS {
        if let Some(value) = env(var.name).filter(|v| !v.trim().is_empty()) {
            (var.apply)(cfg, var.name, value)?;
        }
    }
    Ok(())
}

fn parse<T: FromStr>(field: &mut T, var: &'static str, value: &str) -> Result<(), ConfigError> {
    *field = value.trim().parse().map_err(|_| ConfigError::Invalid {
        var: var.into(),
        reason: format!(
            "expected {}",
            std::any::type_name::<T>()
                .rsplit("::")
                .next()
                .unwrap_or("a value")
        ),
    })?;
    Ok(())
}
