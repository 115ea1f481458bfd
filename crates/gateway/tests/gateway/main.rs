//! `fleetgate gateway` in front of an app that is not written in Rust (a Starlette app on uvicorn
//! that counts its own in-flight requests), every process real, limits in the machine's Redis.

#![allow(clippy::unwrap_used)]

mod admin_throttle;
mod harness;
mod jwks;
mod nginx;
mod runtime_limits;

use std::time::Duration;

use futures_util::StreamExt;
use harness::{App, Gateway, burst, client, problem_code};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A policy for `app` with `routes` (TOML appended after the identity and admission tables).
fn policy(app: &App, global: u32, per_user: u32, routes: &str) -> String {
    format!(
        r#"upstream = "{}"
[identity]
header = "X-User-Id"
[admission]
classes = ["chat", "export"]
global_concurrency = {global}
per_user_concurrency = {per_user}
queue_timeout_ms = 30000
{routes}"#,
        app.url()
    )
}

#[tokio::test]
async fn caps_hold_across_two_replicas_and_are_reached() {
    let app = App::start();
    let p = policy(
        &app,
        4,
        2,
        "[[routes]]\npath = \"/work\"\nclass = \"chat\"\n",
    );
    let prefix = testkit::unique_prefix("gw-caps");
    let a = Gateway::start(&p, &prefix, &[]).await;
    let b = Gateway::start(&p, &prefix, &[]).await;
    // One user, six at once: two run, the rest wait their turn.
    let urls = [a.url("/work?ms=400"), b.url("/work?ms=400")];
    let statuses = burst(&client(), &urls, &["solo"], 6).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let s = app.stats().await;
    assert_eq!(s["max_per_user"]["solo"], 2, "{s}");
    assert_eq!(s["max_in_flight"], 2, "{s}");
    // Six users, two each: the fleet-wide cap of four binds.
    let users = ["u1", "u2", "u3", "u4", "u5", "u6"];
    let statuses = burst(&client(), &urls, &users, 2).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let s = app.stats().await;
    assert_eq!(
        s["max_in_flight"], 4,
        "global cap of 4 across two replicas: {s}"
    );
    for u in users {
        assert!(s["max_per_user"][u].as_u64().unwrap() <= 2, "{s}");
    }
    assert_eq!(s["served"], 18, "{s}");
}

/// `per_user_concurrency = 0`: no per-user cap, so one user alone fills the fleet-wide cap, and
/// never more than it, across two replicas.
#[tokio::test]
async fn without_a_per_user_cap_one_user_fills_the_global_cap() {
    let app = App::start();
    let p = policy(
        &app,
        4,
        0,
        "[[routes]]\npath = \"/work\"\nclass = \"chat\"\n",
    );
    let prefix = testkit::unique_prefix("gw-flat");
    let a = Gateway::start(&p, &prefix, &[]).await;
    let b = Gateway::start(&p, &prefix, &[]).await;
    let urls = [a.url("/work?ms=400"), b.url("/work?ms=400")];
    let statuses = burst(&client(), &urls, &["solo"], 10).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let s = app.stats().await;
    assert_eq!(s["max_in_flight"], 4, "{s}");
    assert_eq!(s["max_per_user"]["solo"], 4, "{s}");
    assert_eq!(s["served"], 10, "{s}");
}

#[tokio::test]
async fn per_ip_window_refuses_with_ratelimit_headers() {
    let app = App::start();
    let p = policy(
        &app,
        4,
        2,
        "[[routes]]\npath = \"/work\"\nper_ip_per_min = 3\n",
    );
    let gw = Gateway::start(&p, &testkit::unique_prefix("gw-ip"), &[]).await;
    let c = client();
    for i in 0..3 {
        let r = c.get(gw.url("/work?ms=0")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["ratelimit-policy"], "\"route0-ip\";q=3;w=60");
        let remaining = format!("r={}", 2 - i);
        let rl = r.headers()["ratelimit"].to_str().unwrap().to_string();
        assert!(rl.contains(&remaining), "{rl}");
    }
    let r = c.get(gw.url("/work?ms=0")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.headers()["ratelimit"].to_str().unwrap().contains("r=0"));
    assert_eq!(problem_code(r).await, "rate_limited");
    assert_eq!(
        app.stats().await["served"],
        3,
        "the refused request never reached the app"
    );
}

