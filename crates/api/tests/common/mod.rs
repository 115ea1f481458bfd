//! Shared test support: a fresh PostgreSQL database per test, a replica served in-process on port
//! 0, a fake assistant that counts what reaches it (the independent observer), and token minting.
#![allow(clippy::unwrap_used, dead_code)]

pub mod rag_fleet;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use api::AppState;
use api::config::Config;
use api::config::secret::Secret;
use api::limits::quota::QuotaStore;
use chat::{Assistant, AssistantError, AssistantFuture, ChatAnswer, ChatContext, ChatRequest};
use limiter_core::RedisHandle;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::{Notify, oneshot};

pub const JWT_SECRET: &str = "test-jwt-secret-at-least-32-bytes-long!!";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        api::telemetry::init_for_tests();
    });
}

pub use testkit::postgres::TestDb;

/// A configuration for tests: unique Redis prefix, the given database, known secrets.
pub fn config(db: &TestDb, prefix: &str) -> Config {
    let mut c = Config::default();
    c.redis.url = Secret::new(testkit::redis_url());
    c.redis.prefix = prefix.to_string();
    c.database.url = Secret::new(db.url.clone());
    c.database.max_connections = 4;
    c.auth.jwt_secret = Some(Secret::new(JWT_SECRET));
    c.auth.admin_token = Some(Secret::new(ADMIN_TOKEN));
    c.server.shutdown_grace_ms = 10_000;
    c
}

/// Migrates the database of `cfg`.
pub async fn migrate(cfg: &Config) -> QuotaStore {
    let pool = PgPoolOptions::new()
        .max_connections(cfg.database.max_connections)
        .connect(cfg.database.url.expose())
        .await
        .unwrap();
    let store = QuotaStore::with_pool(pool, cfg);
    store.migrate().await.unwrap();
    store
}

/// Seconds from now to the next 00:00 UTC, from this machine's clock (independently of the code
/// under test). Tests that use it start clear of midnight ([`TestDb::create`] waits).
pub fn secs_to_next_utc_midnight() -> f64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    86_400.0 - now.rem_euclid(86_400.0)
}

/// Asserts that a `Retry-After` of `secs` points at the next UTC midnight (within 2 s).
pub fn assert_until_midnight(secs: f64) {
    let expected = secs_to_next_utc_midnight();
    assert!(
        (secs - expected).abs() <= 2.0,
        "Retry-After {secs} s, but the next UTC midnight is {expected:.1} s away"
    );
}

pub fn token(user: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    api::auth::jwt::sign_hs256(
        JWT_SECRET.as_bytes(),
        &serde_json::json!({"sub": user, "exp": exp, "aud": "authenticated"}),
    )
}

/// How the fake pipeline behaves.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answer after the hold.
    Answer,
    /// Fail as an upstream would (503, refundable).
    UpstreamDown,
    /// Panic inside the handler.
    Panic,
}

/// The independent observer: counts calls in flight and the most ever seen at once. Each call
/// holds until `release()` (or the hold elapses, or `target` calls are in flight at once).
pub struct FakeAssistant {
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    pub calls: AtomicU64,
    pub hold: Duration,
    /// Once this many are in flight at once, every holder is let go.
    pub target: usize,
    pub reached: AtomicBool,
    pub released: AtomicBool,
    pub wake: Notify,
    pub entered: Notify,
    pub mode: Mode,
}

impl FakeAssistant {
    pub fn new(hold: Duration, target: usize, mode: Mode) -> Arc<Self> {
        Arc::new(FakeAssistant {
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            calls: AtomicU64::new(0),
            hold,
            target,
            reached: AtomicBool::new(false),
            released: AtomicBool::new(false),
            wake: Notify::new(),
            entered: Notify::new(),
            mode,
        })
    }

    pub fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
        self.wake.notify_waiters();
    }

    pub fn max(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// Waits until `n` calls are in flight at once (or the timeout).
    pub async fn wait_in_flight(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let entered = self.entered.notified();
            tokio::pin!(entered);
            entered.as_mut().enable();
            if self.in_flight.load(Ordering::SeqCst) >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, entered).await.is_err() {
                return false;
            }
        }
    }
}

impl Assistant for FakeAssistant {
    fn answer(&self, req: ChatRequest, _ctx: ChatContext) -> AssistantFuture<'_, ChatAnswer> {
        Box::pin(async move {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            self.calls.fetch_add(1, Ordering::SeqCst);
            if now >= self.target {
                self.reached.store(true, Ordering::SeqCst);
                self.wake.notify_waiters();
            }
            self.entered.notify_waiters();
            let deadline = tokio::time::Instant::now() + self.hold;
            loop {
                let woken = self.wake.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                if self.released.load(Ordering::SeqCst) || self.reached.load(Ordering::SeqCst) {
                    break;
                }
                if tokio::time::timeout_at(deadline, woken).await.is_err() {
                    break;
                }
            }
            // Once the target was reached, calls still overlap a little so the cap is exercised.
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            match self.mode {
                Mode::Answer => Ok(ChatAnswer {
                    answer: format!("answer to {}", req.message),
                    citations: vec![],
                    conversation_id: req.conversation_id.unwrap_or_else(uuid::Uuid::new_v4),
                }),
                Mode::UpstreamDown => Err(AssistantError::UpstreamUnavailable {
                    retry_after: Duration::from_secs(7),
                    cause: "fake upstream down: secret internal detail".into(),
                }),
                Mode::Panic => panic!("fake pipeline panic: secret internal detail"),
            }
        })
    }
}

