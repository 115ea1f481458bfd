//! Slow clients: connections that send their request a little at a time, or nothing, or stop
//! reading their answer. Each used to hold a socket (and, for a stream, a slot) for ever. Timeouts
//! are short here (1-2 s) so that the deadlines stay small; the server is on loopback.

use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use crate::harness::serial;
use crate::support::{Replica, closed_by_peer, send, token};

/// 40 connections each send a request line and then one header line every 250 ms. With a 1 s
/// header timeout every one is closed within a few seconds, while a normal request is served
/// throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dribbled_headers_are_cut_off_at_the_header_timeout() {
    let _s = serial().await;
    let r = Replica::start(
        "dribble",
        &[
            ("FLEETGATE_HTTP_HEADER_TIMEOUT_MS", "1000"),
            ("FLEETGATE_HTTP_IDLE_TIMEOUT_MS", "2000"),
        ],
    )
    .await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(8);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let addr = r.addr();
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            send(&mut s, b"GET /healthz HTTP/1.1\r\nHost: fleetgate\r\n").await;
            let mut n = 0;
            loop {
                let tick = Instant::now() + Duration::from_millis(250);
                if closed_by_peer(&mut s, tick.min(deadline)).await {
                    return Some(started.elapsed());
                }
                if Instant::now() >= deadline {
                    return None;
                }
                n += 1;
                if !send(&mut s, format!("X-Slow-{i}-{n}: x\r\n").as_bytes()).await {
                    return Some(started.elapsed());
                }
            }
        }));
    }
    // Meanwhile the replica serves others.
    let ok = r.client.get(r.url("/healthz")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let mut closed = Vec::new();
    for t in tasks {
        closed.push(t.await.unwrap());
    }
    let open = closed.iter().filter(|c| c.is_none()).count();
    assert_eq!(open, 0, "connections still open after 8 s: {open} of 40");
    let slowest = closed.iter().flatten().max().unwrap();
    assert!(*slowest < Duration::from_secs(6), "{slowest:?}");
}

/// Connections that send nothing are closed after the idle timeout, and so is a kept-alive
/// connection after its response; a request that runs longer than the idle timeout is not cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_but_running_requests_are_not() {
    let _s = serial().await;
    let r = Replica::start(
        "idle",
        &[
            ("FLEETGATE_HTTP_IDLE_TIMEOUT_MS", "1500"),
            ("FLEETGATE_HTTP_HEADER_TIMEOUT_MS", "10000"),
        ],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(r.addr()).await.unwrap());
    }
    let mut kept = TcpStream::connect(r.addr()).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: fleetgate\r\n\r\n")
        .await
        .unwrap();
    // A chat whose answer takes 3 s, twice the idle timeout, on a connection of its own.
    r.sim.control(json!({"llm_answer_latency_ms": 3000})).await;
    let chat = r
        .client
        .post(r.url("/api/chat"))
        .bearer_auth(token("erin"))
        .json(&json!({"message": "a slow answer please", "useRAG": false}));
    let chat = tokio::spawn(chat.send());
    for s in &mut silent {
        assert!(
            closed_by_peer(s, deadline).await,
            "a silent connection is still open"
        );
    }
    assert!(
        closed_by_peer(&mut kept, deadline).await,
        "kept-alive connection still open"
    );
    let resp = chat.await.unwrap().unwrap();
    assert_eq!(
        resp.status(),
        200,
        "a running request was cut by the idle timeout"
    );
}