#[tokio::test]
async fn per_user_window_counts_each_user_apart() {
    let app = App::start();
    let p = policy(
        &app,
        4,
        2,
        "[[routes]]\npath = \"/echo\"\nper_user_per_min = 2\n",
    );
    let gw = Gateway::start(&p, &testkit::unique_prefix("gw-user"), &[]).await;
    let c = client();
    let call = |user: &'static str| c.get(gw.url("/echo")).header("x-user-id", user).send();
    for _ in 0..2 {
        assert_eq!(call("ann").await.unwrap().status(), 200);
    }
    let r = call("ann").await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["ratelimit-policy"], "\"route0-user\";q=2;w=60");
    assert_eq!(problem_code(r).await, "rate_limited");
    // Same address, another user: a window of its own.
    assert_eq!(call("bob").await.unwrap().status(), 200);
}

#[tokio::test]
async fn sse_chunks_arrive_while_the_app_still_holds_the_request() {
    let app = App::start();
    let p = policy(
        &app,
        4,
        1,
        "[[routes]]\npath = \"/sse\"\nclass = \"chat\"\n",
    );
    let prefix = testkit::unique_prefix("gw-sse");
    let gw = Gateway::start(&p, &prefix, &[]).await;
    let observer = harness::QueueObserver::start(&prefix, &["chat", "export"], 4, 1).await;
    let resp = client()
        .get(gw.url("/sse"))
        .header("x-user-id", "reader")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .expect("first event before the app ends")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("data: first"));
    // The app has not finished: the event came through while it still holds the request.
    assert_eq!(app.stats().await["in_flight"], 1);
    // The admission slot is held with the stream: the same user's next request waits.
    let second = client()
        .get(gw.url("/sse"))
        .header("x-user-id", "reader")
        .send();
    let second = tokio::spawn(second);
    observer.wait_queued(1).await;
    assert_eq!(app.stats().await["max_per_user"]["reader"], 1);
    app.release().await;
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert!(String::from_utf8_lossy(&rest).contains("data: last"));
    let second = second.await.unwrap().unwrap();
    assert_eq!(second.status(), 200);
    assert!(second.text().await.unwrap().contains("data: last"));
    assert_eq!(app.stats().await["max_per_user"]["reader"], 1);
}

#[tokio::test]
async fn a_stream_still_open_at_shutdown_is_cut_after_the_grace() {
    let app = App::start();
    let p = policy(
        &app,
        4,
        1,
        "[[routes]]\npath = \"/sse\"\nclass = \"chat\"\n",
    );
    let grace = [("FLEETGATE_SHUTDOWN_GRACE_MS", "500")];
    let mut gw = Gateway::start(&p, &testkit::unique_prefix("gw-stop"), &grace).await;
    let resp = client()
        .get(gw.url("/sse"))
        .header("x-user-id", "late")
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("data: first"));
    let asked = std::time::Instant::now();
    gw.terminate();
    // The app would hold the stream 30 s; the gateway stops after its 500 ms grace.
    assert!(
        gw.exited_within(Duration::from_secs(10)).await,
        "still running"
    );
    assert!(
        asked.elapsed() >= Duration::from_millis(400),
        "{:?}",
        asked.elapsed()
    );
    app.release().await;
}

