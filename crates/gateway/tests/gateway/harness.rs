//! Real processes for the gateway tests: the Python app (`tests/gateway_app/app.py`, the
//! independent observer of concurrency) and `fleetgate gateway` replicas, each test with its own
//! Redis key prefix.

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

/// A reqwest client (plain HTTP; the provider is installed for reqwest's TLS stack all the same).
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

/// A client whose connections leave from `ip` (any 127/8 address is the loopback), so the
/// gateway or nginx sees distinct client addresses.
pub fn client_from(ip: &str) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .local_address(ip.parse::<IpAddr>().ok())
        .build()
        .expect("client")
}

/// Fires `per_user` GETs for each of `users` at once (header `X-User-Id`), spread over `urls` in
/// turn; returns the statuses.
pub async fn burst(
    c: &reqwest::Client,
    urls: &[String],
    users: &[&str],
    per_user: usize,
) -> Vec<u16> {
    let mut calls = Vec::new();
    for (i, u) in users
        .iter()
        .flat_map(|u| std::iter::repeat_n(*u, per_user))
        .enumerate()
    {
        let req = c.get(&urls[i % urls.len()]).header("x-user-id", u);
        calls.push(tokio::spawn(async move {
            req.send().await.expect("burst request").status().as_u16()
        }));
    }
    let mut out = Vec::new();
    for c in calls {
        out.push(c.await.expect("burst task"));
    }
    out
}

/// Newest modification time of the files under `dir`.
fn newest(dir: &Path) -> Option<SystemTime> {
    let mut best = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let t = if p.is_dir() {
            newest(&p)
        } else {
            e.metadata().and_then(|m| m.modified()).ok()
        };
        best = best.max(t);
    }
    best
}

/// The `fleetgate` binary next to the test executable (`cargo test --workspace` builds it); built
/// here when missing or older than its sources (the gateway crate cannot depend on the api crate
/// that owns it). Not rebuilt when fresh: a plain build resolves features apart from the
/// workspace's test build and would relink it for nothing.
fn fleetgate() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        // target/debug/deps/<test> -> target/debug/fleetgate
        let bin = exe
            .parent()
            .and_then(Path::parent)
            .expect("target dir")
            .join("fleetgate");
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
        let sources = [
            "api",
            "gateway",
            "limiter-core",
            "limiter-tower",
            "breaker-store",
        ]
        .iter()
        .filter_map(|c| newest(&root.join("crates").join(c)))
        .max();
        if built.is_none() || sources > built {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-q", "-p", "api", "--bin", "fleetgate"])
                .current_dir(&root)
                .status()
                .expect("cargo build");
            assert!(status.success(), "building fleetgate failed");
        }
        bin
    })
}

