//! A fleet: `upstream-sim`, N `fleetgate serve` processes on free ports sharing one Redis (or
//! Redis Cluster) and one database, migrated by `fleetgate migrate`. Replicas can be killed,
//! terminated and started again on the same port.

use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use super::process::{Proc, TempDir};
use super::sim::Sim;
use super::{bins, wait_for};

pub const JWT_SECRET: &str = "fleet-test-jwt-secret-of-at-least-32-bytes";
pub const ADMIN_TOKEN: &str = "fleet-test-admin-token-0123456789";

/// Where the replicas' limits live.
#[derive(Debug, Clone)]
pub enum RedisTarget {
    /// `FLEETGATE_REDIS_URL`.
    Standalone(String),
    /// `FLEETGATE_REDIS_CLUSTER` (node URLs).
    Cluster(Vec<String>),
}

/// How to start a fleet.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub replicas: usize,
    pub redis: RedisTarget,
    pub database_url: String,
    /// Time the simulated LLM takes to answer, ms.
    pub llm_latency_ms: u64,
    /// Extra or overriding `FLEETGATE_*` variables.
    pub env: Vec<(String, String)>,
    /// Variables of one replica only (index, name, value), over `env`: one replica's own way
    /// to Redis, say.
    pub replica_env: Vec<(usize, String, String)>,
}

impl FleetOptions {
    pub fn new(redis: RedisTarget, database_url: &str) -> Self {
        FleetOptions {
            replicas: 3,
            redis,
            database_url: database_url.to_string(),
            llm_latency_ms: 500,
            env: Vec::new(),
            replica_env: Vec::new(),
        }
    }

    /// A variable of replica `i` only.
    pub fn replica_env(mut self, i: usize, name: &str, value: impl ToString) -> Self {
        self.replica_env
            .push((i, name.to_string(), value.to_string()));
        self
    }

    pub fn env(mut self, name: &str, value: impl ToString) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }
}

/// One replica: its port is kept across restarts.
#[derive(Debug)]
pub struct Replica {
    pub port: u16,
    proc: Option<Proc>,
    starts: usize,
}

/// A running fleet. Dropping it kills every process.
#[derive(Debug)]
pub struct Fleet {
    pub sim: Sim,
    pub replicas: Vec<Replica>,
    pub prefix: String,
    env: Vec<(String, String)>,
    replica_env: Vec<(usize, String, String)>,
    client: reqwest::Client,
    // Last: the logs outlive the processes writing them.
    dir: TempDir,
}

impl Fleet {
    /// Starts the simulator, migrates the database, starts the replicas and waits until every
    /// one is ready.
    pub async fn start(name: &str, opts: FleetOptions) -> Fleet {
        let dir = TempDir::new(&format!("fleet-{name}"));
        let sim = Sim::start(opts.llm_latency_ms, dir.path()).await;
        let prefix = testkit::unique_prefix(name);
        let mut env: Vec<(String, String)> = vec![
            ("FLEETGATE_REDIS_PREFIX".into(), prefix.clone()),
            ("FLEETGATE_DATABASE_URL".into(), opts.database_url.clone()),
            ("FLEETGATE_DATABASE_MAX_CONNECTIONS".into(), "6".into()),
            (
                "FLEETGATE_DATABASE_ACQUIRE_TIMEOUT_MS".into(),
                "3000".into(),
            ),
            ("FLEETGATE_JWT_SECRET".into(), JWT_SECRET.into()),
            ("FLEETGATE_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
            // The test client plays the load balancer: it sends X-Forwarded-For from 127.0.0.1.
            ("FLEETGATE_TRUSTED_PROXIES".into(), "127.0.0.1/32".into()),
            (
                "FLEETGATE_PUBMED_URL".into(),
                format!("{}/pubmed", sim.base),
            ),
            (
                "FLEETGATE_SEMANTIC_SCHOLAR_URL".into(),
                format!("{}/s2/graph/v1", sim.base),
            ),
            ("FLEETGATE_LLM_URL".into(), format!("{}/v1", sim.base)),
            ("FLEETGATE_LLM_MODEL".into(), "sim-model".into()),
            // Load comes from a few hundred users and IPs: the per-IP windows and the daily
            // quota are not what these tests are about.
            ("FLEETGATE_CHAT_PER_IP_PER_MIN".into(), "10000".into()),
            ("FLEETGATE_FREE_DAILY_QUERIES".into(), "100000".into()),
            ("FLEETGATE_SHUTDOWN_GRACE_MS".into(), "20000".into()),
            ("RUST_LOG".into(), "info".into()),
        ];
        match &opts.redis {
            RedisTarget::Standalone(url) => env.push(("FLEETGATE_REDIS_URL".into(), url.clone())),
            RedisTarget::Cluster(nodes) => {
                env.push(("FLEETGATE_REDIS_CLUSTER".into(), nodes.join(",")))
            }
        }
        for (k, v) in opts.env {
            env.retain(|(name, _)| *name != k);
            env.push((k, v));
        }
        let migrate = Command::new(bins::fleetgate())
            .arg("migrate")
            .env_clear()
            .envs(env.iter().cloned())
            .output()
            .await
            .expect("fleetgate migrate");
        assert!(
            migrate.status.success(),
            "fleetgate migrate failed: {}",
            String::from_utf8_lossy(&migrate.stderr)
        );
        let replicas = (0..opts.replicas)
            .map(|_| Replica {
                port: testkit::free_port(),
                proc: None,
                starts: 0,
            })
            .collect();
        let mut fleet = Fleet {
            sim,
            replicas,
            prefix,
            env,
            replica_env: opts.replica_env,
            client: super::client(),
            dir,
        };
        for i in 0..opts.replicas {
            fleet.spawn(i);
        }
        for i in 0..opts.replicas {
            fleet.wait_ready(i).await;
        }
        fleet
    }

    fn spawn(&mut self, i: usize) {
        let r = &mut self.replicas[i];
        r.starts += 1;
        let log = self
            .dir
            .path()
            .join(format!("replica-{i}-start-{}.log", r.starts));
        let mut cmd = Command::new(bins::fleetgate());
        cmd.arg("serve")
            .env_clear()
            .envs(self.env.iter().cloned())
            .env("FLEETGATE_LISTEN", format!("127.0.0.1:{}", r.port));
        for (_, k, v) in self.replica_env.iter().filter(|(at, _, _)| *at == i) {
            cmd.env(k, v);
        }
        r.proc = Some(Proc::spawn(&format!("replica-{i}"), cmd, &log));
    }

    /// Waits until `GET /readyz` of replica `i` answers 200 (60 s at most).
    pub async fn wait_ready(&mut self, i: usize) {
        let url = self.url(i, "/readyz");
        let c = self.client.clone();
        let ready = wait_for(Duration::from_secs(60), || {
            let (c, url) = (c.clone(), url.clone());
            async move {
                let r = c.get(&url).send().await.ok()?;
                (r.status() == 200).then_some(())
            }
        })
        .await;
        if ready.is_none() {
            panic!(
                "replica {i} not ready within 60 s; log:\n{}",
                self.log_tail(i)
            );
        }
    }

    /// `http://127.0.0.1:PORT{path}` of replica `i`.
    pub fn url(&self, i: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.replicas[i].port, path)
    }