#[tokio::test]
async fn a_freed_slot_goes_to_the_highest_class_waiting() {
    let app = App::start();
    let routes = "[[routes]]\npath = \"/sse\"\nclass = \"chat\"\n\
                  [[routes]]\npath = \"/work\"\nmethod = \"POST\"\nclass = \"export\"\n\
                  [[routes]]\npath = \"/work\"\nclass = \"chat\"\n";
    let prefix = testkit::unique_prefix("gw-prio");
    let gw = Gateway::start(&policy(&app, 1, 1, routes), &prefix, &[]).await;
    let observer = harness::QueueObserver::start(&prefix, &["chat", "export"], 1, 1).await;
    let c = client();
    // The only slot, held by a stream.
    let resp = c
        .get(gw.url("/sse"))
        .header("x-user-id", "holder")
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    body.next().await.unwrap().unwrap();
    let mut waiting = Vec::new();
    for (n, (user, export)) in [("e1", true), ("e2", true), ("c1", false), ("c2", false)]
        .into_iter()
        .enumerate()
    {
        let req = if export {
            c.post(gw.url("/work?ms=50"))
        } else {
            c.get(gw.url("/work?ms=50"))
        };
        let req = req.header("x-user-id", user);
        waiting.push(tokio::spawn(async move {
            req.send().await.unwrap().status().as_u16()
        }));
        // Queued in this order: each is in the fleet-wide queue before the next is sent.
        observer.wait_queued(n as u64 + 1).await;
    }
    app.release().await;
    while body.next().await.is_some() {}
    for w in waiting {
        assert_eq!(w.await.unwrap(), 200);
    }
    let order = app.stats().await["order"].clone();
    assert_eq!(
        order,
        serde_json::json!(["holder", "c1", "c2", "e1", "e2"]),
        "{order}"
    );
}

#[tokio::test]
async fn shadow_route_never_refuses_and_says_it_would_have() {
    let app = App::start();
    let routes = "[[routes]]\npath = \"/work\"\nper_ip_per_min = 1\nshadow = true\n";
    let gw = Gateway::start(
        &policy(&app, 4, 2, routes),
        &testkit::unique_prefix("gw-sh"),
        &[],
    )
    .await;
    let c = client();
    for i in 0..3 {
        let r = c.get(gw.url("/work?ms=0")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let mark = r
            .headers()
            .get("limit-shadow-refusal")
            .map(|v| v.to_str().unwrap().to_string());
        if i == 0 {
            assert_eq!(mark, None);
        } else {
            assert_eq!(mark.as_deref(), Some("rate_limited"));
        }
    }
    assert_eq!(app.stats().await["served"], 3);
}

/// Sends `raw` over one connection and returns the whole answer (the request says `close`).
async fn raw(port: u16, raw: &str) -> (String, serde_json::Value) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (
        head.to_ascii_lowercase(),
        serde_json::from_str(body).unwrap_or_default(),
    )
}