/// At most `FLEETGATE_HTTP_MAX_CONNECTIONS` connections are open in the process, however many
/// clients connect: the rest wait in the kernel's backlog. Counted from `/proc/<pid>/fd`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_stay_under_the_cap() {
    let _s = serial().await;
    let r = Replica::start(
        "cap",
        &[
            ("FLEETGATE_HTTP_MAX_CONNECTIONS", "16"),
            ("FLEETGATE_HTTP_HEADER_TIMEOUT_MS", "30000"),
            ("FLEETGATE_HTTP_IDLE_TIMEOUT_MS", "30000"),
            ("FLEETGATE_PIPELINE", "echo"),
        ],
    )
    .await;
    // Warm up the pools so that the baseline holds their sockets.
    for _ in 0..3 {
        let resp = r
            .chat("frank", "198.51.100.3", crate::support::ask("hello", false))
            .await;
        assert_eq!(resp.status(), 200);
    }
    let _ = r.health().await;
    let baseline = r.open_fds();
    let mut held = Vec::new();
    for _ in 0..48 {
        let mut s = TcpStream::connect(r.addr()).await.unwrap();
        send(&mut s, b"GET /healthz HTTP/1.1\r\nHost: fleetgate\r\n").await;
        held.push(s);
    }
    // Give the replica time to accept what it will; sample its descriptors meanwhile.
    let mut most = 0;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        most = most.max(r.open_fds());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        most <= baseline + 16 + 4,
        "{most} descriptors open, baseline {baseline}, cap 16"
    );
    // Closing held connections lets the waiting ones in: all 48 are eventually answered.
    let first: Vec<TcpStream> = held.drain(..16).collect();
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    for s in &mut held[..8] {
        s.write_all(b"\r\n").await.unwrap();
        let mut buf = [0u8; 12];
        let n = tokio::time::timeout_at(deadline, tokio::io::AsyncReadExt::read(s, &mut buf))
            .await
            .expect("a waiting connection was never served")
            .unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    }
}

/// A client that opens an answer stream and never reads it: once the server's writes have been
/// blocked for the write timeout the connection is dropped, and with it the stream's slot and its
/// LLM call (seen by the simulator and the fleet-wide slot count).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_nobody_reads_is_dropped_and_frees_its_slot() {
    let _s = serial().await;
    let r = Replica::start(
        "stall",
        &[
            ("FLEETGATE_HTTP_WRITE_TIMEOUT_MS", "1000"),
            ("FLEETGATE_LLM_MAX_TOKENS", "32768"),
        ],
    )
    .await;
    r.sim
        .control(json!({"llm_chunk_delay_ms": 0, "llm_answer_pad_words": 30000}))
        .await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(r.addr()).await.unwrap();
    let body = json!({"message": "a very long answer please", "useRAG": false}).to_string();
    let req = format!(
        "POST /api/chat HTTP/1.1\r\nHost: fleetgate\r\nAuthorization: Bearer {}\r\n\
         Accept: text/event-stream\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        token("grace"),
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    // The LLM call starts...
    let started = crate::harness::wait_for(Duration::from_secs(20), || async {
        let (now, _) = r.sim.llm_in_flight().await;
        (now > 0).then_some(())
    })
    .await;
    assert!(started.is_some(), "the answer never started");
    // ...and, the client reading nothing, ends when the replica gives up on the connection.
    let freed = crate::harness::wait_for(Duration::from_secs(20), || async {
        let (now, _) = r.sim.llm_in_flight().await;
        let slots = r.health().await["components"]["queue"]["slotsInUse"].as_u64();
        (now == 0 && slots == Some(0)).then_some(())
    })
    .await;
    assert!(
        freed.is_some(),
        "a stream nobody reads still holds its LLM call or slot after 20 s"
    );
    drop(s);
}

/// A request body sent a byte at a time is answered 408 `request_timeout` once the body timeout
/// has passed, and the connection closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dribbled_body_gets_408() {
    let _s = serial().await;
    let r = Replica::start(
        "body",
        &[
            ("FLEETGATE_HTTP_BODY_TIMEOUT_MS", "1000"),
            ("FLEETGATE_PIPELINE", "echo"),
        ],
    )
    .await;
    let body = json!({"message": "hello there, a slow body", "useRAG": false}).to_string();
    let mut s = TcpStream::connect(r.addr()).await.unwrap();
    let head = format!(
        "POST /api/chat HTTP/1.1\r\nHost: fleetgate\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        token("heidi"),
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut answer = Vec::new();
    for b in body.bytes() {
        if Instant::now() >= deadline || !send(&mut s, &[b]).await {
            break;
        }
        let mut buf = [0u8; 1024];
        let pause = Instant::now() + Duration::from_millis(200);
        if let Ok(Ok(n)) =
            tokio::time::timeout_at(pause, tokio::io::AsyncReadExt::read(&mut s, &mut buf)).await
        {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 408"),
        "no 408 within 6 s: {text:?}"
    );
    assert!(text.contains("request_timeout"), "{text}");
}
