//! Starting the gateway: the policy and the settings it shares with `fleetgate serve` (listen
//! address, Redis, trusted proxies, the admission queue's fleet settings) become a listening
//! server. The library reads one environment variable only: the one the policy names for the
//! HS256 secret (the operator's explicit choice); everything else is passed in (or named by the
//! policy: its JWKS file or URL, the CA file for that URL). An https JWKS URL without a CA file
//! is verified against the system's CA store, which `SSL_CERT_FILE` / `SSL_CERT_DIR` can point
//! elsewhere, as for OpenSSL.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;
use limiter_core::{Admission, AdmissionConfig, LimiterError, RedisConfig, RedisHandle};
use limiter_tower::runtime::LimitsStore;
use limiter_tower::{AdminGate, AdminToken, ClientIpKey};
use tokio::net::TcpListener;

use crate::admin::Admin;
use crate::breaker::AppBreaker;
use crate::identity::IdentityResolver;
use crate::jwks::{ClaimChecks, JwksError, JwksSource, JwksTrust, JwksVerifier};
use crate::policy::{Policy, PolicyError};
use crate::proxy::Proxy;
use crate::quota::{Database, QuotaStore};
use crate::router::{Gateway, RouteDeps};

/// What the gateway shares with a `fleetgate serve` replica, mapped from its configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The Redis holding the limits' state (one prefix per protected app).
    pub redis: RedisConfig,
    /// Proxies whose `X-Forwarded-For` / `-Proto` / `-Host` are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// The admission queue's fleet settings (group, lease and heartbeat, local fallback,
    /// waiters per user); classes, caps, queue length come from the policy.
    pub admission: AdmissionConfig,
    /// PostgreSQL, for daily quotas; a policy with a `daily_quota` refuses to start without it.
    pub database: Option<Database>,
    /// How long requests still running (an SSE stream, say) may go on after the shutdown signal
    /// before the gateway exits anyway.
    pub shutdown_grace: Duration,
    /// The bearer token of the admin endpoint (`None`: admin actions are refused with 403).
    pub admin_token: Option<AdminToken>,
    /// Wrong admin tokens one client address may send per minute (fleet-wide); after that its
    /// admin requests are refused with 429 without the token being compared.
    pub admin_failures_per_min: u32,
}

/// How often every replica polls the runtime-limits version, the safety net for a lost pub/sub
/// announcement: a change is in force everywhere within this plus a round trip.
pub const RUNTIME_LIMITS_POLL: Duration = Duration::from_millis(500);

/// Why the gateway could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The policy is unusable.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A limit could not be built (Redis configuration, admission settings).
    #[error("limits: {0}")]
    Limits(#[from] LimiterError),
    /// The listener or the server failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A route has a daily quota and no database is configured, or it cannot be prepared.
    #[error("daily quotas: {0}")]
    Quota(String),
}

fn header(key: &str, name: &str) -> Result<HeaderName, PolicyError> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| PolicyError::Invalid(format!("{key}: {name:?} is not a header name")))
}

/// The identity resolver the policy asks for; reads the secret's variable, loads the JWKS (a set
/// that cannot be fetched or parsed stops the start, naming the key).
async fn identity(policy: &Policy) -> Result<IdentityResolver, PolicyError> {
    let id = &policy.identity;
    let out = header("identity.identity_header", &id.identity_header)?;
    let checks = ClaimChecks {
        issuer: id.jwt_issuer.clone(),
        audience: id.jwt_audience.clone(),
    };
    if let Some(var) = &id.jwt_hs256_secret_env {
        let secret = std::env::var(var).unwrap_or_default();
        return IdentityResolver::jwt_checked(secret.as_bytes(), &checks, out).map_err(|_| {
            PolicyError::Invalid(format!(
                "identity.jwt_hs256_secret_env: the variable {var} is not set or empty"
            ))
        });
    }
    let jwks = match (&id.jwks_file, &id.jwks_url) {
        (Some(f), _) => Some(("identity.jwks_file", JwksSource::File(f.into()))),
        (None, Some(u)) => {
            let uri = u
                .parse()
                .map_err(|_| PolicyError::Invalid(format!("identity.jwks_url: {u:?}")))?;
            Some(("identity.jwks_url", JwksSource::Url(uri)))
        }
        (None, None) => None,
    };
    if let Some((key, source)) = jwks {
        let refresh = Duration::from_secs(id.jwks_refresh_secs);
        let trust = match &id.jwks_ca_file {
            Some(f) => JwksTrust::CaFile(f.into()),
            None => JwksTrust::System,
        };
        let verifier = JwksVerifier::start_trusting(source, trust, checks, refresh)
            .await
            .map_err(|e| {
                let key = match e {
                    JwksError::CaFile(_) => "identity.jwks_ca_file",
                    _ => key,
                };
                PolicyError::Invalid(format!("{key}: {e}"))
            })?;
        return Ok(IdentityResolver::jwks(verifier, out));
    }
    if let Some(h) = &id.header {
        return Ok(IdentityResolver::from_header(
            header("identity.header", h)?,
            out,
        ));
    }
    Ok(IdentityResolver::anonymous(out))
}

