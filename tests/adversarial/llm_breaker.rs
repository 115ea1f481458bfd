//! The LLM breaker is shared by every replica; only the upstream's faults may open it. Long
//! answers used to be requested whole with a per-attempt timeout: a few requests for long answers
//! timed out, were retried three times (three generations each), refunded, and opened the breaker
//! for everyone. The simulator counts the requests that reached it and records what they asked.

use serde_json::json;

use crate::harness::serial;
use crate::support::{Replica, ask};

/// Answers that take three times the upstream timeout to generate, with chunks well within it:
/// every one succeeds, once, and the breaker stays closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_answers_do_not_open_the_llm_breaker() {
    let _s = serial().await;
    let r = Replica::start(
        "longanswer",
        &[
            ("FLEETGATE_UPSTREAM_TIMEOUT_MS", "1500"),
            ("FLEETGATE_BREAKER_FAILURE_THRESHOLD", "3"),
        ],
    )
    .await;
    // ~45 words at 100 ms each: about 4.5 s per answer.
    r.sim
        .control(json!({"llm_token_ms": 100, "llm_chunk_delay_ms": 0, "llm_answer_pad_words": 45}))
        .await;
    let users = ["judy", "ken", "liam"];
    let asks = users.iter().enumerate().map(|(i, u)| {
        let r = &r;
        async move {
            r.chat(
                u,
                &format!("198.51.100.{}", 20 + i),
                ask("a thorough answer on hypertension", false),
            )
            .await
        }
    });
    let replies = futures_util::future::join_all(asks).await;
    for (u, resp) in users.iter().zip(replies) {
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(status, 200, "{u}: {body}");
        assert!(body["answer"].as_str().unwrap().split_whitespace().count() >= 45);
        assert_eq!(r.queries_used(u).await, 1, "{u}: the answer was paid for");
    }
    assert_eq!(
        r.llm_requests().await,
        3,
        "one generation per answer, no retries"
    );
    assert_eq!(r.llm_breaker().await, "closed");
}

/// Every LLM request carries `max_tokens`, and the answer respects it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_llm_request_is_capped_by_max_tokens() {
    let _s = serial().await;
    let r = Replica::start("maxtokens", &[("FLEETGATE_LLM_MAX_TOKENS", "40")]).await;
    r.sim.control(json!({"llm_answer_pad_words": 500})).await;
    let resp = r
        .chat("mia", "198.51.100.30", ask("tell me everything", false))
        .await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    let words = body["answer"].as_str().unwrap().split_whitespace().count();
    assert!(words <= 40, "{words} words");
    let prompts = r.prompts().await;
    assert!(!prompts.is_empty());
    for p in &prompts {
        assert_eq!(p["max_tokens"], 40, "{p}");
        assert_eq!(
            p["stream"], true,
            "answers are always streamed from the LLM"
        );
    }
}

/// The positive control: an LLM that does not produce a first token in time is failing, and
/// that does count (here, with a threshold of 2, two such calls open the breaker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_first_token_in_time_counts_against_the_breaker() {
    let _s = serial().await;
    let r = Replica::start(
        "firsttoken",
        &[
            ("FLEETGATE_UPSTREAM_TIMEOUT_MS", "800"),
            ("FLEETGATE_BREAKER_FAILURE_THRESHOLD", "2"),
        ],
    )
    .await;
    r.sim.control(json!({"llm_answer_latency_ms": 3000})).await;
    for (i, u) in ["noah", "olga"].iter().enumerate() {
        let resp = r
            .chat(u, &format!("198.51.100.{}", 40 + i), ask("anything", false))
            .await;
        assert_eq!(resp.status(), 504, "{u}");
        assert_eq!(
            r.queries_used(u).await,
            0,
            "{u}: nothing was sent, refunded"
        );
    }
    assert_eq!(r.llm_breaker().await, "open");
    let resp = r.chat("pia", "198.51.100.50", ask("anything", false)).await;
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "upstream_unavailable");
}
