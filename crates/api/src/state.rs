//! [`AppState`]: everything a request needs, shared by all handlers and layers of one replica.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chat::Assistant;
use limiter_core::{LimiterError, RedisHandle, WindowPolicy};
use limiter_tower::{AdmissionLayer, SlidingWindowLayer};

use crate::admin::breakers::BreakerControl;
use crate::admin::slot_holders::SlotHolders;
use crate::auth::AdminToken;
use crate::auth::admin_gate::AdminGate;
use crate::auth::jwt::JwtVerifier;
use crate::auth::pseudonym::Pseudonymizer;
use crate::config::{Config, ConfigError};
use crate::health::cache::HealthCache;
use crate::health::stats::RequestStats;
use crate::limits::admission::{Gate, RouteClass};
use crate::limits::ip_limit::{ClientKey, IpLimitStats, IpWindowObserver};
use crate::limits::quota::{QuotaError, QuotaStore};
use crate::limits::render::ApiRenderer;
use crate::limits::runtime::{ClassHandles, RuntimeLimits};
use crate::limits::slots::SlotSource;
use crate::limits::user_key::UserKey;
use crate::server::client_ip::ClientIpResolver;

/// The per-IP window layer of a route class.
pub type IpWindowLayer = SlidingWindowLayer<ClientKey>;

/// The admission layer of a route class.
pub type AdmissionLimit = AdmissionLayer<UserKey, SlotSource>;

