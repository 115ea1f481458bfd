//! The checks a loaded configuration must pass: values that cannot work, alone or together, are an
//! error naming the variable (never its value).

use super::{Config, ConfigError, MAX_JWT_LEEWAY_SECS, MAX_LLM_TOKENS, MIN_SECRET_BYTES};

impl Config {
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

    /// What `fleetgate gateway` needs besides the policy file: an admin token, when set, as
    /// long as `serve`'s (it guards the runtime-limits actions).
    pub fn require_gateway(&self) -> Result<(), ConfigError> {
        match &self.auth.admin_token {
            Some(t) if t.expose().len() < MIN_SECRET_BYTES => Err(ConfigError::Invalid {
                var: "FLEETGATE_ADMIN_TOKEN".into(),
                reason: format!(
                    "must be at least {MIN_SECRET_BYTES} bytes long (it has {}); generate one with `openssl rand -hex 32`",
                    t.expose().len()
                ),
            }),
            _ => Ok(()),
        }
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
}
