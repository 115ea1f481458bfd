//! A Redis master, one replica and three sentinels watching them (quorum 2), on free ports,
//! owned by the test (killed on drop). The sentinels judge a silent master down after one second.

use std::time::Duration;

use tokio::process::Command;

use super::process::{Proc, TempDir};
use super::wait_for;

/// The master's name at the sentinels (the service's default).
pub const MASTER: &str = "mymaster";

/// One redis-server of the set.
#[derive(Debug)]
struct Server {
    port: u16,
    proc: Option<Proc>,
}

#[derive(Debug)]
pub struct SentinelSet {
    /// The master at the start, then the replica.
    servers: Vec<Server>,
    sentinels: Vec<Server>,
    // Last: the logs outlive the processes writing them.
    dir: TempDir,
}

/// Runs one command against `127.0.0.1:port`; `None` if it could not be reached in time.
pub async fn query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> Option<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    tokio::time::timeout(Duration::from_secs(2), async {
        let mut c = client.get_multiplexed_async_connection().await.ok()?;
        cmd.query_async(&mut c).await.ok()
    })
    .await
    .ok()
    .flatten()
}

impl SentinelSet {
    /// Starts them and waits until the replica is in sync and every sentinel knows the replica
    /// and the two other sentinels (a failover needs their votes).
    pub async fn start(name: &str) -> SentinelSet {
        let dir = TempDir::new(&format!("sentinel-{name}"));
        let master = testkit::free_port();
        let replica = testkit::free_port();
        let mut set = SentinelSet {
            servers: Vec::new(),
            sentinels: Vec::new(),
            dir,
        };
        for (i, port) in [master, replica].into_iter().enumerate() {
            let data = set.dir.path().join(format!("redis-{i}"));
            std::fs::create_dir_all(&data).expect("redis dir");
            let mut cmd = Command::new("redis-server");
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&data);
            if i == 1 {
                cmd.args(["--replicaof", "127.0.0.1", &master.to_string()]);
            }
            let log = set.dir.path().join(format!("redis-{i}.log"));
            set.servers.push(Server {
                port,
                proc: Some(Proc::spawn(&format!("redis-{i}"), cmd, &log)),
            });
        }
        for i in 0..3 {
            let port = testkit::free_port();
            let conf = set.dir.path().join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {MASTER} 127.0.0.1 {master} 2\n\
                     sentinel down-after-milliseconds {MASTER} 1000\n\
                     sentinel failover-timeout {MASTER} 10000\n\
                     sentinel parallel-syncs {MASTER} 1\n",
                    dir = set.dir.path().display()
                ),
            )
            .expect("sentinel config");
            let mut cmd = Command::new("redis-server");
            cmd.arg(&conf).arg("--sentinel");
            let log = set.dir.path().join(format!("sentinel-{i}.log"));
            set.sentinels.push(Server {
                port,
                proc: Some(Proc::spawn(&format!("sentinel-{i}"), cmd, &log)),
            });
        }
        let ports: Vec<u16> = set.sentinels.iter().map(|s| s.port).collect();
        let ready = wait_for(Duration::from_secs(30), || {
            let ports = ports.clone();
            async move {
                let info: String = query(replica, redis::cmd("INFO").arg("replication")).await?;
                if !info.contains("master_link_status:up") {
                    return None;
                }
                for p in ports {
                    let replicas: Vec<redis::Value> =
                        query(p, redis::cmd("SENTINEL").arg("replicas").arg(MASTER)).await?;
                    let others: Vec<redis::Value> =
                        query(p, redis::cmd("SENTINEL").arg("sentinels").arg(MASTER)).await?;
                    if replicas.is_empty() || others.len() < 2 {
                        return None;
                    }
                }
                Some(())
            }
        })
        .await;
        assert!(ready.is_some(), "sentinels not ready within 30 s");
        set
    }

    /// `FLEETGATE_REDIS_SENTINELS`.
    pub fn addrs(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The master's port as the first sentinel that answers names it.
    pub async fn master_port(&self) -> Option<u16> {
        for s in &self.sentinels {
            let named: Option<(String, u16)> = query(
                s.port,
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(MASTER),
            )
            .await;
            if let Some((_, port)) = named {
                return Some(port);
            }
        }
        None
    }

    /// The port of the server that is master at the start.
    pub fn first_master(&self) -> u16 {
        self.servers[0].port
    }

    /// The port of the server that is replica at the start.
    pub fn first_replica(&self) -> u16 {
        self.servers[1].port
    }

    /// `SENTINEL FAILOVER`: the replica is promoted without waiting for the master to be judged
    /// down (and the master, alive, becomes its replica).
    pub async fn failover(&self) {
        let done = wait_for(Duration::from_secs(10), || async {
            let r: String = query(
                self.sentinels[0].port,
                redis::cmd("SENTINEL").arg("failover").arg(MASTER),
            )
            .await?;
            (r == "OK").then_some(())
        })
        .await;
        assert!(done.is_some(), "SENTINEL FAILOVER refused for 10 s");
    }

    /// SIGKILL the server that is master at the start.
    pub async fn kill_first_master(&mut self) {
        if let Some(p) = self.servers[0].proc.as_mut() {
            p.kill().await;
        }
    }

    /// Waits until the sentinels name `port` as master and it says it is one; the time it took.
    pub async fn wait_master(&self, port: u16, timeout: Duration) -> Option<Duration> {
        let start = tokio::time::Instant::now();
        wait_for(timeout, || async move {
            if self.master_port().await? != port {
                return None;
            }
            let role: Vec<redis::Value> = query(port, &redis::cmd("ROLE")).await?;
            match role.first() {
                Some(redis::Value::BulkString(r)) if r.as_slice() == b"master" => Some(()),
                _ => None,
            }
        })
        .await
        .map(|()| start.elapsed())
    }

    /// Directory of the logs.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}
