//! The real assistant over server-sent events, end to end: event order, disconnects that free the
//! slot and the upstream call, and what a stream that ends early costs the user's quota.
#![allow(clippy::unwrap_used)]
mod common;

use common::rag_fleet::{Fleet, start, start_with};
use serde_json::{Value, json};
use upstream_sim::Group;

/// Reads a server-sent event stream: (ms since `t0`, event name, JSON data) per event, until the
/// stream ends or `stop` says so.
async fn read_events(
    resp: reqwest::Response,
    t0: std::time::Instant,
    stop: impl Fn(&str) -> bool,
) -> Vec<(u128, String, Value)> {
    use futures_util::StreamExt;
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut events = Vec::new();
    while let Some(chunk) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut name = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if name.is_empty() {
                continue; // keep-alive comment
            }
            let value = serde_json::from_str(&data).unwrap_or(Value::Null);
            let done = stop(&name);
            events.push((t0.elapsed().as_millis(), name, value));
            if done {
                return events;
            }
        }
    }
    events
}

fn stream_request(f: &Fleet, user: &str, body: Value) -> reqwest::RequestBuilder {
    common::client()
        .post(f.server.url("/api/chat"))
        .bearer_auth(common::token(user))
        .header("accept", "text/event-stream")
        .json(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_delivers_queued_to_done_in_order() {
    let f = start_with(|c| {
        c.admission.max_concurrent_global = 1;
        c.admission.max_concurrent_per_user = 1;
    })
    .await;
    // A slow answer holds the only slot, so the streamed chat has to queue.
    f.sim
        .set(|s| {
            s.llm_answer_latency_ms = 1500;
            s.llm_chunk_delay_ms = 40;
        })
        .unwrap();
    let holder = tokio::spawn(post_owned(f.server.url("/api/chat"), "holder"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while f.sim.stats().group(Group::Llm).in_flight == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "holder never reached the LLM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    f.sim.set(|s| s.llm_answer_latency_ms = 0).unwrap();

    let t0 = std::time::Instant::now();
    let resp = stream_request(
        &f,
        "streamer",
        json!({"message": "metformin and kidney function", "useRAG": true}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = read_events(resp, t0, |n| n == "done" || n == "error").await;
    let names: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(names.first(), Some(&"queued"), "{names:?}");
    assert_eq!(events[0].2["position"], 1);
    let started = names.iter().position(|n| *n == "started").expect("started");
    let citations = names
        .iter()
        .position(|n| *n == "citations")
        .expect("citations");
    let done = names.iter().position(|n| *n == "done").expect("done");
    assert!(names[..started].iter().all(|n| *n == "queued"));
    let deltas: Vec<&(u128, String, Value)> = events.iter().filter(|e| e.1 == "delta").collect();
    assert!(deltas.len() >= 3, "{names:?}");
    assert!(names[started + 1..citations].iter().all(|n| *n == "delta"));
    assert_eq!(done, citations + 1);
    // Relayed as produced: the first delta came well before the last (40 ms per chunk).
    assert!(deltas.last().unwrap().0 - deltas[0].0 >= 80);
    let text: String = deltas
        .iter()
        .map(|e| e.2["text"].as_str().unwrap())
        .collect();
    let reply = &events[done].2;
    assert_eq!(reply["answer"].as_str().unwrap(), text);
    assert!(!reply["citations"].as_array().unwrap().is_empty());
    assert_eq!(reply["citations"], events[citations].2);
    assert_eq!(holder.await.unwrap(), 200);
}

async fn post_owned(url: String, user: &'static str) -> u16 {
    common::client()
        .post(url)
        .bearer_auth(common::token(user))
        .json(&json!({"message": "slow question about statins", "useRAG": false}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_mid_stream_frees_the_slot_and_the_upstream_call() {
    let f = start().await;
    f.sim.set(|s| s.llm_chunk_delay_ms = 200).unwrap();
    let t0 = std::time::Instant::now();
    let resp = stream_request(
        &f,
        "leaver",
        json!({"message": "beta blockers after myocardial infarction", "useRAG": false}),
    )
    .send()
    .await
    .unwrap();
    // Read until the first delta with the stream still open, check the slot is held, then hang up.
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("event: delta") {
        use futures_util::StreamExt;
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), body.next())
            .await
            .expect("no delta")
            .expect("stream ended")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(t0.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(f.server.state.gate().stats().await.unwrap().slots_in_use, 1);
    drop(body);
    let gone = std::time::Instant::now();
    loop {
        let slots = f.server.state.gate().stats().await.unwrap().slots_in_use;
        let llm = f.sim.stats().group(Group::Llm).in_flight;
        if slots == 0 && llm == 0 {
            break;
        }
        assert!(
            gone.elapsed() < std::time::Duration::from_secs(2),
            "slot {slots} / upstream {llm} still held after the client left"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Streams a chat and reads events until one named `until` (or the end); returns the events and
/// the still-open body (dropping it hangs up).
async fn stream_until(
    f: &Fleet,
    user: &str,
    until: &str,
) -> (Vec<String>, impl futures_util::Stream + use<>) {
    use futures_util::StreamExt;
    let resp = stream_request(
        f,
        user,
        json!({"message": "statins and muscle pain", "useRAG": false}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    let marker = format!("event: {until}\n");
    while !seen.contains(&marker) {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(20), body.next())
            .await
            .unwrap_or_else(|_| panic!("no `{until}` event: {seen}"))
            .unwrap_or_else(|| panic!("stream ended before `{until}`: {seen}"))
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let names = seen
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .map(String::from)
        .collect();
    (names, body)
}

/// Holds the only slot with a slow LLM answer (the holder's chat is not streamed).
async fn hold_the_only_slot(f: &Fleet) -> tokio::task::JoinHandle<u16> {
    f.sim.set(|s| s.llm_answer_latency_ms = 4000).unwrap();
    let holder = tokio::spawn(post_owned(f.server.url("/api/chat"), "holder"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while f.sim.stats().group(Group::Llm).in_flight == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "holder never reached the LLM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    holder
}

/// A client that hangs up right after `started` has been served: the query stays spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_after_started_keeps_the_query_spent() {
    let f = start().await;
    // The answer takes a while, so the hang-up comes before any of it.
    f.sim.set(|s| s.llm_answer_latency_ms = 2000).unwrap();
    let (names, body) = stream_until(&f, "keeper", "started").await;
    assert!(!names.iter().any(|n| n == "delta"), "{names:?}");
    drop(body);
    let quota = f.server.state.quota();
    let gone = std::time::Instant::now();
    while f.server.state.gate().stats().await.unwrap().slots_in_use > 0 {
        assert!(
            gone.elapsed() < std::time::Duration::from_secs(5),
            "slot kept"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // A refund would land within milliseconds of the slot's release; a second shows none came.
    while gone.elapsed() < std::time::Duration::from_secs(1) {
        assert_eq!(quota.remaining("keeper").await.unwrap(), 2, "refunded");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A client that hangs up while its chat still waits for a slot gets its query back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_while_queued_refunds_the_query() {
    let f = start_with(|c| {
        c.admission.max_concurrent_global = 1;
        c.admission.max_concurrent_per_user = 1;
    })
    .await;
    let holder = hold_the_only_slot(&f).await;
    let (names, body) = stream_until(&f, "leaver-queued", "queued").await;
    assert!(!names.iter().any(|n| n == "started"), "{names:?}");
    assert_eq!(
        f.server
            .state
            .quota()
            .remaining("leaver-queued")
            .await
            .unwrap(),
        2
    );
    drop(body);
    let gone = std::time::Instant::now();
    loop {
        let left = f
            .server
            .state
            .quota()
            .remaining("leaver-queued")
            .await
            .unwrap();
        let waiting = f.server.state.gate().stats().await.unwrap().waiting.chat;
        if left == 3 && waiting == 0 {
            break;
        }
        assert!(
            gone.elapsed() < std::time::Duration::from_secs(5),
            "{left} queries left, {waiting} waiting, 5 s after the client left the queue"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    f.sim.set(|s| s.llm_answer_latency_ms = 0).unwrap();
    assert_eq!(holder.await.unwrap(), 200);
}

/// A queue timeout on a stream is an `error` event (`queue_timeout`), and the query comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_timeout_on_a_stream_is_an_error_event_and_refunds() {
    let f = start_with(|c| {
        c.admission.max_concurrent_global = 1;
        c.admission.max_concurrent_per_user = 1;
        c.admission.queue_timeout_ms = 800;
    })
    .await;
    let holder = hold_the_only_slot(&f).await;
    let resp = stream_request(
        &f,
        "timed-out",
        json!({"message": "statins and muscle pain", "useRAG": false}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let events = read_events(resp, std::time::Instant::now(), |n| {
        n == "error" || n == "done"
    })
    .await;
    let names: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(names.first(), Some(&"queued"), "{names:?}");
    assert_eq!(names.last(), Some(&"error"), "{names:?}");
    let problem = &events.last().unwrap().2;
    assert_eq!(problem["code"], "queue_timeout", "{problem}");
    assert_eq!(problem["status"], 503, "{problem}");
    // Refunded before the event was sent.
    assert_eq!(
        f.server.state.quota().remaining("timed-out").await.unwrap(),
        3
    );
    f.sim.set(|s| s.llm_answer_latency_ms = 0).unwrap();
    assert_eq!(holder.await.unwrap(), 200);
}

/// A stream whose lease is lost mid-answer (Redis forgot it): under the safety outage policy the
/// answer stops at once with an `error` event (`service_unavailable`, `retryAfter`), the LLM call
/// is dropped (the simulator sees it end), and the query is kept: text had reached the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_lease_is_lost_stops_with_an_error_event() {
    let f = start_with(|c| {
        c.admission.max_concurrent_global = 1;
        c.admission.max_concurrent_per_user = 1;
        // Renewed every 200 ms: the loss is found within that.
        c.admission.lease_ttl_ms = 600;
    })
    .await;
    // Slow chunks: the answer would take many seconds.
    f.sim.set(|s| s.llm_chunk_delay_ms = 300).unwrap();
    let before = f.server.state.quota().remaining("revoked").await.unwrap();
    let resp = stream_request(
        &f,
        "revoked",
        json!({"message": "statins", "useRAG": false}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let t0 = std::time::Instant::now();
    let prefix = f.server.state.config().redis.prefix.clone();
    let forget = async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while f.sim.stats().group(Group::Llm).in_flight == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "never reached the LLM"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        common::forget_the_only_lease(&common::redis(&prefix).await).await;
    };
    let (events, ()) = tokio::join!(
        read_events(resp, t0, |n| n == "done" || n == "error"),
        forget
    );
    let names: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(names.last(), Some(&"error"), "{names:?}");
    let err = &events.last().unwrap().2;
    assert_eq!(err["code"], "service_unavailable", "{err}");
    assert!(err["retryAfter"].as_u64().unwrap() >= 1, "{err}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while f.sim.stats().group(Group::Llm).in_flight > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the LLM call was not dropped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let quota = f.server.state.quota().remaining("revoked").await.unwrap();
    if names.contains(&"delta") {
        assert_eq!(
            quota,
            before - 1,
            "text reached the client: the query counts"
        );
    } else {
        assert_eq!(quota, before, "nothing reached the client: given back");
    }
}