#[tokio::test]
async fn hop_by_hop_headers_go_and_the_identity_header_is_the_verified_one() {
    use jsonwebtoken::{EncodingKey, Header, encode};
    let app = App::start();
    let p = format!(
        "upstream = \"{}\"\n[identity]\njwt_hs256_secret_env = \"GW_TEST_SECRET\"\n",
        app.url()
    );
    let secret = "gateway-test-secret";
    let gw = Gateway::start(
        &p,
        &testkit::unique_prefix("gw-hdr"),
        &[("GW_TEST_SECRET", secret)],
    )
    .await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = serde_json::json!({"sub": "alice", "exp": exp});
    let token = encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap();
    let forged = encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(b"not-the-secret").unwrap(),
    )
    .unwrap();
    let request = |auth: &str| {
        format!(
            "GET /echo HTTP/1.1\r\nHost: app.example\r\nAuthorization: Bearer {auth}\r\n\
             X-Fleetgate-User: root\r\nConnection: close, x-private\r\nX-Private: 1\r\n\
             Keep-Alive: timeout=9\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\n\
             X-Forwarded-For: 203.0.113.9\r\n\r\n"
        )
    };
    let (head, seen) = raw(gw.port, &request(&token)).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(seen["x-fleetgate-user"], "alice", "{seen}");
    for gone in ["x-private", "keep-alive", "te", "proxy-authorization"] {
        assert!(seen.get(gone).is_none(), "{gone} reached the app: {seen}");
    }
    assert_eq!(seen["x-forwarded-for"], "203.0.113.9, 127.0.0.1", "{seen}");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "app.example");
    // The app's own hop-by-hop fields stay on its side.
    assert!(
        !head.contains("x-hop:") && !head.contains("keep-alive:"),
        "{head}"
    );
    // A token signed with another secret proves nothing: the forged header is removed.
    let (_, seen) = raw(gw.port, &request(&forged)).await;
    assert!(seen.get("x-fleetgate-user").is_none(), "{seen}");
    // Upgrades other than WebSocket are not passed through.
    let up = "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, close\r\nUpgrade: h2c\r\n\r\n";
    let (head, doc) = raw(gw.port, up).await;
    assert!(head.starts_with("http/1.1 501"), "{head}");
    assert_eq!(doc["code"], "upgrade_not_supported");
}