/// Builds the gateway service (routes, limits, proxy) from a checked policy.
pub async fn build(policy: &Policy, settings: &Settings) -> Result<Gateway, GatewayError> {
    let redis = RedisHandle::new(&settings.redis)?;
    let quota = if policy.needs_database() {
        let Some(db) = &settings.database else {
            return Err(GatewayError::Quota(
                "a route has daily_quota, which needs PostgreSQL: set FLEETGATE_DATABASE_URL"
                    .into(),
            ));
        };
        let store = QuotaStore::open(db).await.map_err(|e| {
            tracing::error!(error = %e, "quota database");
            GatewayError::Quota(
                "cannot prepare the quota table in the database of FLEETGATE_DATABASE_URL".into(),
            )
        })?;
        Some(store)
    } else {
        None
    };
    let admission = match &policy.admission {
        Some(a) => {
            let cfg = AdmissionConfig {
                classes: a.classes.clone(),
                global_cap: a.global_concurrency,
                user_cap: a.per_user_concurrency,
                max_queue: a.max_queue,
                // No per-user cap: no per-user share of the queue either (the two go together).
                max_queued_per_user: if a.per_user_concurrency == 0 {
                    0
                } else {
                    settings.admission.max_queued_per_user
                },
                ..settings.admission.clone()
            };
            Some(Admission::start(redis.clone(), cfg).await?)
        }
        None => None,
    };
    let upstream = policy
        .upstream
        .parse()
        .map_err(|_| PolicyError::Invalid(format!("upstream: {:?}", policy.upstream)))?;
    let first_byte = Duration::from_millis(policy.upstream_timeout_ms);
    let mut proxy = Proxy::new(&upstream, first_byte, settings.trusted_proxies.clone());
    let breaker = if policy.breaker.enabled {
        let b = AppBreaker::new(redis.clone(), &policy.breaker, first_byte)
            .map_err(|e| PolicyError::Invalid(format!("[breaker]: {e}")))?;
        proxy = proxy.with_breaker(b.clone());
        Some(b)
    } else {
        None
    };
    let deps = RouteDeps {
        redis: redis.clone(),
        breaker,
        admission: admission.clone(),
        trusted_proxies: settings.trusted_proxies.clone(),
        proxy,
        quota,
    };
    let gateway = Gateway::new(policy, identity(policy).await?, &deps)?;
    // The runtime limits: loaded before serving (they survive restarts), then followed.
    let limits = Arc::new(gateway.runtime_targets(admission));
    let store = LimitsStore::new(redis.clone(), "gateway");
    let mut docs = store.watch(RUNTIME_LIMITS_POLL).await;
    limits.apply(docs.borrow_and_update().clone());
    let follower = Arc::clone(&limits);
    tokio::spawn(async move {
        while docs.changed().await.is_ok() {
            let doc = docs.borrow_and_update().clone();
            tracing::info!(version = doc.version, by = %doc.updated_by, "runtime limits changed");
            follower.apply(doc);
        }
    });
    let gate = AdminGate::new(
        redis,
        settings.admin_token.clone(),
        settings.admin_failures_per_min,
    )?;
    let client = ClientIpKey::behind(settings.trusted_proxies.iter().copied());
    let admin = Admin::new(policy.admin.path.clone(), gate, client, store, limits);
    Ok(gateway.with_admin(admin))
}

/// Serves `gateway` on `listener` until `shutdown` completes; requests still running then have
/// `grace` to finish (a stream that outlives it is cut: a replica must stop in bounded time).
pub async fn serve(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Result<(), GatewayError> {
    let (stopping, mut stopped) = tokio::sync::watch::channel(false);
    let signal = async move {
        shutdown.await;
        let _ = stopping.send(true);
    };
    let identity = gateway.identity().clone();
    let mut app = axum::Router::new().fallback_service(gateway);
    if identity.needs_prepare() {
        // A token naming a key the JWKS lacks may need a refetch first: async work that the
        // gateway's synchronous identity step cannot do itself.
        app = app.layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let ready = identity.prepare(&req);
                async move {
                    ready.await;
                    next.run(req).await
                }
            },
        ));
    }
    // No Nagle delay: a response head and its first body chunk are separate writes, and the
    // second would otherwise wait for the peer's delayed ACK (tens of ms per request).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
    });
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(signal);
    let deadline = async move {
        if stopped.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        r = std::future::IntoFuture::into_future(server) => r?,
        () = deadline => tracing::warn!("shutdown grace over: cutting the requests still running"),
    }
    Ok(())
}

/// Runs the gateway of `policy` on `settings.listen` until `shutdown` completes.
pub async fn run(
    policy: &Policy,
    settings: &Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let gateway = build(policy, settings).await?;
    let listener = TcpListener::bind(settings.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, upstream = %policy.upstream, "fleetgate gateway serving");
    serve(listener, gateway, shutdown, settings.shutdown_grace).await
}