/// Why a replica could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad or missing configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The Redis configuration is unusable (not "Redis is down": that is served in degraded mode).
    #[error("redis: {0}")]
    Redis(#[from] LimiterError),
    /// The database URL is unusable.
    #[error("database: {0}")]
    Database(#[from] QuotaError),
}

struct Inner {
    config: Config,
    redis: RedisHandle,
    quota: QuotaStore,
    gate: Gate,
    assistant: Arc<dyn Assistant>,
    breakers: OnceLock<Arc<dyn BreakerControl>>,
    jwt: JwtVerifier,
    admin: AdminGate,
    pseudonymizer: Pseudonymizer,
    health: HealthCache,
    client_ip: ClientIpResolver,
    chat_limit: IpWindowLayer,
    research_limit: IpWindowLayer,
    export_limit: IpWindowLayer,
    admission: [AdmissionLimit; 3],
    runtime: Arc<RuntimeLimits>,
    runtime_store: limiter_tower::runtime::LimitsStore,
    ip_stats: Arc<IpLimitStats>,
    request_stats: RequestStats,
    slot_holders: SlotHolders,
    shutting_down: AtomicBool,
}

/// The shared state of one replica. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("redis", &self.inner.redis)
            .field("shutting_down", &self.is_shutting_down())
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Builds a replica's state from a configuration and a chat assistant. Connects to nothing: Redis
    /// and PostgreSQL are reached on first use, so a replica starts while either is down.
    pub async fn new(
        config: Config,
        assistant: Arc<dyn Assistant>,
    ) -> Result<AppState, StartError> {
        let redis = RedisHandle::new(&config.redis_config())?;
        let quota = QuotaStore::connect_lazy(&config)?;
        Self::with_parts(config, assistant, redis, quota).await
    }

    /// Builds a replica's state over an existing Redis handle and quota store (tests share them).
    pub async fn with_parts(
        config: Config,
        assistant: Arc<dyn Assistant>,
        redis: RedisHandle,
        quota: QuotaStore,
    ) -> Result<AppState, StartError> {
        config.validate()?;
        config.require_serve()?;
        limiter_core::set_script_observer(crate::metrics::observe_script);
        let secret = config
            .auth
            .jwt_secret
            .as_ref()
            .ok_or(ConfigError::Missing("FLEETGATE_JWT_SECRET"))?;
        let jwt = JwtVerifier::new(
            secret.expose().as_bytes(),
            config.auth.jwt_audience.clone(),
            config.auth.jwt_issuer.clone(),
            config.auth.jwt_leeway_secs,
        )
        .map_err(|_| ConfigError::Missing("FLEETGATE_JWT_SECRET"))?;
        let pseudonymizer = Pseudonymizer::from_config(
            config.auth.user_hash_key.as_ref().map(|k| k.expose()),
            secret.expose(),
        );
        let a = &config.admission;
        let gate = Gate::start(
            redis.clone(),
            limiter_core::AdmissionConfig {
                group: a.group.clone(),
                classes: RouteClass::queue_classes(),
                max_queued_per_user: a.max_queued_per_user,
                user_cap: a.max_concurrent_per_user,
                global_cap: a.max_concurrent_global,
                lease_ttl: Duration::from_millis(a.lease_ttl_ms),
                max_queue: a.max_queue,
                heartbeat_ttl: Duration::from_millis(a.heartbeat_ttl_ms),
                local_fallback: a.local_fallback,
                expected_replicas: a.expected_replicas,
                outage_policy: a.outage_policy.into(),
            },
        )
        .await?;
        let ip_stats = Arc::new(IpLimitStats::default());
        let l = &config.limits;
        // One set of switches per route class, for the limits changed at runtime.
        let handles = [
            ClassHandles::new(l.chat_per_ip_per_min),
            ClassHandles::new(l.research_per_ip_per_min),
            ClassHandles::new(l.export_per_ip_per_min),
        ];
        let layer = |class: RouteClass, per_min: u32| -> Result<IpWindowLayer, LimiterError> {
            let policy = WindowPolicy::new(class.name(), per_min, Duration::from_secs(60));
            Ok(SlidingWindowLayer::new(redis.clone(), policy, ClientKey)?
                .handle(handles[class as usize].window.clone())
                .fail_open(l.fail_open)
                .renderer(ApiRenderer::Window)
                .observer(IpWindowObserver::new(Arc::clone(&ip_stats))))
        };
        let chat_limit = layer(RouteClass::Chat, l.chat_per_ip_per_min)?;
        let research_limit = layer(RouteClass::Research, l.research_per_ip_per_min)?;
        let export_limit = layer(RouteClass::Export, l.export_per_ip_per_min)?;
        let slot_holders = SlotHolders::default();
        let slots = SlotSource::new(gate.clone(), slot_holders.clone());
        let admission = |class: RouteClass| -> Result<AdmissionLimit, LimiterError> {
            Ok(
                AdmissionLayer::with_admitter(slots.clone(), class.name(), UserKey)?
                    .queue_timeout(config.queue_timeout())
                    .handle(handles[class as usize].admission.clone())
                    .renderer(ApiRenderer::Admission),
            )
        };
        let admission = [
            admission(RouteClass::Chat)?,
            admission(RouteClass::Research)?,
            admission(RouteClass::Export)?,
        ];
        let [chat_h, research_h, export_h] = handles;
        let runtime = Arc::new(RuntimeLimits::new(
            [
                (RouteClass::Chat, chat_h),
                (RouteClass::Research, research_h),
                (RouteClass::Export, export_h),
            ],
            quota.clone(),
            gate.admission().clone(),
        ));
        let runtime_store =
            crate::limits::runtime::follow(redis.clone(), &runtime, crate::limits::runtime::POLL)
                .await;
        let client_ip = ClientIpResolver::new(config.trusted_proxies()?);
        let token = config
            .auth
            .admin_token
            .as_ref()
            .map(|t| AdminToken::new(t.expose()));
        if token.is_none() {
            tracing::warn!("FLEETGATE_ADMIN_TOKEN is not set: admin actions are disabled");
        }
        let admin = AdminGate::new(redis.clone(), token, config.auth.admin_failures_per_min)?;
        let health = HealthCache::new(Duration::from_millis(config.server.health_cache_ms));
        Ok(AppState {
            inner: Arc::new(Inner {
                config,
                redis,
                quota,
                gate,
                assistant,
                breakers: OnceLock::new(),
                jwt,
                admin,
                pseudonymizer,
                health,
                client_ip,
                chat_limit,
                research_limit,
                export_limit,
                admission,
                runtime,
                runtime_store,
                ip_stats,
                request_stats: RequestStats::default(),
                slot_holders,
                shutting_down: AtomicBool::new(false),
            }),
        })
    }

    /// Wires the circuit breakers (health and `force-close-circuits`). Only the first call counts.
    pub fn with_breakers(self, breakers: Arc<dyn BreakerControl>) -> Self {
        let _ = self.inner.breakers.set(breakers);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }
    /// The Redis handle.
    pub fn redis(&self) -> &RedisHandle {
        &self.inner.redis
    }
    /// The quota store.
    pub fn quota(&self) -> &QuotaStore {
        &self.inner.quota
    }
    /// The admission gate.
    pub fn gate(&self) -> &Gate {
        &self.inner.gate
    }
    /// The chat assistant the routes call once a request has passed every limit.
    pub fn assistant(&self) -> &dyn Assistant {
        self.inner.assistant.as_ref()
    }
    /// The breakers, when wired.
    pub fn breakers(&self) -> Option<&Arc<dyn BreakerControl>> {
        self.inner.breakers.get()
    }
    /// The JWT verifier.
    pub fn jwt(&self) -> &JwtVerifier {
        &self.inner.jwt
    }
    /// The admin token, when configured (an unthrottled comparison: routes use
    /// [`AppState::admin_gate`]).
    pub fn admin(&self) -> Option<&AdminToken> {
        self.inner.admin.token()
    }
    /// The admin token with its per-address throttle of wrong guesses.
    pub fn admin_gate(&self) -> &AdminGate {
        &self.inner.admin
    }
    /// Turns user ids into the pseudonyms logs and upstreams see.
    pub fn pseudonymizer(&self) -> &Pseudonymizer {
        &self.inner.pseudonymizer
    }
    /// The health report of the last second.
    pub fn health_cache(&self) -> &HealthCache {
        &self.inner.health
    }
    /// The client address resolver.
    pub fn client_ip(&self) -> &ClientIpResolver {
        &self.inner.client_ip
    }
    /// The per-IP layer of a route class.
    pub fn ip_limit(&self, class: RouteClass) -> &IpWindowLayer {
        match class {
            RouteClass::Chat => &self.inner.chat_limit,
            RouteClass::Research => &self.inner.research_limit,
            RouteClass::Export => &self.inner.export_limit,
        }
    }
    /// The admission layer of a route class (its slots from [`AppState::gate`]).
    pub fn admission(&self, class: RouteClass) -> &AdmissionLimit {
        &self.inner.admission[class as usize]
    }
    /// The limits changed at runtime, as applied on this replica.
    pub fn runtime_limits(&self) -> &RuntimeLimits {
        &self.inner.runtime
    }
    /// Where the runtime limits are written (the admin actions).
    pub fn runtime_store(&self) -> &limiter_tower::runtime::LimitsStore {
        &self.inner.runtime_store
    }
    /// Per-IP counters.
    pub fn ip_stats(&self) -> &IpLimitStats {
        &self.inner.ip_stats
    }
    /// Request counters.
    pub fn request_stats(&self) -> &RequestStats {
        &self.inner.request_stats
    }
    /// Who holds this replica's slots (the fleet view's users at cap).
    pub fn slot_holders(&self) -> &SlotHolders {
        &self.inner.slot_holders
    }
    /// Whether shutdown has begun (readiness false, no new admissions).
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Acquire)
    }
    /// Begins shutdown: readiness turns false and new requests are refused with 503.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Release);
    }
}

impl axum::extract::FromRef<AppState> for crate::server::json::MaxBodyBytes {
    fn from_ref(state: &AppState) -> Self {
        crate::server::json::MaxBodyBytes(state.config().http.max_body_bytes)
    }
}