#[tokio::test]
async fn unmatched_paths_pass_or_are_refused_and_the_app_failing_is_a_502() {
    let app = App::start();
    let routes = "[[routes]]\nmethod = \"POST\"\npath = \"/work\"\nclass = \"chat\"\n";
    let p = policy(&app, 4, 2, routes);
    let prefix = testkit::unique_prefix("gw-def");
    let pass = Gateway::start(&p, &prefix, &[]).await;
    let refuse = Gateway::start(&format!("{p}[default]\nrefuse = true\n"), &prefix, &[]).await;
    let c = client();
    let r = c.get(pass.url("/work?ms=0")).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.text().await.unwrap()),
        (200, "ok".into())
    );
    let r = c.get(refuse.url("/work?ms=0")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(problem_code(r).await, "not_found");
    // A route limited by user refuses a request that names nobody.
    let r = c.post(refuse.url("/work?ms=0")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(problem_code(r).await, "unauthorized");
    assert_eq!(app.stats().await["served"], 1);
    // An app that is not there: 502 without the connection error's text.
    let dead = format!("upstream = \"http://127.0.0.1:{}\"\n", testkit::free_port());
    let gw = Gateway::start(&dead, &prefix, &[]).await;
    let r = c.get(gw.url("/anything")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("bad_gateway") && !body.to_lowercase().contains("refused"),
        "{body}"
    );
}

#[tokio::test]
async fn an_app_without_a_response_head_in_time_is_a_504() {
    let app = App::start();
    let p = format!("upstream = \"{}\"\nupstream_timeout_ms = 300\n", app.url());
    let gw = Gateway::start(&p, &testkit::unique_prefix("gw-504"), &[]).await;
    let r = client().get(gw.url("/work?ms=3000")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    assert_eq!(problem_code(r).await, "gateway_timeout");
    let r = client().get(gw.url("/work?ms=0")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_bad_policy_stops_the_gateway_with_the_key_named() {
    let app = App::start();
    let p = policy(
        &app,
        4,
        2,
        "[[routes]]\npath = \"/work\"\nclass = \"research\"\n",
    );
    let out = harness::command(&p, "unused", testkit::free_port(), &[])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("routes[0] (/work).class"), "{err}");
}

#[tokio::test]
async fn a_daily_quota_refuses_the_fourth_until_midnight_and_refunds_what_failed() {
    // Counting across midnight would see the day reset under it.
    tokio::time::sleep(testkit::wait_clear_of_utc_midnight(Duration::from_secs(
        120,
    )))
    .await;
    let app = App::start();
    let p = policy(
        &app,
        4,
        2,
        "[[routes]]\npath = \"/work\"\ndaily_quota = 3\n",
    );
    let db = harness::database_url();
    let env = [("FLEETGATE_DATABASE_URL", db.as_str())];
    let gw = Gateway::start(&p, &testkit::unique_prefix("gw-quota"), &env).await;
    let store = harness::quota_store().await;
    let user = testkit::unique_prefix("quota-user");
    let c = client();
    let call = |query: &str| {
        c.get(gw.url(&format!("/work?ms=0{query}")))
            .header("x-user-id", &user)
            .send()
    };
    // The app fails: the unit comes back.
    assert_eq!(call("&status=500").await.unwrap().status(), 500);
    harness::wait_used(&store, "* /work", &user, 0).await;
    for i in 1..=3 {
        let r = call("").await.unwrap();
        assert_eq!(r.status(), 200);
        // Read to the end: a client that leaves before the first byte of the body is not
        // charged, and the app may send its body after its head.
        assert_eq!(r.text().await.unwrap(), "ok");
        harness::wait_used(&store, "* /work", &user, i).await;
    }
    let r = call("").await.unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let midnight = gateway::until_next_utc_midnight().as_secs();
    assert!(retry.abs_diff(midnight) <= 2, "{retry} vs {midnight}");
    assert_eq!(problem_code(r).await, "quota_exhausted");
    // 1 failed + 3 served; the refused one never reached the app.
    assert_eq!(app.stats().await["served"], 4);
    // Another user has a day of their own.
    let other = testkit::unique_prefix("quota-other");
    let r = c.get(gw.url("/work?ms=0")).header("x-user-id", &other);
    assert_eq!(r.send().await.unwrap().status(), 200);
    // An app that cannot be reached at all (502) costs nothing either.
    let dead = format!(
        "upstream = \"http://127.0.0.1:{}\"\n[identity]\nheader = \"X-User-Id\"\n\
         [[routes]]\npath = \"/work\"\ndaily_quota = 3\n",
        testkit::free_port()
    );
    let gw = Gateway::start(&dead, &testkit::unique_prefix("gw-quota"), &env).await;
    let lost = testkit::unique_prefix("quota-lost");
    let r = c.get(gw.url("/work")).header("x-user-id", &lost);
    assert_eq!(r.send().await.unwrap().status(), 502);
    harness::wait_used(&store, "* /work", &lost, 0).await;
}

#[tokio::test]
async fn a_daily_quota_without_a_database_stops_the_gateway_at_start() {
    let app = App::start();
    let p = policy(
        &app,
        4,
        2,
        "[[routes]]\npath = \"/work\"\ndaily_quota = 3\n",
    );
    let out = harness::command(&p, "unused", testkit::free_port(), &[])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("daily_quota") && err.contains("FLEETGATE_DATABASE_URL"),
        "{err}"
    );
}

#[tokio::test]
async fn the_breaker_opens_on_app_failures_fleet_wide_and_a_probe_closes_it() {
    let app = App::start();
    let p = format!(
        "upstream = \"{}\"\n[breaker]\nfailure_threshold = 3\nopen_ms = 1000\n",
        app.url()
    );
    let prefix = testkit::unique_prefix("gw-breaker");
    let a = Gateway::start(&p, &prefix, &[]).await;
    let b = Gateway::start(&p, &prefix, &[]).await;
    let c = client();
    let get = |gw: &Gateway| c.get(gw.url("/work?ms=0")).send();
    app.set_healthy(false).await;
    for _ in 0..3 {
        assert_eq!(get(&a).await.unwrap().status(), 500);
    }
    // Open on both replicas: refused without reaching the app.
    for gw in [&a, &b] {
        let r = get(gw).await.unwrap();
        assert_eq!(r.status(), 503);
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=2).contains(&retry), "{retry}");
        assert_eq!(problem_code(r).await, "circuit_open");
    }
    assert_eq!(app.stats().await["served"], 3);
    app.set_healthy(true).await;
    // Refused until the open period ends; then a probe reaches the app and closes the breaker.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut refused = 0;
    loop {
        let r = get(&b).await.unwrap();
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 503);
        refused += 1;
        assert!(std::time::Instant::now() < deadline, "never closed");
        // A poll of the gateway's own answer (deadline above), not a wait for time to pass.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        refused > 0,
        "the probe went before the open period was over"
    );
    for gw in [&a, &b, &a] {
        assert_eq!(get(gw).await.unwrap().status(), 200);
    }
    assert_eq!(
        app.stats().await["served"],
        7,
        "3 failures, the probe, 3 after it: no refused request reached the app"
    );
}

