//! Test support shared by every crate's tests: Redis servers the test owns (started on free
//! loopback ports and stopped by pid), a 3-master Redis Cluster, and unique key prefixes so tests
//! run in parallel against the machine's Redis without seeing each other's keys.
//! [`proxy::TcpProxy`] forwards to a Redis, can be cut, and counts what went through it.
//! [`postgres::TestDb`] is a fresh PostgreSQL database for one test.
//!
//! Everything but the proxy is synchronous; all of it panics on setup failure: it runs only in tests, where a
//! setup failure should stop the test with a clear message.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

pub mod postgres;
pub mod proxy;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// URL of the machine's shared Redis (`FLEETGATE_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`).
pub fn redis_url() -> String {
    std::env::var("FLEETGATE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A key prefix no other test (or run) uses.
pub fn unique_prefix(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "t-{name}-{}-{}-{:06x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>() & 0xff_ffff
    )
}

/// How long a test must wait before it starts so that the next UTC midnight is more than `span`
/// away (zero almost always). Daily quotas reset at 00:00 UTC by the database clock, which is this
/// machine's: a test that counts queries left must not run across that reset.
pub fn wait_clear_of_utc_midnight(span: Duration) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    wait_before_midnight(now, span)
}

fn wait_before_midnight(since_epoch: Duration, span: Duration) -> Duration {
    const DAY_MS: u64 = 86_400_000;
    let into_day = u64::try_from(since_epoch.as_millis() % u128::from(DAY_MS)).unwrap();
    let to_midnight = Duration::from_millis(DAY_MS - into_day);
    if to_midnight > span {
        Duration::ZERO
    } else {
        // Past midnight by a second, so the database agrees the new day has begun.
        to_midnight + Duration::from_secs(1)
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; the window for a race is tiny).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free port whose cluster bus port (+10000) is free too.
fn free_cluster_port() -> u16 {
    loop {
        let p = free_port();
        if p < 55_000 && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "fleetgate-{tag}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Sends one inline command and returns the raw reply (enough for PING and INFO-style checks).
fn raw_command(port: u16, cmd: &str) -> Option<String> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
            .ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(format!("{cmd}\r\n").as_bytes()).ok()?;
    let mut buf = vec![0u8; 8192];
    let n = s.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// A redis-server process owned by the test. Killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a fresh, non-persistent redis-server on a free port and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(free_port(), &[])
    }

    /// Starts one with extra command-line settings (e.g. `--rename-command FUNCTION ""`).
    pub fn start_with_args(extra: &[&str]) -> Self {
        Self::start_with(free_port(), extra)
    }

    fn start_with(port: u16, extra: &[&str]) -> Self {
        let mut s = RedisServer {
            port,
            dir: temp_dir(&format!("redis-{port}")),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if raw_command(self.port, "PING").is_some_and(|r| r.starts_with("+PONG")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL, like a crash) and waits for the process to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes it (SIGSTOP): connections stay open and commands hang, as with a Redis host that
    /// stalls. [`RedisServer::resume`] lets it go on.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill {sig} redis-server");
        }
    }

    /// Starts it again on the same port, empty (it keeps nothing on disk).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Runs an inline command on it (e.g. `SCRIPT FLUSH`) and returns the raw reply.
    pub fn command(&self, cmd: &str) -> String {
        raw_command(self.port, cmd).unwrap_or_default()
    }

    /// Script calls (`EVALSHA` and `FCALL`) it ran so far, from `INFO commandstats`.
    pub fn script_calls(&self) -> u64 {
        self.command("INFO commandstats")
            .lines()
            .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_fcall:"))
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of 3 masters (no replicas) owned by the test.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts 3 cluster-enabled servers, joins them with `redis-cli --cluster create` and waits
    /// until every node reports `cluster_state:ok`.
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_with(
                    free_cluster_port(),
                    &["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"],
                )
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = nodes.iter().all(|n| {
                raw_command(n.port, "CLUSTER INFO").is_some_and(|r| r.contains("cluster_state:ok"))
            });
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "cluster did not become ok");
            std::thread::sleep(Duration::from_millis(100));
        }
        RedisCluster { nodes }
    }

    /// Node URLs, as `FLEETGATE_REDIS_CLUSTER` takes them.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_only_within_the_span_before_midnight() {
        let day = Duration::from_secs(86_400);
        let span = Duration::from_secs(120);
        let at = |secs_into_day: u64| {
            wait_before_midnight(day * 20_000 + Duration::from_secs(secs_into_day), span)
        };
        assert_eq!(at(0), Duration::ZERO);
        assert_eq!(at(43_200), Duration::ZERO);
        assert_eq!(at(86_400 - 121), Duration::ZERO);
        assert_eq!(at(86_400 - 120), Duration::from_secs(121));
        assert_eq!(at(86_399), Duration::from_secs(2));
    }
}
