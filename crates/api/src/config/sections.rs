//! The sections of the configuration (TOML tables; each field names its variable) and their
//! defaults.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::secret::Secret;

/// Redis.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `FLEETGATE_REDIS_URL`.
    pub url: Secret,
    /// `FLEETGATE_REDIS_CLUSTER`: node URLs; non-empty switches to Cluster.
    pub cluster: Vec<String>,
    /// `FLEETGATE_REDIS_SENTINELS`: sentinel `host:port`s; non-empty switches to Sentinel (the
    /// master they name, with the URL's database and credentials).
    pub sentinels: Vec<String>,
    /// `FLEETGATE_REDIS_SENTINEL_MASTER`: the master's name at the sentinels.
    pub sentinel_master: String,
    /// `FLEETGATE_REDIS_SENTINEL_PASSWORD`: the sentinels' own `requirepass`, if they have one.
    pub sentinel_password: Option<Secret>,
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
    /// [`super::MAX_JWT_LEEWAY_SECS`]).
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
    /// `FLEETGATE_OUTAGE_POLICY`: `safety` (local admission stops once this replica's slots may
    /// no longer be counted in Redis, then 503 until Redis answers) or `availability` (local
    /// admission for the whole outage).
    pub outage_policy: OutagePolicy,
}

/// `FLEETGATE_OUTAGE_POLICY` (see `limiter_core::OutagePolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutagePolicy {
    /// Admit locally only into the slots Redis counts for this replica, and refuse once they
    /// may have expired there (a partition cannot exceed the cap).
    #[default]
    Safety,
    /// Admit on the local limit for the whole outage.
    Availability,
}

impl std::str::FromStr for OutagePolicy {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "safety" => Ok(OutagePolicy::Safety),
            "availability" => Ok(OutagePolicy::Availability),
            _ => Err(()),
        }
    }
}

impl From<OutagePolicy> for limiter_core::OutagePolicy {
    fn from(p: OutagePolicy) -> Self {
        match p {
            OutagePolicy::Safety => limiter_core::OutagePolicy::Safety,
            OutagePolicy::Availability => limiter_core::OutagePolicy::Availability,
        }
    }
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
    /// `FLEETGATE_QUOTA_ASYNC_COMMIT`: commit each batch of spends with `synchronous_commit =
    /// off` (the commit does not wait for its WAL flush; a database crash can lose the spends of
    /// the last few hundred milliseconds, in the users' favour).
    pub async_commit: bool,
}

/// Upstreams of the chat assistant (read here so one file configures the service).
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

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            url: Secret::new("redis://127.0.0.1:6379"),
            cluster: Vec::new(),
            sentinels: Vec::new(),
            sentinel_master: "mymaster".into(),
            sentinel_password: None,
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
            outage_policy: OutagePolicy::Safety,
        }
    }
}

impl Default for QuotaSettings {
    fn default() -> Self {
        QuotaSettings {
            free_daily_queries: 3,
            tiers: BTreeMap::new(),
            async_commit: false,
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
