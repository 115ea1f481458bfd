//! One handle to Redis, standalone, behind Sentinel, or Cluster, shared by every primitive.
//!
//! Standalone uses redis-rs's `ConnectionManager`: one multiplexed connection (concurrent calls are
//! pipelined on it, which is why it outruns a pool) that reconnects by itself in the background
//! after Redis restarts. The handle is created without touching the network, so a replica can start
//! while Redis is down and serve in degraded mode; calls fail fast as `Unavailable` until Redis
//! answers again. Cluster uses redis-rs's cluster connection, created on first use and retried on
//! every call until it succeeds. Sentinel asks the sentinels where the master is and follows it
//! when it moves (`redis_sentinel.rs`).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{ErrorKind, FromRedisValue, RedisError, ToRedisArgs};
use tokio::sync::OnceCell;
use tracing::Instrument;
use tracing::field::Empty;

use crate::error::is_availability_error;
use crate::redis_functions::{self, After, Functions};
use crate::redis_sentinel::Sentinel;
use crate::scripts::LuaScript;
use crate::{Keys, LimiterError};

/// How a script call ended, for [`set_script_observer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptOutcome {
    /// A reply arrived.
    Ok,
    /// Redis could not be reached in time.
    Unavailable,
    /// Redis answered with an error.
    Error,
}

impl ScriptOutcome {
    /// `ok`, `unavailable` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            ScriptOutcome::Ok => "ok",
            ScriptOutcome::Unavailable => "unavailable",
            ScriptOutcome::Error => "error",
        }
    }
}

/// Receives every script call's name, duration and outcome (the service's metrics).
pub type ScriptObserver = fn(&'static str, Duration, ScriptOutcome);

static OBSERVER: OnceLock<ScriptObserver> = OnceLock::new();

/// Installs the process-wide script observer; only the first call counts (returns whether this
/// one did). A plain function pointer: the hot path pays one atomic load, no allocation.
pub fn set_script_observer(f: ScriptObserver) -> bool {
    OBSERVER.set(f).is_ok()
}

/// Where Redis is and how long to wait for it.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Standalone Redis URL, e.g. `redis://127.0.0.1:6379`.
    pub url: String,
    /// Cluster node URLs. Non-empty switches to Cluster (and `url` is not used).
    pub cluster_nodes: Vec<String>,
    /// Sentinel addresses (`host:port`). Non-empty switches to Sentinel: the master is the one
    /// they name, with `url`'s database and credentials (its address is not used).
    pub sentinels: Vec<String>,
    /// The master's name at the sentinels.
    pub sentinel_master: String,
    /// The sentinels' own password (their `requirepass`), if they ask for one; the master's
    /// credentials are `url`'s.
    pub sentinel_password: Option<String>,
    /// Key prefix: every key starts with it (see [`Keys`]).
    pub prefix: String,
    /// How long one call may wait for its reply before it counts as `Unavailable`.
    pub response_timeout: Duration,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            cluster_nodes: Vec::new(),
            sentinels: Vec::new(),
            sentinel_master: "mymaster".into(),
            sentinel_password: None,
            prefix: "fg".into(),
            // Generous for a loaded machine, short enough that a dead Redis is noticed quickly.
            response_timeout: Duration::from_millis(1000),
            connect_timeout: Duration::from_millis(500),
        }
    }
}

/// Splits a comma-separated node list, ignoring blanks.
pub fn split_nodes(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

#[derive(Clone)]
enum Backend {
    Single(ConnectionManager),
    Sentinel(Arc<Sentinel>),
    Cluster {
        // Boxed: the client holds the whole cluster configuration, the standalone variant a pointer.
        client: Box<ClusterClient>,
        conn: Arc<OnceCell<ClusterConnection>>,
        /// For the dedicated connections of sharded pub/sub (`cluster_push_connection`).
        nodes: Arc<[String]>,
        timeouts: (Duration, Duration),
    },
}

/// A cheap-to-clone handle: connection plus key namespace.
#[derive(Clone)]
pub struct RedisHandle {
    backend: Backend,
    keys: Keys,
    /// A plain client for dedicated connections (pub/sub, blocking commands). In Cluster mode it
    /// points at the first node: PUBLISH is broadcast to every node of a cluster. Not used
    /// behind Sentinel (the current master's is).
    client: redis::Client,
    cluster: bool,
    /// FCALL or EVALSHA for this crate's scripts (`redis_functions.rs`).
    functions: Functions,
}

impl std::fmt::Debug for RedisHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHandle")
            .field("prefix", &self.keys.prefix())
            .field("cluster", &self.cluster)
            .finish()
    }
}

