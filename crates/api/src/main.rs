//! `fleetgate serve` runs a replica; `fleetgate migrate` applies the database migrations;
//! `fleetgate gateway` puts the limits in front of another app (the `gateway` crate).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use api::{AppState, Config};

// Requests allocate many small, short-lived objects across the runtime's threads; glibc's
// malloc spent ~30% of the server's CPU on them at 64 connections (`perf`, BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: fleetgate <serve|migrate|gateway>

  serve     run a replica (needs FLEETGATE_JWT_SECRET)
  migrate   apply the database migrations to FLEETGATE_DATABASE_URL
  gateway   proxy another app with the limits of the policy file FLEETGATE_GATEWAY_CONFIG

Configuration: defaults, then the TOML file named by FLEETGATE_CONFIG, then the environment.";

fn main() -> ExitCode {
    let cmd = std::env::args().nth(1).unwrap_or_default();
    if matches!(cmd.as_str(), "-h" | "--help" | "help") {
        let vars: Vec<&str> = api::config::variables().collect();
        println!("{USAGE}\n\nVariables:\n  {}", vars.join("\n  "));
        return ExitCode::SUCCESS;
    }
    if !matches!(cmd.as_str(), "serve" | "migrate" | "gateway") {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fleetgate: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fleetgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Inside the runtime: the gRPC trace exporter runs on it, and its final flush must happen
    // before the runtime goes away.
    let telemetry = {
        let _rt = rt.enter();
        api::telemetry::init(api::telemetry::LogFormat::parse(&config.server.log_format))
    };
    let result = rt.block_on(async {
        match cmd.as_str() {
            "serve" => serve(config).await,
            "gateway" => gateway(config).await,
            _ => migrate(config).await,
        }
    });
    {
        let _rt = rt.enter();
        telemetry.shutdown();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleetgate: {e:#}");
            if e.downcast_ref::<api::ConfigError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    config.require_serve()?;
    let listen = config.listen;
    let redis = limiter_core::RedisHandle::new(&config.redis_config()).context(
        "FLEETGATE_REDIS_URL / FLEETGATE_REDIS_CLUSTER / FLEETGATE_REDIS_SENTINELS / \
             FLEETGATE_REDIS_SENTINEL_MASTER / FLEETGATE_REDIS_PREFIX",
    )?;
    // One set of breakers per replica, shared by the health/admin API and the assistant's
    // outbound calls.
    let breakers = api::admin::breakers::build(&config, redis.clone())
        .context("FLEETGATE_BREAKER_FAILURE_THRESHOLD / FLEETGATE_BREAKER_OPEN_MS")?;
    let quota =
        api::limits::quota::QuotaStore::connect_lazy(&config).context("FLEETGATE_DATABASE_URL")?;
    let assistant =
        api::assistant::from_config(&config, &redis, breakers.clone(), quota.pool().clone())
            .context("FLEETGATE_PUBMED_RATE_PER_SEC / FLEETGATE_SEMANTIC_SCHOLAR_RATE_PER_SEC")?;
    let state = AppState::with_parts(config, assistant, redis, quota)
        .await
        .map_err(|e| match e {
            api::StartError::Config(c) => anyhow::Error::new(c),
            other => anyhow::Error::new(other),
        })?
        .with_breakers(Arc::new(breakers));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (FLEETGATE_LISTEN)"))?;
    tracing::info!(addr = %listener.local_addr()?, "fleetgate serving");
    api::run(listener, state, shutdown_signal()).await?;
    tracing::info!("fleetgate stopped");
    Ok(())
}

/// The gateway: the policy file's limits in front of its upstream app, with this
/// configuration's listen address, Redis, trusted proxies and admission fleet settings.
async fn gateway(config: Config) -> anyhow::Result<()> {
    config.require_gateway()?;
    let path = config
        .server
        .gateway_config
        .clone()
        .context("FLEETGATE_GATEWAY_CONFIG must name the gateway's policy file")?;
    let policy = gateway::Policy::load(path.as_ref())?;
    let a = &config.admission;
    // The built-in default URL is not a database anyone chose: only one the operator set counts.
    let default_db = api::config::DatabaseSettings::default();
    let db = &config.database;
    let database = (db.url.expose() != default_db.url.expose()).then(|| gateway::Database {
        url: db.url.expose().to_string(),
        max_connections: db.max_connections,
        acquire_timeout: std::time::Duration::from_millis(db.acquire_timeout_ms),
        async_commit: config.quota.async_commit,
    });
    let settings = gateway::Settings {
        listen: config.listen,
        redis: config.redis_config(),
        trusted_proxies: config.trusted_proxies()?,
        admission: limiter_core::AdmissionConfig {
            group: a.group.clone(),
            max_queued_per_user: a.max_queued_per_user,
            lease_ttl: std::time::Duration::from_millis(a.lease_ttl_ms),
            heartbeat_ttl: std::time::Duration::from_millis(a.heartbeat_ttl_ms),
            local_fallback: a.local_fallback,
            expected_replicas: a.expected_replicas,
            ..limiter_core::AdmissionConfig::default()
        },
        database,
        shutdown_grace: std::time::Duration::from_millis(config.server.shutdown_grace_ms),
        // The same admin token as `serve`: it guards the gateway's runtime-limits actions.
        admin_token: config
            .auth
            .admin_token
            .as_ref()
            .map(|t| gateway::AdminToken::new(t.expose())),
        // The same throttle on wrong admin tokens as `serve` (FLEETGATE_ADMIN_AUTH_FAILURES_PER_MIN).
        admin_failures_per_min: config.auth.admin_failures_per_min,
    };
    gateway::run(&policy, &settings, shutdown_signal()).await?;
    tracing::info!("fleetgate gateway stopped");
    Ok(())
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let store = api::limits::quota::QuotaStore::connect_lazy(&config)?;
    store
        .migrate()
        .await
        .context("migration failed (FLEETGATE_DATABASE_URL)")?;
    println!("migrations applied");
    Ok(())
}

/// SIGTERM (orchestrators) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
