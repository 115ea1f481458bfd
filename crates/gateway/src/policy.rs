//! The policy file: which upstream app the gateway fronts, who the caller is, and the limits of
//! each route. TOML, checked entirely at load: a typo or an impossible value stops the gateway
//! with an error naming the key, rather than running with a limit silently missing.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

use crate::routes::PathPattern;

/// A policy that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read the policy file {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, or a key unknown or of the wrong type.
    #[error("policy: {0}")]
    Parse(String),
    /// Parsed, but a value is refused; the message names the key.
    #[error("policy: {0}")]
    Invalid(String),
}

/// The whole policy file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Base URL of the app (`http://127.0.0.1:3000`); plain HTTP only.
    pub upstream: String,
    /// Longest wait for the app's response head (ms), after which the client gets 504.
    #[serde(default = "default_first_byte_ms")]
    pub upstream_timeout_ms: u64,
    /// How the caller's identity is established.
    #[serde(default)]
    pub identity: Identity,
    /// The concurrency caps and classes; needed when a route names a class.
    pub admission: Option<AdmissionPolicy>,
    /// The routes, first match wins.
    #[serde(default)]
    pub routes: Vec<RoutePolicy>,
    /// What happens to a request no route matches.
    #[serde(default)]
    pub default: DefaultPolicy,
    /// The circuit breaker on the app.
    #[serde(default)]
    pub breaker: AppBreakerPolicy,
    /// The gateway's own admin endpoint.
    #[serde(default)]
    pub admin: AdminPolicy,
}

/// `[admin]`: where the gateway answers its admin API (limits in force, runtime changes). That
/// path is the gateway's: requests to it never reach the app, so pick another one if the app
/// has its own `/api/system-health`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminPolicy {
    /// The exact path (default `/api/system-health`).
    #[serde(default = "default_admin_path")]
    pub path: String,
}

impl Default for AdminPolicy {
    fn default() -> Self {
        AdminPolicy {
            path: default_admin_path(),
        }
    }
}

fn default_admin_path() -> String {
    "/api/system-health".into()
}

fn default_first_byte_ms() -> u64 {
    60_000
}

/// `[identity]`: a verified HS256 bearer token, a bearer token verified against a JWKS (file or
/// URL), or a header set by a trusted auth proxy. At most one source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// Name of the environment variable holding the HS256 secret; the token's `sub` is the user.
    pub jwt_hs256_secret_env: Option<String>,
    /// A JWKS file: tokens signed with its keys (RS256, ES256, ...; each key's algorithm pinned).
    pub jwks_file: Option<String>,
    /// A JWKS URL (`http://` or `https://`), fetched at start and every `jwks_refresh_secs`.
    pub jwks_url: Option<String>,
    /// PEM file of the CA certificates an `https://` `jwks_url` must chain to; when set, only
    /// these are trusted (not the system's store). Read at start.
    pub jwks_ca_file: Option<String>,
    /// Seconds between refreshes of the JWKS (a failed refresh keeps the last good set).
    #[serde(default = "default_jwks_refresh_secs")]
    pub jwks_refresh_secs: u64,
    /// Tokens must carry this `iss`.
    pub jwt_issuer: Option<String>,
    /// Tokens' `aud` must contain this.
    pub jwt_audience: Option<String>,
    /// A header already carrying the user (only behind a proxy that overwrites it).
    pub header: Option<String>,
    /// The header the app receives the verified user in; any value the client sent is removed.
    #[serde(default = "default_identity_header")]
    pub identity_header: String,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            jwt_hs256_secret_env: None,
            jwks_file: None,
            jwks_url: None,
            jwks_ca_file: None,
            jwks_refresh_secs: default_jwks_refresh_secs(),
            jwt_issuer: None,
            jwt_audience: None,
            header: None,
            identity_header: default_identity_header(),
        }
    }
}

fn default_jwks_refresh_secs() -> u64 {
    300
}

impl Identity {
    /// Whether any source of identity is configured.
    pub fn has_source(&self) -> bool {
        self.jwt_hs256_secret_env.is_some()
            || self.jwks_file.is_some()
            || self.jwks_url.is_some()
            || self.header.is_some()
    }
}

fn default_identity_header() -> String {
    "X-Fleetgate-User".into()
}

/// `[admission]`: fleet-wide and per-user concurrency, classes by priority (highest first).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionPolicy {
    /// Class names, highest priority first.
    pub classes: Vec<String>,
    /// Requests running at once in the whole fleet.
    pub global_concurrency: u32,
    /// Requests one user may run at once; 0: no per-user limit (nor a per-user share of the
    /// queue), the fleet-wide cap alone, on a queue that costs Redis less.
    pub per_user_concurrency: u32,
    /// Longest wait for a slot (ms).
    #[serde(default = "default_queue_timeout_ms")]
    pub queue_timeout_ms: u64,
    /// Waiters allowed in the fleet-wide queue.
    #[serde(default = "default_max_queue")]
    pub max_queue: u32,
}