impl RedisHandle {
    /// Builds a handle without connecting: the first call connects. Must be called inside a
    /// tokio runtime (the connection manager spawns its reconnect task).
    pub fn new(cfg: &RedisConfig) -> Result<Self, LimiterError> {
        let keys = Keys::new(&cfg.prefix)?;
        let invalid = |e: redis::RedisError| LimiterError::InvalidArgument(e.to_string());
        let mcfg = ConnectionManagerConfig::new()
            .set_response_timeout(Some(cfg.response_timeout))
            .set_connection_timeout(Some(cfg.connect_timeout))
            // Few, quick retries: a call never waits long for a dead server; the next call
            // triggers a new reconnection round.
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        if !cfg.sentinels.is_empty() {
            if !cfg.cluster_nodes.is_empty() {
                return Err(LimiterError::InvalidArgument(
                    "Sentinel and Cluster exclude each other".into(),
                ));
            }
            let sentinel = Sentinel::new(
                &cfg.sentinels,
                &cfg.sentinel_master,
                cfg.sentinel_password.as_deref(),
                &cfg.url,
                mcfg,
                cfg.connect_timeout + cfg.response_timeout,
            )?;
            let client = redis::Client::open(cfg.url.as_str()).map_err(invalid)?;
            let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                LimiterError::InvalidArgument("RedisHandle::new needs a tokio runtime".into())
            })?;
            let sentinel = Arc::new(sentinel);
            crate::redis_sentinel::watch(&sentinel, &runtime);
            return Ok(RedisHandle {
                backend: Backend::Sentinel(sentinel),
                keys,
                client,
                cluster: false,
                functions: Functions::default(),
            });
        }
        if cfg.cluster_nodes.is_empty() {
            let client = redis::Client::open(cfg.url.as_str()).map_err(invalid)?;
            let manager =
                ConnectionManager::new_lazy_with_config(client.clone(), mcfg).map_err(invalid)?;
            Ok(RedisHandle {
                backend: Backend::Single(manager),
                keys,
                client,
                cluster: false,
                functions: Functions::default(),
            })
        } else {
            let client = redis::Client::open(cfg.cluster_nodes[0].as_str()).map_err(invalid)?;
            let cluster = ClusterClient::builder(cfg.cluster_nodes.clone())
                .connection_timeout(cfg.connect_timeout)
                .response_timeout(cfg.response_timeout)
                .retries(2)
                .build()
                .map_err(invalid)?;
            Ok(RedisHandle {
                backend: Backend::Cluster {
                    client: Box::new(cluster),
                    conn: Arc::new(OnceCell::new()),
                    nodes: cfg.cluster_nodes.clone().into(),
                    timeouts: (cfg.connect_timeout, cfg.response_timeout),
                },
                keys,
                client,
                cluster: true,
                functions: Functions::default(),
            })
        }
    }

    /// The same connection under another key prefix (tests use one prefix each).
    pub fn with_prefix(&self, prefix: &str) -> Result<Self, LimiterError> {
        let mut h = self.clone();
        h.keys = Keys::new(prefix)?;
        Ok(h)
    }

    /// The key namespace.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// `standalone`, `sentinel` or `cluster`.
    pub fn topology(&self) -> &'static str {
        match &self.backend {
            Backend::Single(_) => "standalone",
            Backend::Sentinel(_) => "sentinel",
            Backend::Cluster { .. } => "cluster",
        }
    }

    /// Whether this handle talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// A client for a dedicated connection (pub/sub): behind Sentinel, to the current master, so
    /// ask again for each new connection.
    pub async fn pubsub_client(&self) -> Result<redis::Client, LimiterError> {
        match &self.backend {
            Backend::Sentinel(s) => Ok(s.master().await?.client),
            _ => Ok(self.client.clone()),
        }
    }

    /// In Cluster mode, a new connection to the cluster whose server pushes (RESP3: shard
    /// channel messages, and a note when a node's connection drops) go to `pushes`. Sharded
    /// pub/sub needs it: a shard channel is served only by the nodes of its slot's shard, which
    /// the cluster connection finds (and finds again when the slot moves).
    pub(crate) async fn cluster_push_connection(
        &self,
        pushes: tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
    ) -> Result<ClusterConnection, LimiterError> {
        let Backend::Cluster {
            nodes,
            timeouts: (connect, response),
            ..
        } = &self.backend
        else {
            return Err(LimiterError::InvalidArgument("not a cluster".into()));
        };
        ClusterClient::builder(nodes.iter().cloned())
            .connection_timeout(*connect)
            .response_timeout(*response)
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(pushes)
            .build()
            .map_err(|e| LimiterError::InvalidArgument(e.to_string()))?
            .get_async_connection()
            .await
            .map_err(LimiterError::Unavailable)
    }

    /// How many times this handle moved to another master (a Sentinel failover; always 0
    /// otherwise). Replication is asynchronous: what was written just before a move may be
    /// missing on the new master.
    pub fn failovers(&self) -> u64 {
        match &self.backend {
            Backend::Sentinel(s) => s.failovers(),
            _ => 0,
        }
    }

    async fn cluster_conn(
        client: &ClusterClient,
        cell: &OnceCell<ClusterConnection>,
    ) -> Result<ClusterConnection, LimiterError> {
        cell.get_or_try_init(|| client.get_async_connection())
            .await
            .cloned()
            .map_err(LimiterError::Unavailable)
    }

    /// Runs one Lua script: FCALL for a member of this crate's Functions library while the
    /// server takes Functions, else EVALSHA, loading it on NOSCRIPT.
    pub async fn eval<T: FromRedisValue>(
        &self,
        script: &LuaScript,
        keys: &[&str],
        args: &[&dyn ToRedisArgsDyn],
    ) -> Result<T, LimiterError> {
        let evalsha = || {
            let mut inv = script.script().prepare_invoke();
            for k in keys {
                inv.key(*k);
            }
            for a in args {
                a.push_to(&mut inv);
            }
            inv
        };
        let Some(function) = script.function().filter(|_| self.functions.on()) else {
            let inv = evalsha();
            return self
                .observed(script, "EVALSHA", self.invoke(script, &inv))
                .await;
        };
        let mut fcall = redis::cmd("FCALL");
        fcall.arg(function).arg(keys.len()).arg(keys);
        for a in args {
            a.push_to_cmd(&mut fcall);
        }
        let run = async {
            let failed = |e| LimiterError::from_script(script.name(), e);
            match self.raw(&fcall).await {
                Ok(v) => return Ok(v),
                Err(e) => match redis_functions::after_fcall(&e) {
                    After::Fail => return Err(failed(e)),
                    After::Evalsha => self.functions.turn_off(&e),
                    After::Load => match self.raw::<String>(&redis_functions::load_cmd()).await {
                        Ok(_) => return self.raw(&fcall).await.map_err(failed),
                        Err(e) if redis_functions::load_refused(&e) => self.functions.turn_off(&e),
                        Err(e) => return Err(failed(e)),
                    },
                },
            }
            self.invoke(script, &evalsha()).await
        };
        self.observed(script, "FCALL", run).await
    }

    /// Runs one script by EVALSHA (loading it on NOSCRIPT), with the arguments appended by
    /// `args` (for callers that build them with a chain of `.arg(..)`).
    pub async fn eval_with<T: FromRedisValue>(
        &self,
        script: &LuaScript,
        keys: &[&str],
        args: impl FnOnce(&mut redis::ScriptInvocation<'_>),
    ) -> Result<T, LimiterError> {
        let mut inv = script.script().prepare_invoke();
        for k in keys {
            inv.key(*k);
        }
        args(&mut inv);
        self.observed(script, "EVALSHA", self.invoke(script, &inv))
            .await
    }

    /// EVALSHA with the load fallback, on whichever backend.
    async fn invoke<T: FromRedisValue>(
        &self,
        script: &LuaScript,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T, LimiterError> {
        let failed = |e| LimiterError::from_script(script.name(), e);
        match &self.backend {
            Backend::Single(m) => inv.invoke_async(&mut m.clone()).await.map_err(failed),
            Backend::Sentinel(s) => {
                let mut m = s.master().await?.manager;
                let res = inv.invoke_async(&mut m).await;
                if let Err(e) = &res {
                    s.failed(e).await;
                }
                res.map_err(failed)
            }
            Backend::Cluster { client, conn, .. } => {
                let mut c = Self::cluster_conn(client, conn).await?;
                inv.invoke_async(&mut c).await.map_err(failed)
            }
        }
    }

    /// One script call with its client span and its report to the observer.
    async fn observed<T>(
        &self,
        script: &LuaScript,
        operation: &'static str,
        call: impl std::future::Future<Output = Result<T, LimiterError>>,
    ) -> Result<T, LimiterError> {
        // A client span per call, named by the script (OpenTelemetry database conventions); only
        // inside a trace, so background work (heartbeats, pub/sub refreshes) exports nothing.
        let span = if tracing::Span::current().is_none() {
            tracing::Span::none()
        } else {
            tracing::info_span!(
                "redis.script",
                otel.name = script.name(),
                otel.kind = "client",
                otel.status_code = Empty,
                db.system.name = "redis",
                db.operation.name = operation,
                db.query.summary = script.name(),
            )
        };
        let start = Instant::now();
        let res = call.instrument(span.clone()).await;
        let outcome = match &res {
            Ok(_) => ScriptOutcome::Ok,
            Err(e) if e.is_unavailable() => ScriptOutcome::Unavailable,
            Err(_) => ScriptOutcome::Error,
        };
        if outcome != ScriptOutcome::Ok {
            span.record("otel.status_code", "ERROR");
        }
        if let Some(observe) = OBSERVER.get() {
            observe(script.name(), start.elapsed(), outcome);
        }
        res
    }

    /// A plain command on whichever backend, its error as Redis gave it.
    async fn raw<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, RedisError> {
        match &self.backend {
            Backend::Single(m) => cmd.query_async(&mut m.clone()).await,
            Backend::Sentinel(s) => {
                let mut m = match s.master().await {
                    Ok(m) => m.manager,
                    Err(LimiterError::Unavailable(e)) => return Err(e),
                    Err(e) => {
                        return Err(RedisError::from((ErrorKind::Io, "sentinel", e.to_string())));
                    }
                };
                let res = cmd.query_async(&mut m).await;
                if let Err(e) = &res {
                    s.failed(e).await;
                }
                res
            }
            Backend::Cluster { client, conn, .. } => {
                let mut c = match Self::cluster_conn(client, conn).await {
                    Ok(c) => c,
                    Err(LimiterError::Unavailable(e)) => return Err(e),
                    Err(e) => {
                        return Err(RedisError::from((ErrorKind::Io, "cluster", e.to_string())));
                    }
                };
                cmd.query_async(&mut c).await
            }
        }
    }

    /// Runs a plain command (admin reads, tests). Errors are classified like script errors.
    pub async fn cmd<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, LimiterError> {
        self.raw(cmd).await.map_err(|e| {
            if is_availability_error(&e) {
                LimiterError::Unavailable(e)
            } else {
                LimiterError::Script {
                    script: "command",
                    source: e,
                }
            }
        })
    }

    /// Round-trip time of a PING (health checks).
    pub async fn ping(&self) -> Result<Duration, LimiterError> {
        let start = Instant::now();
        let _: String = self.cmd(&redis::cmd("PING")).await?;
        Ok(start.elapsed())
    }
}

/// Object-safe argument adapter so `eval` can take mixed argument types in one slice.
pub trait ToRedisArgsDyn: Sync {
    /// Appends this value to a script invocation.
    fn push_to(&self, inv: &mut redis::ScriptInvocation<'_>);
    /// Appends this value to a command (FCALL).
    fn push_to_cmd(&self, cmd: &mut redis::Cmd);
}

impl<T: ToRedisArgs + Sync> ToRedisArgsDyn for T {
    fn push_to(&self, inv: &mut redis::ScriptInvocation<'_>) {
        inv.arg(self);
    }

    fn push_to_cmd(&self, cmd: &mut redis::Cmd) {
        cmd.arg(self);
    }
}