    /// Base URLs of every replica (running or not).
    pub fn bases(&self) -> Vec<String> {
        (0..self.replicas.len()).map(|i| self.url(i, "")).collect()
    }

    /// SIGKILL replica `i`.
    pub async fn kill(&mut self, i: usize) {
        if let Some(p) = self.replicas[i].proc.as_mut() {
            p.kill().await;
        }
    }

    /// SIGTERM replica `i` and wait (up to `timeout`) for it to exit; returns its exit status.
    pub async fn terminate(
        &mut self,
        i: usize,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        let p = self.replicas[i].proc.as_mut()?;
        p.terminate(timeout).await
    }

    /// Starts replica `i` again (same port) and waits until it is ready.
    pub async fn restart(&mut self, i: usize) {
        if let Some(mut p) = self.replicas[i].proc.take() {
            p.kill().await;
        }
        self.spawn(i);
        self.wait_ready(i).await;
    }

    /// The process id of replica `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.replicas[i].proc.as_ref().and_then(Proc::pid)
    }

    /// Whether replica `i` runs (it did not exit, crash or restart by itself).
    pub fn running(&mut self, i: usize) -> bool {
        self.replicas[i].proc.as_mut().is_some_and(Proc::running)
    }

    /// Panics unless every replica and the simulator still run.
    pub fn assert_all_running(&mut self) {
        for i in 0..self.replicas.len() {
            assert!(self.running(i), "replica {i} exited:\n{}", self.log_tail(i));
        }
        assert!(self.sim.running(), "upstream-sim exited");
    }

    pub fn log_tail(&self, i: usize) -> String {
        self.log_tail_lines(i, 40)
    }

    /// The last `n` lines of the log of replica `i`'s current process.
    pub fn log_tail_lines(&self, i: usize, n: usize) -> String {
        self.replicas[i]
            .proc
            .as_ref()
            .map(|p| p.log_tail(n))
            .unwrap_or_default()
    }

    /// `GET /api/system-health` of replica `i` with the admin token (every component); `None`
    /// if it did not answer.
    pub async fn health(&self, i: usize) -> Option<Value> {
        let r = self
            .client
            .get(self.url(i, "/api/system-health"))
            .bearer_auth(ADMIN_TOKEN)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// `status` of the public health report of replica `i`.
    pub async fn status(&self, i: usize) -> Option<String> {
        let r = self
            .client
            .get(self.url(i, "/api/system-health"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        v["status"].as_str().map(String::from)
    }

    /// The admission figures (`components.queue`) as replica `i` reads them from Redis.
    pub async fn queue(&self, i: usize) -> Option<Value> {
        let h = self.health(i).await?;
        let q = h["components"]["queue"].clone();
        (!q.is_null()).then_some(q)
    }

    /// Waits until replica `i` reports no slot in use and nobody waiting fleet-wide, with
    /// `live` replicas registered; panics with the last figures otherwise.
    pub async fn assert_drained(&self, i: usize, live: u64, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let q = self.queue(i).await.unwrap_or_default();
            let waiting: u64 = ["chat", "research", "export"]
                .iter()
                .map(|c| q["waiting"][c].as_u64().unwrap_or(u64::MAX))
                .fold(0, u64::saturating_add);
            if q["slotsInUse"] == 0 && waiting == 0 && q["liveReplicas"] == live {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "slots or waiters left behind (or not {live} live replicas) after {timeout:?}: {q}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
