//! One `fleetgate serve` process against the machine's Redis (a unique key prefix) and a fresh
//! database, with its own `upstream-sim`: what every attack here is tried against. The process's
//! pid and log are at hand (file descriptors are counted from `/proc`, log lines read back).

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

use crate::harness::fleet::{ADMIN_TOKEN, JWT_SECRET};
use crate::harness::process::{Proc, TempDir};
use crate::harness::sim::Sim;
use crate::harness::{TestDb, bins, client, wait_for};

/// A running replica, its simulator and its database.
pub struct Replica {
    pub port: u16,
    pub sim: Sim,
    pub db: TestDb,
    pub client: reqwest::Client,
    proc: Proc,
    // Last: the log outlives the process writing it.
    dir: TempDir,
}

/// The variables every replica here gets; a test overrides or adds to them.
fn base_env(sim: &Sim, db: &TestDb, prefix: &str) -> Vec<(String, String)> {
    let v = |k: &str, v: &str| (k.to_string(), v.to_string());
    vec![
        v("FLEETGATE_REDIS_URL", &testkit::redis_url()),
        v("FLEETGATE_REDIS_PREFIX", prefix),
        v("FLEETGATE_DATABASE_URL", &db.url),
        v("FLEETGATE_DATABASE_MAX_CONNECTIONS", "6"),
        v("FLEETGATE_JWT_SECRET", JWT_SECRET),
        v("FLEETGATE_ADMIN_TOKEN", ADMIN_TOKEN),
        // The tests play the load balancer: X-Forwarded-For from 127.0.0.1 is believed.
        v("FLEETGATE_TRUSTED_PROXIES", "127.0.0.1/32"),
        v("FLEETGATE_PUBMED_URL", &format!("{}/pubmed", sim.base)),
        v(
            "FLEETGATE_SEMANTIC_SCHOLAR_URL",
            &format!("{}/s2/graph/v1", sim.base),
        ),
        v("FLEETGATE_LLM_URL", &format!("{}/v1", sim.base)),
        v("FLEETGATE_LLM_MODEL", "sim-model"),
        v("FLEETGATE_CHAT_PER_IP_PER_MIN", "1000"),
        v("FLEETGATE_EXPORT_PER_IP_PER_MIN", "1000"),
        v("FLEETGATE_FREE_DAILY_QUERIES", "1000"),
        v("FLEETGATE_UPSTREAM_TIMEOUT_MS", "5000"),
        v("FLEETGATE_LOG_FORMAT", "json"),
        v("RUST_LOG", "info"),
    ]
}

impl Replica {
    /// Starts the simulator, migrates a fresh database, starts the replica with `env` on top of
    /// the base variables and waits until it is ready.
    pub async fn start(name: &str, env: &[(&str, &str)]) -> Replica {
        Self::start_on(name, TestDb::create().await, env).await
    }

    /// The same on a given database.
    pub async fn start_on(name: &str, db: TestDb, env: &[(&str, &str)]) -> Replica {
        let dir = TempDir::new(&format!("adv-{name}"));
        let sim = Sim::start(0, dir.path()).await;
        let prefix = testkit::unique_prefix(name);
        let mut vars = base_env(&sim, &db, &prefix);
        for (k, v) in env {
            vars.retain(|(name, _)| name != k);
            vars.push((k.to_string(), v.to_string()));
        }
        let migrate = Command::new(bins::fleetgate())
            .arg("migrate")
            .env_clear()
            .envs(vars.iter().cloned())
            .output()
            .await
            .expect("fleetgate migrate");
        assert!(
            migrate.status.success(),
            "fleetgate migrate failed: {}",
            String::from_utf8_lossy(&migrate.stderr)
        );
        let port = testkit::free_port();
        let log = dir.path().join("replica.log");
        let mut cmd = Command::new(bins::fleetgate());
        cmd.arg("serve")
            .env_clear()
            .envs(vars.iter().cloned())
            .env("FLEETGATE_LISTEN", format!("127.0.0.1:{port}"));
        let proc = Proc::spawn("replica", cmd, &log);
        let r = Replica {
            port,
            sim,
            db,
            client: client(),
            proc,
            dir,
        };
        let url = r.url("/readyz");
        let c = r.client.clone();
        let ready = wait_for(Duration::from_secs(60), || {
            let (c, url) = (c.clone(), url.clone());
            async move {
                let resp = c.get(&url).send().await.ok()?;
                (resp.status() == 200).then_some(())
            }
        })
        .await;
        assert!(ready.is_some(), "replica not ready:\n{}", r.log());
        r
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid().expect("replica pid")
    }