/// The machine's PostgreSQL (`FLEETGATE_TEST_DATABASE_URL`).
pub fn database_url() -> String {
    std::env::var("FLEETGATE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The gateway's quota table, read directly (the test's own view of what was spent).
pub async fn quota_store() -> gateway::QuotaStore {
    gateway::QuotaStore::open(&gateway::Database {
        url: database_url(),
        max_connections: 2,
        acquire_timeout: Duration::from_secs(5),
        async_commit: false,
    })
    .await
    .expect("quota store")
}

/// Waits (up to 10 s) until `user` has spent `n` today on `route`: refunds are settled in the
/// background after the response.
pub async fn wait_used(store: &gateway::QuotaStore, route: &str, user: &str, n: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let used = store.used_today(route, user).await.expect("used_today");
        if used == n {
            return;
        }
        assert!(Instant::now() < deadline, "{user} spent {used}, not {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Kills the child when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Python app.
pub struct App {
    _proc: Proc,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl App {
    /// Starts it and waits for its `PORT` line.
    pub fn start() -> App {
        let python = std::env::var("FLEETGATE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/gateway_app/app.py");
        let mut child = Command::new(python)
            .arg(script)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 (FLEETGATE_TEST_PYTHON)");
        let mut line = String::new();
        let out = child.stdout.take().expect("stdout");
        BufReader::new(out).read_line(&mut line).expect("PORT line");
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("app said {line:?}"));
        App {
            _proc: Proc(child),
            port,
        }
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What it observed (`GET /stats`, straight to the app).
    pub async fn stats(&self) -> Value {
        client()
            .get(format!("{}/stats", self.url()))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats json")
    }

    /// From now on `/work` answers 500 (`heal: false`), or normally again (`heal: true`).
    pub async fn set_healthy(&self, heal: bool) {
        let path = if heal { "heal" } else { "break" };
        client()
            .post(format!("{}/{path}", self.url()))
            .send()
            .await
            .expect("break/heal");
    }

    /// Lets every waiting `/sse` finish.
    pub async fn release(&self) {
        client()
            .post(format!("{}/release", self.url()))
            .send()
            .await
            .expect("release");
    }
}

/// A `fleetgate gateway` process.
pub struct Gateway {
    proc: Proc,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

/// Writes `policy` to a file of its own.
fn policy_file(policy: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{}.toml", testkit::unique_prefix("gw-policy")));
    std::fs::write(&path, policy).expect("policy file");
    path
}

/// The command of a gateway on `port` with `policy`, limits under `prefix`.
pub fn command(policy: &str, prefix: &str, port: u16, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(fleetgate());
    cmd.arg("gateway")
        .env("FLEETGATE_GATEWAY_CONFIG", policy_file(policy))
        .env("FLEETGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("FLEETGATE_REDIS_URL", testkit::redis_url())
        .env("FLEETGATE_REDIS_PREFIX", prefix)
        .env_remove("FLEETGATE_CONFIG")
        .env_remove("FLEETGATE_DATABASE_URL")
        .envs(env.iter().copied());
    cmd
}

impl Gateway {
    /// Starts a replica and waits until it accepts connections.
    pub async fn start(policy: &str, prefix: &str, env: &[(&str, &str)]) -> Gateway {
        let port = testkit::free_port();
        let quiet = std::env::var_os("TEST_LOG").is_none();
        let child = command(policy, prefix, port, env)
            .stdout(Stdio::null())
            .stderr(if quiet {
                Stdio::null()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .expect("fleetgate gateway");
        let mut gw = Gateway {
            proc: Proc(child),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if let Ok(Some(status)) = gw.proc.0.try_wait() {
                panic!("gateway exited at start: {status}");
            }
            assert!(Instant::now() < deadline, "gateway did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        gw.port = port;
        gw
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = self.proc.0.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
    }

    /// Waits up to `limit` for the process to exit; whether it did.
    pub async fn exited_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.proc.0.try_wait() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// A URL on this replica.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// The `code` of a problem+json response (after checking its content type).
pub async fn problem_code(resp: reqwest::Response) -> String {
    assert_eq!(
        resp.headers()["content-type"],
        "application/problem+json",
        "{resp:?}"
    );
    let doc: Value = resp.json().await.expect("problem json");
    doc["code"].as_str().unwrap_or_default().to_string()
}

/// Reads the fleet-wide admission queue of the gateways under one prefix: a queued request makes
/// no sound at the app, so the tests read the queue's own state in Redis. Caps travel with every
/// call of the queue's scripts, so the observer is given the gateways' own.
pub struct QueueObserver(limiter_core::Admission);

impl QueueObserver {
    /// Observes the queue of `classes` under `prefix` (the default lease group), whose caps are
    /// `global` and `per_user`.
    pub async fn start(prefix: &str, classes: &[&str], global: u32, per_user: u32) -> Self {
        let redis = limiter_core::RedisHandle::new(&limiter_core::RedisConfig {
            url: testkit::redis_url(),
            prefix: prefix.into(),
            ..limiter_core::RedisConfig::default()
        })
        .expect("redis");
        let cfg = limiter_core::AdmissionConfig {
            classes: classes.iter().map(|c| (*c).to_string()).collect(),
            group: "api".into(),
            global_cap: global,
            user_cap: per_user,
            ..limiter_core::AdmissionConfig::default()
        };
        QueueObserver(
            limiter_core::Admission::start(redis, cfg)
                .await
                .expect("admission observer"),
        )
    }

    /// Waits (up to 15 s) until the queue holds `n` waiters.
    pub async fn wait_queued(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let queued = self.0.stats().await.expect("queue stats").total_queued();
            if queued == n {
                return;
            }
            assert!(Instant::now() < deadline, "{queued} queued, not {n}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Polls the app's stats until `cond` holds on them (up to 15 s); returns them.
pub async fn wait_stats(app: &App, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = app.stats().await;
        if cond(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "app never saw {what}: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The admin token the admin tests configure (`FLEETGATE_ADMIN_TOKEN`).
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";
/// The gateway's default admin path.
pub const ADMIN: &str = "/api/system-health";

/// The environment giving a replica [`ADMIN_TOKEN`].
pub fn admin_env() -> [(&'static str, &'static str); 1] {
    [("FLEETGATE_ADMIN_TOKEN", ADMIN_TOKEN)]
}

/// POSTs an admin action to `gw` with the admin token.
pub async fn admin_post(gw: &Gateway, body: Value) -> reqwest::Response {
    client()
        .post(gw.url(ADMIN))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("admin POST")
}

/// POSTs an admin action that must succeed (200); its answer.
pub async fn admin_ok(gw: &Gateway, body: Value) -> Value {
    let r = admin_post(gw, body.clone()).await;
    assert_eq!(r.status(), 200, "{body}");
    r.json().await.expect("admin answer")
}

/// The runtime limits in force on `gw` (its admin GET).
pub async fn limits(gw: &Gateway) -> Value {
    let r = client()
        .get(gw.url(ADMIN))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("admin GET");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("admin GET json");
    v["limits"].clone()
}

/// Polls every replica's GET every 50 ms until all show `version`; the time that took.
pub async fn wait_version(gws: &[&Gateway], version: u64, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut pending: Vec<&Gateway> = gws.to_vec();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for g in pending {
            if limits(g).await["version"].as_u64() != Some(version) {
                still.push(g);
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < limit,
            "{} replica(s) still without version {version} after {:?}",
            pending.len(),
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}
