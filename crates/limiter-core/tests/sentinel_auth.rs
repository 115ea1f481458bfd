//! Sentinels that require a password (`requirepass` in their own configuration): the handle asks
//! them with `RedisConfig::sentinel_password` and reaches the master they name; without it they
//! refuse to say, and the handle reports Redis unavailable rather than guessing.
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use limiter_core::{RedisConfig, RedisHandle};

const PASSWORD: &str = "sentinel pass/with:odd@chars";

/// A sentinel process, killed on drop.
struct SentinelProc(Child, std::path::PathBuf);

impl Drop for SentinelProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn start_sentinel(master_port: u16) -> (SentinelProc, u16) {
    let port = testkit::free_port();
    let dir = std::env::temp_dir().join(format!("fg-sentinel-auth-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nrequirepass \"{PASSWORD}\"\n\
             sentinel monitor mymaster 127.0.0.1 {master_port} 1\n",
            dir.display()
        ),
    )
    .unwrap();
    let child = Command::new("redis-server")
        .arg(&conf)
        .arg("--sentinel")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (sentinel mode) must be installed");
    (SentinelProc(child, dir), port)
}

fn handle(sentinel_port: u16, password: Option<&str>) -> RedisHandle {
    RedisHandle::new(&RedisConfig {
        sentinels: vec![format!("127.0.0.1:{sentinel_port}")],
        sentinel_password: password.map(str::to_string),
        prefix: testkit::unique_prefix("sentinel-auth"),
        ..RedisConfig::default()
    })
    .unwrap()
}

async fn ping(h: &RedisHandle) -> Result<String, limiter_core::LimiterError> {
    h.cmd(&redis::cmd("PING")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_with_a_password_are_asked_with_it() {
    let master = testkit::RedisServer::start();
    let (_sentinel, port) = start_sentinel(master.port());
    let with = handle(port, Some(PASSWORD));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match ping(&with).await {
            Ok(pong) => {
                assert_eq!(pong, "PONG");
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "never reached the master: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let without = handle(port, None);
    let refused = ping(&without).await.unwrap_err();
    assert!(refused.is_unavailable(), "{refused}");
    let wrong = handle(port, Some("not-the-password"));
    assert!(ping(&wrong).await.unwrap_err().is_unavailable());
}