/// Opens a WebSocket to `path` on `port` as `user` (the handshake by hand: RFC 6455's sample key,
/// whose accept value the app must compute).
async fn ws_open(port: u16, path: &str, user: &str) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: app.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         X-User-Id: {user}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(s.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    s
}

/// Sends a masked client frame (`opcode`, short payload) on `s`.
async fn ws_send(s: &mut tokio::net::TcpStream, opcode: u8, payload: &[u8]) {
    let mask = [7u8, 1, 2, 3];
    let mut frame = vec![0x80 | opcode, 0x80 | u8::try_from(payload.len()).unwrap()];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).await.unwrap();
}

/// Reads one short unmasked server frame: (opcode, payload).
async fn ws_read(s: &mut tokio::net::TcpStream) -> (u8, Vec<u8>) {
    let read = async {
        let mut h = [0u8; 2];
        s.read_exact(&mut h).await.unwrap();
        let mut payload = vec![0; usize::from(h[1] & 0x7f)];
        s.read_exact(&mut payload).await.unwrap();
        (h[0] & 0x0f, payload)
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a frame within 10 s")
}

#[tokio::test]
async fn a_websocket_passes_through_and_holds_its_slot_while_open() {
    let app = App::start();
    let routes = "[[routes]]\npath = \"/ws\"\nclass = \"chat\"\n\
                  [[routes]]\npath = \"/work\"\nclass = \"chat\"\n";
    let prefix = testkit::unique_prefix("gw-ws");
    let gw = Gateway::start(&policy(&app, 4, 1, routes), &prefix, &[]).await;
    let observer = harness::QueueObserver::start(&prefix, &["chat", "export"], 4, 1).await;
    let mut ws = ws_open(gw.port, "/ws", "wsuser").await;
    ws_send(&mut ws, 0x1, b"hello").await;
    assert_eq!(ws_read(&mut ws).await, (0x1, b"hello".to_vec()));
    assert_eq!(
        app.stats().await["in_flight"],
        1,
        "the app holds the socket"
    );
    // The user's only slot is the socket's: the next request waits.
    let c = client();
    let next = c.get(gw.url("/work?ms=0")).header("x-user-id", "wsuser");
    let next = tokio::spawn(async move { next.send().await.unwrap().status().as_u16() });
    observer.wait_queued(1).await;
    assert!(
        !next.is_finished(),
        "a second request ran beside the socket"
    );
    assert_eq!(app.stats().await["served"], 0);
    // Still open: echo again, then close (code 1000); the app answers the close.
    ws_send(&mut ws, 0x1, b"again").await;
    assert_eq!(ws_read(&mut ws).await, (0x1, b"again".to_vec()));
    ws_send(&mut ws, 0x8, &1000u16.to_be_bytes()).await;
    assert_eq!(ws_read(&mut ws).await.0, 0x8);
    let status = tokio::time::timeout(Duration::from_secs(10), next)
        .await
        .expect("the slot was freed when the socket closed")
        .unwrap();
    assert_eq!(status, 200);
    let s = app.stats().await;
    assert_eq!(s["max_per_user"]["wsuser"], 1, "{s}");
    assert_eq!(s["served"], 2, "the socket and the request: {s}");
}
