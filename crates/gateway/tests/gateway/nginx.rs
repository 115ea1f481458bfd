//! Three gateway replicas behind a real nginx (round robin, `X-Forwarded-For`, no buffering,
//! WebSocket upgrades), the Python app behind them, limits in the machine's Redis and quotas in
//! its PostgreSQL. Every check goes through nginx, as clients of a deployed fleet would.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::harness::{self, App, Gateway, burst, client_from, problem_code};
use crate::{ws_open, ws_read, ws_send};

/// nginx in the foreground, one process, its files in a directory of its own.
struct Nginx {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nginx_binary() -> PathBuf {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"] {
        if std::path::Path::new(p).exists() {
            return p.into();
        }
    }
    panic!(
        "nginx is not installed: this test needs a real nginx in front of the gateways \
         (scripts/test installs it with apt-get: nginx-light or nginx)"
    );
}

impl Nginx {
    /// Starts nginx round-robining to `replicas`; waits until it accepts connections.
    async fn start(replicas: &[&Gateway]) -> Nginx {
        let bin = nginx_binary();
        let dir = std::env::temp_dir().join(testkit::unique_prefix("gw-nginx"));
        std::fs::create_dir_all(&dir).unwrap();
        let port = testkit::free_port();
        let servers: String = replicas
            .iter()
            .map(|g| format!("    server 127.0.0.1:{} max_fails=0;\n", g.port))
            .collect();
        let d = dir.display();
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 512; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  map $http_upgrade $connection_upgrade {{
    default upgrade;
    ''      '';
  }}
  upstream gateways {{
{servers}  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://gateways;
      proxy_http_version 1.1;
      proxy_set_header Host $host;
      # nginx is the edge: it states the client's address, whatever the client claimed.
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      # Server-sent events pass through as they are written.
      proxy_buffering off;
      proxy_read_timeout 60s;
    }}
  }}
}}
"#
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new(&bin)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let mut n = Nginx { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if let Ok(Some(status)) = n.child.try_wait() {
                panic!("nginx exited at start: {status}");
            }
            assert!(Instant::now() < deadline, "nginx did not listen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        n.port = port;
        n
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

#[tokio::test]
async fn three_replicas_behind_nginx_enforce_every_limit_together() {
    // A daily quota counted across midnight would see the day reset under it.
    tokio::time::sleep(testkit::wait_clear_of_utc_midnight(Duration::from_secs(60))).await;
    let started = Instant::now();
    let app = App::start();
    let policy = format!(
        r#"upstream = "{}"
[identity]
header = "X-User-Id"
[admission]
classes = ["chat", "research", "export"]
global_concurrency = 4
per_user_concurrency = 2
queue_timeout_ms = 30000
[[routes]]
path = "/sse"
class = "chat"
[[routes]]
path = "/ws"
class = "chat"
[[routes]]
method = "POST"
path = "/work"
class = "export"
[[routes]]
method = "GET"
path = "/work"
class = "chat"
[[routes]]
method = "PUT"
path = "/work"
per_ip_per_min = 3
[[routes]]
method = "PATCH"
path = "/work"
daily_quota = 3
"#,
        app.url()
    );
    let prefix = testkit::unique_prefix("gw-nginx");
    let db = harness::database_url();
    let env = [
        ("FLEETGATE_DATABASE_URL", db.as_str()),
        ("FLEETGATE_TRUSTED_PROXIES", "127.0.0.1/32"),
    ];
    let (a, b, c) = tokio::join!(
        Gateway::start(&policy, &prefix, &env),
        Gateway::start(&policy, &prefix, &env),
        Gateway::start(&policy, &prefix, &env),
    );
    let nginx = Nginx::start(&[&a, &b, &c]).await;
    let http = client_from("127.0.0.1");

    // Per-user cap: one user, six at once over three replicas: two run at a time.
    let statuses = burst(&http, &[nginx.url("/work?ms=300")], &["solo"], 6).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let s = app.stats().await;
    assert_eq!(s["max_per_user"]["solo"], 2, "{s}");
    assert_eq!(s["max_in_flight"], 2, "{s}");

    // Global cap: six users, two each: four run at once fleet-wide, reached and never exceeded.
    let users = ["u1", "u2", "u3", "u4", "u5", "u6"];
    let statuses = burst(&http, &[nginx.url("/work?ms=300")], &users, 2).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let s = app.stats().await;
    assert_eq!(
        s["max_in_flight"], 4,
        "global cap of 4 over 3 replicas: {s}"
    );
    assert_eq!(s["served"], 18, "{s}");

    // Per-address window: nginx states each client's address, the gateways believe it.
    let ann = client_from("127.0.0.2");
    for i in 0..3 {
        let r = ann.put(nginx.url("/work?ms=0")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["ratelimit-policy"], "\"route4-ip\";q=3;w=60");
        let rl = r.headers()["ratelimit"].to_str().unwrap().to_string();
        assert!(rl.contains(&format!("r={}", 2 - i)), "{rl}");
    }
    let r = ann.put(nginx.url("/work?ms=0")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.headers()["ratelimit"].to_str().unwrap().contains("r=0"));
    assert_eq!(problem_code(r).await, "rate_limited");
    // Another address has a window of its own, even though nginx is the gateways' only peer;
    // and what a client claims in X-Forwarded-For changes nothing.
    let bob = client_from("127.0.0.3");
    let r = bob.put(nginx.url("/work?ms=0")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = ann
        .put(nginx.url("/work?ms=0"))
        .header("x-forwarded-for", "198.51.100.1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        429,
        "a claimed address does not escape the window"
    );

    // Daily quota: an app failure is refunded, three served, the fourth refused.
    let store = harness::quota_store().await;
    let quser = testkit::unique_prefix("nginx-quota");
    let spend = |query: &str| {
        http.patch(nginx.url(&format!("/work?ms=0{query}")))
            .header("x-user-id", &quser)
            .send()
    };
    assert_eq!(spend("&status=500").await.unwrap().status(), 500);
    harness::wait_used(&store, "PATCH /work", &quser, 0).await;
    for i in 1..=3 {
        // Read to the end: a client gone before the first body byte is not charged.
        assert_eq!(spend("").await.unwrap().text().await.unwrap(), "ok");
        harness::wait_used(&store, "PATCH /work", &quser, i).await;
    }
    let r = spend("").await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(problem_code(r).await, "quota_exhausted");

    // SSE: the first event arrives through nginx while the app still holds the request.
    let resp = http
        .get(nginx.url("/sse"))
        .header("x-user-id", "reader")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .expect("the first event before the app ends the response")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("data: first"));
    assert_eq!(app.stats().await["in_flight"], 1, "the app still holds it");
    app.release().await;
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert!(String::from_utf8_lossy(&rest).contains("data: last"));
    harness::wait_stats(&app, "the stream end", |s| s["in_flight"] == 0).await;

    // WebSockets hold slots: four sockets take the whole fleet-wide cap.
    let mut sockets = Vec::new();
    for u in ["w1", "w2", "w3", "w4"] {
        let mut ws = ws_open(nginx.port, "/ws", u).await;
        ws_send(&mut ws, 0x1, b"hi").await;
        assert_eq!(ws_read(&mut ws).await, (0x1, b"hi".to_vec()));
        sockets.push(ws);
    }
    harness::wait_stats(&app, "four sockets", |s| s["in_flight"] == 4).await;
    // Strict priority: exports queue first, chats after; the freed slots go to the chats first.
    let observer =
        harness::QueueObserver::start(&prefix, &["chat", "research", "export"], 4, 2).await;
    let mut waiting = Vec::new();
    for (n, (user, export)) in [("e1", true), ("e2", true), ("c1", false), ("c2", false)]
        .into_iter()
        .enumerate()
    {
        let url = nginx.url("/work?ms=50");
        let req = if export {
            http.post(url)
        } else {
            http.get(url)
        };
        let req = req.header("x-user-id", user);
        waiting.push(tokio::spawn(async move {
            req.send().await.unwrap().status().as_u16()
        }));
        observer.wait_queued(n as u64 + 1).await;
    }
    assert_eq!(
        app.stats().await["in_flight"],
        4,
        "nobody ran beside the sockets"
    );
    // One socket closes: its slot passes from waiter to waiter, chats first.
    let mut first = sockets.remove(0);
    ws_send(&mut first, 0x8, &1000u16.to_be_bytes()).await;
    assert_eq!(ws_read(&mut first).await.0, 0x8);
    for w in waiting {
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(20), w)
                .await
                .unwrap()
                .unwrap(),
            200
        );
    }
    let s = app.stats().await;
    let order: Vec<_> = s["order"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .take(4)
        .rev()
        .collect();
    assert_eq!(order, ["c1", "c2", "e1", "e2"], "{s}");
    for mut ws in sockets {
        ws_send(&mut ws, 0x8, &1000u16.to_be_bytes()).await;
        assert_eq!(ws_read(&mut ws).await.0, 0x8);
    }
    let s = harness::wait_stats(&app, "every socket closed", |s| s["in_flight"] == 0).await;
    assert_eq!(s["max_in_flight"], 4, "the global cap held throughout: {s}");
    for (u, n) in s["max_per_user"].as_object().unwrap() {
        assert!(n.as_u64().unwrap() <= 2, "{u}: {s}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}
