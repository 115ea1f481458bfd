//! Free answers: getting answer text without the daily quota paying for it. The observer is the
//! `user_profiles` row in PostgreSQL and the simulator's count of LLM calls.

use serde_json::json;

use crate::harness::serial;
use crate::support::{Replica, ask, deltas};

/// A question with U+0000 used to stream every delta, then fail to store (PostgreSQL refuses the
/// NUL) and refund the query. Now it is refused before anything is spent or generated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_are_refused_before_anything_is_spent() {
    let _s = serial().await;
    let r = Replica::start("nul", &[]).await;
    let (status, events) = r
        .chat_stream("alice", ask("does metformin\u{0} reduce mortality?", true))
        .await;
    assert_eq!(status, 400, "streamed answer with a NUL: {events:?}");
    assert!(deltas(&events).is_empty());
    for bad in [
        "escape \u{1b}[31m",
        "bell \u{7}",
        "c1 \u{85}",
        "carriage \r return",
    ] {
        let resp = r.chat("alice", "198.51.100.1", ask(bad, false)).await;
        assert_eq!(resp.status(), 400, "{bad:?}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "invalid_request", "{body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("control character")
        );
    }
    assert_eq!(r.queries_used("alice").await, 0, "nothing was spent");
    assert_eq!(r.llm_requests().await, 0, "nothing was generated");
    // Tab and newline are text.
    let ok = r
        .chat("alice", "198.51.100.1", ask("line one\n\tline two", false))
        .await;
    assert_eq!(ok.status(), 200);
    assert_eq!(r.queries_used("alice").await, 1);
}

/// A stream cut off after some answer text used to be refunded as an upstream failure. The text
/// was delivered: the query stays spent. The same failure without any text delivered (a JSON
/// reply, which is all or nothing) is still given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_text_once_sent_is_never_refunded() {
    let _s = serial().await;
    let r = Replica::start("partial", &[]).await;
    r.sim
        .control(json!({"llm_stream_abort_rate": 1.0, "llm_answer_pad_words": 60}))
        .await;
    let (status, events) = r
        .chat_stream("bob", ask("explain beta blockers in heart failure", false))
        .await;
    assert_eq!(status, 200);
    assert!(
        !deltas(&events).is_empty(),
        "text reached the client: {events:?}"
    );
    assert_eq!(
        events.last().map(|e| e.0.as_str()),
        Some("error"),
        "{events:?}"
    );
    assert_eq!(r.queries_used("bob").await, 1, "text was sent: no refund");

    let resp = r
        .chat("carol", "198.51.100.2", ask("explain beta blockers", false))
        .await;
    assert_eq!(resp.status(), 503);
    assert_eq!(
        r.queries_used("carol").await,
        0,
        "nothing was sent: refunded"
    );
}

/// Storing the answer fails after it was streamed: the failure is ours (`service_unavailable`,
/// the LLM breaker untouched), and the streamed text is not given away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_failure_is_ours_and_keeps_the_query() {
    let _s = serial().await;
    let r = Replica::start("storage", &[]).await;
    let mut c = r.db.connect().await;
    sqlx::query("ALTER TABLE messages ADD CONSTRAINT no_answers CHECK (role <> 'assistant')")
        .execute(&mut c)
        .await
        .unwrap();
    let (status, events) = r
        .chat_stream("dave", ask("statins after stroke", false))
        .await;
    assert_eq!(status, 200);
    assert!(!deltas(&events).is_empty());
    let (name, problem) = events.last().cloned().unwrap();
    assert_eq!(name, "error");
    assert_eq!(problem["code"], "service_unavailable", "{problem}");
    assert_eq!(r.queries_used("dave").await, 1);
    assert_eq!(r.llm_breaker().await, "closed");
}