fn default_queue_timeout_ms() -> u64 {
    60_000
}

fn default_max_queue() -> u32 {
    500
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutePolicy {
    /// Method to match (any when absent).
    pub method: Option<String>,
    /// Exact path, or a prefix ending in `*`.
    pub path: String,
    /// Admission class (no admission when absent).
    pub class: Option<String>,
    /// Requests a minute per client address.
    pub per_ip_per_min: Option<u32>,
    /// Requests a minute per user.
    pub per_user_per_min: Option<u32>,
    /// Requests a UTC day per user (kept in PostgreSQL).
    pub daily_quota: Option<u32>,
    /// Decide and mark, never refuse.
    #[serde(default)]
    pub shadow: bool,
}

/// `[default]`: requests no route matches are passed to the app (default) or refused with 404.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultPolicy {
    /// Refuse unmatched requests (404 problem+json).
    #[serde(default)]
    pub refuse: bool,
}

/// `[breaker]`: the circuit breaker on the app, shared by every replica. On by default; the
/// defaults trip on 5 failures (5xx, 502, 504) within 30 s and stay open 30 s, doubling on each
/// trip in a row up to 5 min; one probe, whose success closes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppBreakerPolicy {
    /// `false`: no breaker.
    pub enabled: bool,
    /// Failures within the window that open it.
    pub failure_threshold: u32,
    /// The rolling window (ms).
    pub window_ms: u64,
    /// Also needs this share of failures among at least `min_calls` calls (busy apps).
    pub failure_ratio: Option<f64>,
    /// Calls the window must hold before the ratio counts.
    pub min_calls: u32,
    /// First open period (ms).
    pub open_ms: u64,
    /// Longest open period (ms).
    pub open_max_ms: u64,
    /// Probes at once, fleet-wide, when the open period ends.
    pub probe_permits: u32,
    /// Probe successes that close it.
    pub success_threshold: u32,
}

impl Default for AppBreakerPolicy {
    fn default() -> Self {
        let d = breaker_store::BreakerPolicy::default();
        let ms = |t: std::time::Duration| u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
        AppBreakerPolicy {
            enabled: true,
            failure_threshold: d.failure_threshold,
            window_ms: ms(d.window),
            failure_ratio: d.failure_ratio,
            min_calls: d.min_calls,
            open_ms: ms(d.open),
            open_max_ms: ms(d.open_max),
            probe_permits: d.probe_permits,
            success_threshold: d.success_threshold,
        }
    }
}

impl AppBreakerPolicy {
    /// The breaker-store policy.
    pub fn to_store(&self) -> breaker_store::BreakerPolicy {
        use std::time::Duration;
        breaker_store::BreakerPolicy {
            failure_threshold: self.failure_threshold,
            window: Duration::from_millis(self.window_ms),
            failure_ratio: self.failure_ratio,
            min_calls: self.min_calls,
            open: Duration::from_millis(self.open_ms),
            open_max: Duration::from_millis(self.open_max_ms.max(self.open_ms)),
            probe_permits: self.probe_permits,
            success_threshold: self.success_threshold,
            ..breaker_store::BreakerPolicy::default()
        }
    }
}

impl RoutePolicy {
    /// Whether the route limits or queues by user (it then needs an identity).
    pub fn needs_user(&self) -> bool {
        self.class.is_some() || self.per_user_per_min.is_some() || self.daily_quota.is_some()
    }

    /// The route's stable name: its method (`*` for any) and path. Quota counts are kept under
    /// it, so reordering the routes keeps them.
    pub fn name(&self) -> String {
        format!("{} {}", self.method.as_deref().unwrap_or("*"), self.path)
    }
}