    /// Its whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("replica.log")).unwrap_or_default()
    }

    /// SIGTERM and wait for the exit.
    pub async fn terminate(&mut self) {
        let status = self.proc.terminate(Duration::from_secs(30)).await;
        assert!(status.is_some(), "replica did not exit:\n{}", self.log());
    }

    /// Open file descriptors of the replica process (an observer outside it).
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// `POST /api/chat` as `user` from client address `ip`.
    pub async fn chat(&self, user: &str, ip: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url("/api/chat"))
            .bearer_auth(token(user))
            .header("x-forwarded-for", ip)
            .json(&body)
            .send()
            .await
            .expect("chat request")
    }

    /// A streamed chat: the status and the SSE events (name, data) until the stream ends.
    pub async fn chat_stream(&self, user: &str, body: Value) -> (u16, Vec<(String, Value)>) {
        let resp = self
            .client
            .post(self.url("/api/chat"))
            .bearer_auth(token(user))
            .header("accept", "text/event-stream")
            .json(&body)
            .send()
            .await
            .expect("chat request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, sse_events(&text))
    }

    /// `queries_used` of `user` today, read from PostgreSQL (0 without a profile).
    pub async fn queries_used(&self, user: &str) -> i32 {
        use sqlx::Row;
        let mut c = self.db.connect().await;
        let row = sqlx::query(
            "SELECT CASE WHEN usage_day = (now() AT TIME ZONE 'UTC')::date THEN queries_used ELSE 0 END AS used
             FROM user_profiles WHERE user_id = $1",
        )
        .bind(user)
        .fetch_optional(&mut c)
        .await
        .expect("read user_profiles");
        row.map(|r| r.get::<i32, _>("used")).unwrap_or(0)
    }

    /// The admin health report.
    pub async fn health(&self) -> Value {
        self.client
            .get(self.url("/api/system-health"))
            .bearer_auth(ADMIN_TOKEN)
            .header("x-forwarded-for", "192.0.2.250")
            .send()
            .await
            .expect("health")
            .json()
            .await
            .expect("health json")
    }

    /// The state of the LLM breaker as the admin report shows it.
    pub async fn llm_breaker(&self) -> String {
        let h = self.health().await;
        h["components"]["breakers"]["states"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|b| b["service"] == "llm")
            .and_then(|b| b["state"].as_str())
            .unwrap_or("closed")
            .to_string()
    }

    /// The simulator's recorded LLM requests.
    pub async fn prompts(&self) -> Vec<Value> {
        self.client
            .get(format!("{}/stats/prompts", self.sim.base))
            .send()
            .await
            .expect("sim prompts")
            .json()
            .await
            .expect("sim prompts json")
    }

    /// Requests that reached the simulated LLM.
    pub async fn llm_requests(&self) -> u64 {
        self.sim.stats().await["groups"]["llm"]["total"]
            .as_u64()
            .unwrap_or(0)
    }
}

/// A JWT for `user`, valid for an hour.
pub fn token(user: &str) -> String {
    crate::harness::load::token(user)
}

/// `event: name` / `data: json` blocks of an SSE body.
pub fn sse_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event:") {
                    name = Some(n.trim().to_string());
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            let name = name?;
            Some((name, serde_json::from_str(&data).unwrap_or(Value::Null)))
        })
        .collect()
}

/// The text of every `delta` event, in order.
pub fn deltas(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter(|(n, _)| n == "delta")
        .filter_map(|(_, d)| d["text"].as_str())
        .collect()
}

/// A chat body.
pub fn ask(message: &str, rag: bool) -> Value {
    json!({ "message": message, "useRAG": rag })
}

/// Waits until the peer closes `s` (EOF or reset) or `deadline` passes; `true` if closed.
pub async fn closed_by_peer(s: &mut TcpStream, deadline: tokio::time::Instant) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A response (a 408, say) may come first; the close follows.
            Ok(Ok(_)) => continue,
        }
    }
}

/// Sends `bytes` (ignoring a peer that has gone).
pub async fn send(s: &mut TcpStream, bytes: &[u8]) -> bool {
    s.write_all(bytes).await.is_ok()
}
