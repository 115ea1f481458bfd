//! OpenAI-compatible chat completions: shape, prompt-grounded answers, streaming, validation,
//! API key, recorded `user` and `traceparent`.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use upstream_sim::SimConfig;

use crate::common::{client, post, sim};

fn rag_request(stream: bool) -> Value {
    json!({
        "model": "gpt-test",
        "stream": stream,
        "user": "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8",
        "messages": [
            { "role": "system", "content": "Answer from these sources only.\n[1] Metformin and all-cause mortality in type 2 diabetes\n[2] Empagliflozin versus placebo in heart failure\n[3] Exercise and HbA1c among older adults" },
            { "role": "user", "content": "Does metformin reduce mortality in people with type 2 diabetes?" }
        ]
    })
}

#[tokio::test]
async fn completion_has_openai_shape_and_cites_sources() {
    let sim = sim(SimConfig::default()).await;
    let c = client();
    let (status, v) = post(
        &c,
        &format!("{}/chat/completions", sim.llm_url()),
        &rag_request(false),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["model"], "gpt-test");
    let choice = &v["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["finish_reason"], "stop");
    let u = &v["usage"];
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
    );
    let answer = choice["message"]["content"].as_str().unwrap();
    for cite in [
        "Metformin and all-cause mortality in type 2 diabetes [1]",
        "[2]",
        "[3]",
        "[1][2][3]",
    ] {
        assert!(answer.contains(cite), "missing {cite}: {answer}");
    }
    assert!(
        answer.contains("metformin reduce mortality people type 2 diabetes"),
        "{answer}"
    );
    // Deterministic.
    let (_, again) = post(
        &c,
        &format!("{}/chat/completions", sim.llm_url()),
        &rag_request(false),
    )
    .await;
    assert_eq!(again["choices"][0]["message"]["content"], answer);

    // No sources: no citations.
    let plain =
        json!({ "model": "m", "messages": [{ "role": "user", "content": "What is sepsis?" }] });
    let (_, v) = post(&c, &format!("{}/chat/completions", sim.llm_url()), &plain).await;
    let a = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!a.contains('['), "{a}");
    assert!(a.contains("sepsis"));
}

#[tokio::test]
async fn stream_sends_paced_chunks_then_done() {
    let delay = 40;
    let sim = sim(SimConfig::default().with_llm_chunk_delay_ms(delay)).await;
    let c = client();
    let (_, whole) = post(
        &c,
        &format!("{}/chat/completions", sim.llm_url()),
        &rag_request(false),
    )
    .await;

    let start = Instant::now();
    let resp = c
        .post(format!("{}/chat/completions", sim.llm_url()))
        .json(&rag_request(true))
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
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    // (arrival time, data payload)
    let mut events: Vec<(Duration, String)> = Vec::new();
    while let Some(chunk) = body.next().await {
        buf.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let frame = buf[..end].to_string();
            buf.drain(..end + 2);
            let data = frame
                .strip_prefix("data: ")
                .expect("every frame is a data line");
            events.push((start.elapsed(), data.to_string()));
        }
    }
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks.len() >= 10, "{} chunks", chunks.len());
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"])
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert!(
        chunks[..chunks.len() - 1]
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null())
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        text,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );

    // Deltas arrive spread out, not all at the end: the first content chunk came well before
    // [DONE], and the whole stream took about (chunks - 1) delays.
    let first_content = events[1].0;
    let done = events.last().unwrap().0;
    let expected = Duration::from_millis(delay * (events.len() as u64 - 2));
    assert!(
        done >= expected.mul_f64(0.9),
        "stream took {done:?}, expected ~{expected:?}"
    );
    assert!(
        done - first_content >= expected.mul_f64(0.8),
        "first delta at {first_content:?}, done at {done:?}"
    );
    // Gaps between consecutive frames are each close to the delay (a lower bound is robust).
    let short_gaps = events
        .windows(2)
        .skip(1)
        .filter(|w| w[1].0 - w[0].0 < Duration::from_millis(delay / 2))
        .count();
    assert!(
        short_gaps <= events.len() / 3,
        "{short_gaps} gaps shorter than half the delay"
    );
}