impl Policy {
    /// Whether a route has a daily quota (the gateway then needs PostgreSQL).
    pub fn needs_database(&self) -> bool {
        self.routes.iter().any(|r| r.daily_quota.is_some())
    }

    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Policy::parse(&text)
    }

    /// Parses and checks a policy.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let policy: Policy = toml::from_str(text).map_err(|e| PolicyError::Parse(e.to_string()))?;
        policy.validate()?;
        Ok(policy)
    }

    fn validate(&self) -> Result<(), PolicyError> {
        let bad = |m: String| Err(PolicyError::Invalid(m));
        match self.upstream.parse::<http::Uri>() {
            Ok(u) if u.scheme_str() == Some("http") && u.authority().is_some() => {}
            _ => {
                return bad(format!(
                    "upstream: {:?} is not an http:// URL",
                    self.upstream
                ));
            }
        }
        if self.breaker.enabled
            && let Err(e) = self.breaker.to_store().validate()
        {
            let why = e.to_string();
            let why = why.trim_start_matches("invalid breaker configuration: ");
            return bad(format!("[breaker]: {why}"));
        }
        if !self.admin.path.starts_with('/') || self.admin.path.contains(['*', '?', '#']) {
            return bad(format!(
                "admin.path: {:?} is not an exact path starting with /",
                self.admin.path
            ));
        }
        if self.upstream_timeout_ms == 0 {
            return bad("upstream_timeout_ms: must be above 0".into());
        }
        let id = &self.identity;
        let sources = [
            id.jwt_hs256_secret_env.is_some(),
            id.jwks_file.is_some(),
            id.jwks_url.is_some(),
            id.header.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            return bad(
                "[identity]: set one of jwt_hs256_secret_env, jwks_file, jwks_url or header".into(),
            );
        }
        let mut https = false;
        if let Some(url) = &id.jwks_url {
            match url.parse::<http::Uri>() {
                Ok(u)
                    if matches!(u.scheme_str(), Some("http" | "https"))
                        && u.host().is_some_and(|h| !h.is_empty()) =>
                {
                    https = u.scheme_str() == Some("https");
                }
                _ => {
                    return bad(format!(
                        "identity.jwks_url: {url:?} is not an http:// or https:// URL"
                    ));
                }
            }
        }
        if let Some(ca) = &id.jwks_ca_file {
            // A CA file that nothing would use is a mistake worth stopping on (the operator
            // believes the set is fetched over verified TLS).
            if !https {
                return bad(
                    "identity.jwks_ca_file: only for an https:// jwks_url (it names the CAs the \
                     endpoint's certificate must chain to)"
                        .into(),
                );
            }
            if ca.trim().is_empty() {
                return bad("identity.jwks_ca_file: empty path".into());
            }
        }
        if id.jwks_refresh_secs == 0 {
            return bad("identity.jwks_refresh_secs: must be above 0".into());
        }
        if (id.jwt_issuer.is_some() || id.jwt_audience.is_some())
            && id.jwt_hs256_secret_env.is_none()
            && id.jwks_file.is_none()
            && id.jwks_url.is_none()
        {
            return bad(
                "[identity]: jwt_issuer / jwt_audience need jwt_hs256_secret_env, jwks_file or jwks_url"
                    .into(),
            );
        }
        for (key, value) in [
            ("identity.header", id.header.as_deref()),
            (
                "identity.identity_header",
                Some(id.identity_header.as_str()),
            ),
        ] {
            if let Some(v) = value
                && http::HeaderName::from_bytes(v.as_bytes()).is_err()
            {
                return bad(format!("{key}: {v:?} is not a header name"));
            }
        }
        let classes: BTreeSet<&str> = match &self.admission {
            Some(a) => {
                if a.classes.is_empty() {
                    return bad("admission.classes: at least one class".into());
                }
                for (key, v) in [
                    ("admission.global_concurrency", a.global_concurrency),
                    ("admission.max_queue", a.max_queue),
                ] {
                    if v == 0 {
                        return bad(format!("{key}: must be above 0"));
                    }
                }
                if a.queue_timeout_ms == 0 {
                    return bad("admission.queue_timeout_ms: must be above 0".into());
                }
                a.classes.iter().map(String::as_str).collect()
            }
            None => BTreeSet::new(),
        };
        for (i, r) in self.routes.iter().enumerate() {
            let at = format!("routes[{i}] ({})", r.path);
            if let Err(e) = PathPattern::parse(&r.path) {
                return bad(format!("{at}.path: {e}"));
            }
            if let Some(m) = &r.method
                && http::Method::from_bytes(m.as_bytes()).is_err()
            {
                return bad(format!("{at}.method: {m:?} is not a method"));
            }
            if let Some(c) = &r.class
                && !classes.contains(c.as_str())
            {
                return bad(format!("{at}.class: {c:?} is not one of admission.classes"));
            }
            for (key, v) in [
                ("per_ip_per_min", r.per_ip_per_min),
                ("per_user_per_min", r.per_user_per_min),
                ("daily_quota", r.daily_quota),
            ] {
                if v == Some(0) {
                    return bad(format!("{at}.{key}: must be above 0"));
                }
            }
            if r.needs_user() && !id.has_source() {
                return bad(format!(
                    "{at}: limits by user, but [identity] names no jwt_hs256_secret_env, \
                     jwks_file, jwks_url or header"
                ));
            }
        }
        Ok(())
    }
}

// The policy's checks, and the README's policy loading: in `policy/tests.rs`.
#[cfg(test)]
mod tests;
