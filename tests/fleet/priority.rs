//! Priority across real replicas: with a fleet-wide cap of 2 held by two slow chats, 4 exports,
//! then 4 research requests, then 4 chats queue on the three replicas (in that order, each class
//! spread over all three). When the holders end, the classes are served chat > research > export
//! whatever their arrival: the simulator sees every queued chat's LLM call start before the first
//! PubMed or Semantic Scholar request of the research class, and the two chats queued first are
//! the first two it sees; no export is answered before three research requests were (with 2
//! slots, the last research is granted only after two others ended, and an export only after a
//! third one did).

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::task::JoinHandle;
use upstream_sim::LlmCall;

use crate::harness::admission_keys::AdmissionKeys;
use crate::harness::load::{ip, token};
use crate::harness::{
    Fleet, FleetOptions, RedisTarget, TestDb, client, serial, user_hash, wait_for,
};

const PER_CLASS: usize = 4;

/// `POST {path}` as `user` from address number `n` on replica `n % 3`; (status, when answered).
fn send(
    fleet: &Fleet,
    path: &'static str,
    user: String,
    n: usize,
    body: serde_json::Value,
) -> JoinHandle<(u16, Instant)> {
    let (c, url) = (client(), fleet.url(n % 3, path));
    tokio::spawn(async move {
        let r = c
            .post(url)
            .bearer_auth(token(&user))
            .header("x-forwarded-for", ip(n))
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let _ = r.bytes().await;
        (status, Instant::now())
    })
}

/// Waits until the fleet's queue of `class` (0 chat, 1 research, 2 export) holds `n` waiters.
async fn queued(keys: &str, class: usize, n: usize) {
    let reached = wait_for(Duration::from_secs(20), || async {
        let mut k = AdmissionKeys::open(keys).await;
        (k.queued(class).await == n).then_some(())
    })
    .await;
    assert!(reached.is_some(), "never {n} waiters in class {class}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn classes_are_served_by_priority_across_replicas() {
    let _one = serial().await;
    let redis = testkit::RedisServer::start();
    let db = TestDb::create().await;
    // The holders' answers take long enough for every waiter to queue behind them.
    let opts = FleetOptions {
        llm_latency_ms: 8000,
        ..FleetOptions::new(RedisTarget::Standalone(redis.url()), &db.url)
    }
    .env("FLEETGATE_MAX_CONCURRENT_GLOBAL", 2)
    .env("FLEETGATE_MAX_CONCURRENT_PER_USER", 1);
    let fleet = Fleet::start("priority", opts).await;
    let chat = |q: &str| json!({"message": q, "useRAG": false});
    let holders: Vec<_> = (0..2)
        .map(|k| {
            send(
                &fleet,
                "/api/chat",
                format!("prio-holder-{k}"),
                100 + k,
                chat("hold"),
            )
        })
        .collect();
    let full = wait_for(Duration::from_secs(20), || async {
        (fleet.sim.llm_in_flight().await.0 == 2).then_some(())
    })
    .await;
    assert!(full.is_some(), "the holders never reached the LLM");
    // What comes next answers at once.
    fleet
        .sim
        .control(json!({"llm_answer_latency_ms": 300}))
        .await;
    let released_ms = fleet.sim.now_ms().await;

    let mut exports = Vec::new();
    for k in 0..PER_CLASS {
        let body = json!({"conversationId": uuid_like(k), "format": "json"});
        exports.push(send(
            &fleet,
            "/api/export",
            format!("prio-export-{k}"),
            k,
            body,
        ));
    }
    queued(&redis.url(), 2, PER_CLASS).await;
    let mut research = Vec::new();
    for k in 0..PER_CLASS {
        let body = json!({"query": format!("statin myopathy {k}"), "limit": 3});
        research.push(send(
            &fleet,
            "/api/research",
            format!("prio-research-{k}"),
            10 + k,
            body,
        ));
    }
    queued(&redis.url(), 1, PER_CLASS).await;
    let mut chats = Vec::new();
    for k in 0..PER_CLASS {
        // One at a time, so their order in the queue is known.
        chats.push(send(
            &fleet,
            "/api/chat",
            format!("prio-chat-{k}"),
            20 + k,
            chat("q"),
        ));
        queued(&redis.url(), 0, k + 1).await;
    }

    for h in holders {
        assert_eq!(h.await.unwrap().0, 200);
    }
    let mut answered = Vec::new();
    for (class, tasks) in [("chat", chats), ("research", research), ("export", exports)] {
        for t in tasks {
            let (status, at) = t.await.unwrap();
            // Exports name conversations nobody has: answered 404 once their turn came.
            let expected = if class == "export" { 404 } else { 200 };
            assert_eq!(status, expected, "{class}");
            answered.push((class, at));
        }
    }
    let stats = fleet.sim.stats().await;
    let calls: Vec<LlmCall> = serde_json::from_value(stats["llm_calls"].clone()).unwrap();
    let chat_users: Vec<String> = (0..PER_CLASS)
        .map(|k| user_hash(&format!("prio-chat-{k}")))
        .collect();
    let mut chat_starts: Vec<(u64, usize)> = calls
        .iter()
        .filter_map(|c| {
            let k = chat_users.iter().position(|u| *u == c.user)?;
            Some((c.start_ms, k))
        })
        .collect();
    chat_starts.sort_unstable();
    let first_research = ["pubmed", "s2"]
        .iter()
        .filter_map(|g| {
            stats["groups"][g]["timestamps_ms"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(serde_json::Value::as_u64)
                .find(|t| *t >= released_ms)
        })
        .min();
    eprintln!(
        "priority: chat LLM starts (ms, queue order) {chat_starts:?}, first research upstream call \
         at {first_research:?} ms"
    );
    assert_eq!(
        chat_starts.len(),
        PER_CLASS,
        "every chat reached the LLM once"
    );
    let first_research = first_research.expect("research reached PubMed / Semantic Scholar");
    let last_chat = chat_starts.last().unwrap().0;
    assert!(
        last_chat < first_research,
        "a chat started at the LLM at {last_chat} ms, after research reached its upstreams at \
         {first_research} ms"
    );
    let mut first_two: Vec<usize> = chat_starts[..2].iter().map(|(_, k)| *k).collect();
    first_two.sort_unstable();
    assert_eq!(
        first_two,
        [0, 1],
        "FIFO within the chat class: {chat_starts:?}"
    );
    let research_done: Vec<Instant> = answered
        .iter()
        .filter(|(c, _)| *c == "research")
        .map(|(_, at)| *at)
        .collect();
    for (_, at) in answered.iter().filter(|(c, _)| *c == "export") {
        let before = research_done.iter().filter(|r| *r < at).count();
        assert!(
            before >= 3,
            "an export was answered when only {before} research requests were"
        );
    }
}

/// A well-formed conversation id that nobody owns.
fn uuid_like(k: usize) -> String {
    format!("00000000-0000-4000-8000-{k:012}")
}