#[tokio::test]
async fn stream_usage_chunk_when_asked() {
    let sim = sim(SimConfig::default().with_llm_chunk_delay_ms(0)).await;
    let mut req = rag_request(true);
    req["stream_options"] = json!({ "include_usage": true });
    let body = client()
        .post(format!("{}/chat/completions", sim.llm_url()))
        .json(&req)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let frames: Vec<&str> = body.split("\n\n").filter(|f| !f.is_empty()).collect();
    assert_eq!(*frames.last().unwrap(), "data: [DONE]");
    let usage: Value =
        serde_json::from_str(frames[frames.len() - 2].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["total_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn answer_latency_delays_the_answer() {
    let sim = sim(SimConfig::default().with_llm_answer_latency_ms(300)).await;
    let start = Instant::now();
    let (status, _) = post(
        &client(),
        &format!("{}/chat/completions", sim.llm_url()),
        &rag_request(false),
    )
    .await;
    assert_eq!(status, 200);
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn invalid_requests_get_openai_errors() {
    let sim = sim(SimConfig::default()).await;
    let c = client();
    let url = format!("{}/chat/completions", sim.llm_url());
    for (body, needle) in [
        (
            json!({ "messages": [{ "role": "user", "content": "hi" }] }),
            "model",
        ),
        (json!({ "model": "m" }), "messages"),
        (json!({ "model": "m", "messages": [] }), "empty array"),
        (json!({ "model": "m", "messages": "hi" }), "messages"),
        (
            json!({ "model": 5, "messages": [{ "role": "user", "content": "hi" }] }),
            "model",
        ),
        (
            json!({ "model": "m", "messages": [{ "role": "wizard", "content": "hi" }] }),
            "wizard",
        ),
        (
            json!({ "model": "m", "messages": [{ "role": "user", "content": 5 }] }),
            "content",
        ),
        (
            json!({ "model": "m", "stream": "yes", "messages": [{ "role": "user", "content": "hi" }] }),
            "stream",
        ),
        (
            json!({ "model": "m", "user": 1, "messages": [{ "role": "user", "content": "hi" }] }),
            "user",
        ),
        (json!([1, 2]), "object"),
    ] {
        let (status, v) = post(&c, &url, &body).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{body}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{body}: {v}"
        );
        assert!(v["error"].get("code").is_some(), "{v}");
    }
    let resp = c
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not parse the JSON body")
    );
}

#[tokio::test]
async fn api_key_is_enforced_when_configured() {
    let sim = sim(SimConfig::default().with_llm_api_key("sk-sim")).await;
    let c = client();
    let url = format!("{}/chat/completions", sim.llm_url());
    let resp = c.post(&url).json(&rag_request(false)).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = c
        .post(&url)
        .bearer_auth("sk-wrong")
        .json(&rag_request(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let resp = c
        .post(&url)
        .bearer_auth("sk-sim")
        .json(&rag_request(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Switched off at run time.
    sim.set(|s| s.llm_api_key = None).unwrap();
    assert_eq!(
        c.post(&url)
            .json(&rag_request(false))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn records_user_and_traceparent() {
    let sim = sim(SimConfig::default()).await;
    let c = client();
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let resp = c
        .post(format!("{}/chat/completions", sim.llm_url()))
        .header("traceparent", tp)
        .json(&rag_request(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    c.get(format!("{}/esearch.fcgi?term=asthma", sim.pubmed_url()))
        .header("traceparent", tp)
        .send()
        .await
        .unwrap();
    let stats = sim.stats();
    assert_eq!(stats.users.len(), 1);
    assert_eq!(
        stats.users[0].user,
        rag_request(false)["user"].as_str().unwrap()
    );
    let seen: Vec<(&str, &str)> = stats
        .traceparents
        .iter()
        .map(|t| (t.endpoint.as_str(), t.traceparent.as_str()))
        .collect();
    assert_eq!(seen, vec![("llm.chat", tp), ("pubmed.esearch", tp)]);
    // The same over HTTP.
    let v: Value = c
        .get(format!("{}/stats", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["users"][0]["user"], stats.users[0].user.as_str());
    assert_eq!(v["traceparents"][1]["traceparent"], tp);
}

/// Per-user concurrency: two overlapping answers of one user (one JSON, one streamed) and one of
/// another are counted apart, and each ends when its answer (or stream) does.
#[tokio::test]
async fn per_user_concurrency() {
    let sim = sim(SimConfig::default().with_llm_answer_latency_ms(400)).await;
    let c = client();
    let req = |user: &str, stream: bool| {
        let mut body = rag_request(stream);
        body["user"] = Value::from(user);
        c.post(format!("{}/chat/completions", sim.llm_url()))
            .json(&body)
            .send()
    };
    let (a, b, other) = tokio::join!(req("ua", false), req("ua", true), req("ub", false));
    let b = b.unwrap().text().await.unwrap();
    assert!(b.contains("[DONE]"));
    assert_eq!(a.unwrap().status(), 200);
    assert_eq!(other.unwrap().status(), 200);
    let v: Value = c
        .get(format!("{}/stats", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["llm_users"]["ua"]["total"], 2);
    assert_eq!(v["llm_users"]["ua"]["max_in_flight"], 2);
    assert_eq!(v["llm_users"]["ua"]["in_flight"], 0);
    assert_eq!(v["llm_users"]["ub"]["max_in_flight"], 1);
    // The call log has the three, each answered in at least the 400 ms latency and all
    // overlapping: the same figures, read from start and end times.
    let log: Vec<upstream_sim::LlmCall> = serde_json::from_value(v["llm_calls"].clone()).unwrap();
    assert_eq!(log.len(), 3, "{log:?}");
    for call in &log {
        let end = call.end_ms.expect("ended");
        assert!(end - call.start_ms >= 400, "{call:?}");
    }
    let (from, to) = (0, v["uptime_ms"].as_u64().unwrap());
    use upstream_sim::calls::max_concurrent;
    assert_eq!(max_concurrent(&log, from, to, |_| true), 3);
    assert_eq!(max_concurrent(&log, from, to, |c| c.user == "ua"), 2);
}

#[tokio::test]
async fn models_and_unknown_routes() {
    let sim = sim(SimConfig::default()).await;
    let c = client();
    let v: Value = c
        .get(format!("{}/models", sim.llm_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    let resp = c
        .post(format!("{}/embeddings", sim.llm_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Invalid URL")
    );
}

#[tokio::test]
async fn aborted_stream_breaks_without_done() {
    let sim = sim(SimConfig::default().with_llm_chunk_delay_ms(1)).await;
    sim.set(|s| s.llm_stream_abort_rate = 1.0).unwrap();
    let resp = client()
        .post(format!("{}/chat/completions", sim.llm_url()))
        .json(&rag_request(true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let mut broke = false;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(b) => text.push_str(&String::from_utf8_lossy(&b)),
            Err(_) => {
                broke = true;
                break;
            }
        }
    }
    assert!(broke, "the body must end in an error");
    assert!(text.contains("chat.completion.chunk"));
    assert!(!text.contains("[DONE]") && !text.contains("\"stop\""));
}