/// A replica served in-process.
pub struct Server {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub async fn start(cfg: Config, pipeline: Arc<dyn Assistant>) -> Server {
        init();
        let state = AppState::new(cfg, pipeline).await.unwrap();
        Self::start_state(state).await
    }

    pub async fn start_state(state: AppState) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(api::run(listener, state.clone(), async {
            let _ = rx.await;
        }));
        Server {
            addr,
            state,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The SIGTERM equivalent: resolves the shutdown future.
    pub fn signal_shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// Signals shutdown and waits for `run` to return.
    pub async fn shutdown(&mut self) {
        self.signal_shutdown();
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

pub fn client() -> reqwest::Client {
    init();
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

pub async fn redis(prefix: &str) -> RedisHandle {
    let cfg = limiter_core::RedisConfig {
        url: testkit::redis_url(),
        prefix: prefix.to_string(),
        ..Default::default()
    };
    RedisHandle::new(&cfg).unwrap()
}

/// Every key under `prefix` and how many members/fields it holds (sorted sets: live or not).
pub async fn keys_with_members(r: &RedisHandle, prefix: &str) -> Vec<(String, i64)> {
    let keys: Vec<String> = r
        .cmd(redis::cmd("KEYS").arg(format!("{prefix}:*")))
        .await
        .unwrap();
    let mut out = Vec::new();
    for k in keys {
        let t: String = r.cmd(redis::cmd("TYPE").arg(&k)).await.unwrap();
        let n: i64 = match t.as_str() {
            "zset" => r.cmd(redis::cmd("ZCARD").arg(&k)).await.unwrap(),
            "hash" => r.cmd(redis::cmd("HLEN").arg(&k)).await.unwrap(),
            "list" => r.cmd(redis::cmd("LLEN").arg(&k)).await.unwrap(),
            "set" => r.cmd(redis::cmd("SCARD").arg(&k)).await.unwrap(),
            _ => 1,
        };
        out.push((k, n));
    }
    out
}

pub async fn chat(c: &reqwest::Client, s: &Server, user: &str, msg: &str) -> reqwest::Response {
    c.post(s.url("/api/chat"))
        .bearer_auth(token(user))
        .json(&serde_json::json!({"message": msg, "useRAG": false}))
        .send()
        .await
        .unwrap()
}

pub async fn problem_code(resp: reqwest::Response) -> String {
    let v: serde_json::Value = resp.json().await.unwrap();
    v["code"].as_str().unwrap_or_default().to_string()
}

/// One replica with the real RAG pipeline against the simulator `sim`.
pub async fn rag_replica(sim: &upstream_sim::RunningSim, mut cfg: Config) -> Server {
    init();
    cfg.upstream.pubmed_url = sim.pubmed_url();
    cfg.upstream.semantic_scholar_url = sim.s2_url();
    cfg.upstream.llm_url = sim.llm_url();
    cfg.upstream.timeout_ms = 5_000;
    let quota = migrate(&cfg).await;
    let redis = redis(&cfg.redis.prefix).await;
    let breakers = api::admin::breakers::build(&cfg, redis.clone()).unwrap();
    let pipeline =
        api::assistant::rag(&cfg, &redis, breakers.clone(), quota.pool().clone()).unwrap();
    let state = AppState::with_parts(cfg, Arc::new(pipeline), redis, quota)
        .await
        .unwrap()
        .with_breakers(Arc::new(breakers));
    Server::start_state(state).await
}

/// Removes the lease of the only slot in use from Redis, as an expiry or a restart without
/// persistence would; returns its id.
pub async fn forget_the_only_lease(r: &limiter_core::RedisHandle) -> String {
    let global = r.keys().lease_scope("api", b"global");
    let holders = r.keys().group_key("api", "holders");
    let leases: Vec<String> = r
        .cmd(redis::cmd("ZRANGE").arg(&global).arg(0).arg(-1))
        .await
        .unwrap();
    assert_eq!(leases.len(), 1);
    let lost = leases[0].clone();
    let user_key: String = r
        .cmd(redis::cmd("HGET").arg(&holders).arg(&lost))
        .await
        .unwrap();
    for (key, cmd) in [(&global, "ZREM"), (&user_key, "ZREM"), (&holders, "HDEL")] {
        let _: i64 = r.cmd(redis::cmd(cmd).arg(key).arg(&lost)).await.unwrap();
    }
    lost
}
