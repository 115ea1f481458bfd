//! The real assistant end to end: HTTP → every layer → RAG over the simulator's PubMed and
//! Semantic Scholar → the simulator's LLM → conversations and exports in PostgreSQL. The same
//! over server-sent events is in `streaming.rs`.
#![allow(clippy::unwrap_used)]
mod common;

use common::TestDb;
use common::rag_fleet::{post, replica, start};
use serde_json::{Value, json};
use upstream_sim::{Group, RunningSim, SimConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rag_chat_cites_what_the_simulator_returned_and_conversations_export() {
    let f = start().await;
    let resp = post(
        &f,
        "/api/chat",
        "alice",
        json!({"message": "Does metformin reduce cardiovascular events in diabetes?", "useRAG": true}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let citations = body["citations"].as_array().unwrap();
    assert!(!citations.is_empty(), "{body}");
    let corpus = f.sim.state().corpus();
    for c in citations {
        let id = c["id"].as_str().unwrap();
        let paper = match c["source"].as_str().unwrap() {
            "pubmed" => corpus
                .papers()
                .iter()
                .find(|p| p.pmid.map(|n| n.to_string()).as_deref() == Some(id)),
            "semantic_scholar" => corpus.papers().iter().find(|p| p.s2_id == id),
            other => panic!("unknown source {other}"),
        }
        .expect("every citation is a paper the simulator served");
        assert_eq!(c["title"].as_str().unwrap(), paper.title);
    }
    let answer = body["answer"].as_str().unwrap();
    assert!(answer.contains("[1]"), "{answer}");
    assert_eq!(body["queriesRemaining"], 2);
    let conv = body["conversationId"].as_str().unwrap().to_string();

    // Continue the conversation; the earlier turn goes into the prompt.
    let resp = post(
        &f,
        "/api/chat",
        "alice",
        json!({"message": "And in elderly patients?", "useRAG": false, "conversationId": conv}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let second: Value = resp.json().await.unwrap();
    assert_eq!(second["conversationId"], conv.as_str());

    // Export for the owner: every citation appears; another user gets 404.
    let md = post(
        &f,
        "/api/export",
        "alice",
        json!({"conversationId": conv, "format": "markdown"}),
    )
    .await;
    assert_eq!(md.status(), 200);
    let md = md.text().await.unwrap();
    for c in citations {
        assert!(md.contains(c["url"].as_str().unwrap()), "{md}");
    }
    let bib = post(
        &f,
        "/api/export",
        "alice",
        json!({"conversationId": conv, "format": "bibtex"}),
    )
    .await;
    assert_eq!(bib.status(), 200);
    assert_eq!(
        bib.text().await.unwrap().matches("@article{").count(),
        citations.len()
    );
    let theft = post(
        &f,
        "/api/export",
        "mallory",
        json!({"conversationId": conv, "format": "json"}),
    )
    .await;
    assert_eq!(theft.status(), 404);
    // Nor can another user continue it.
    let theft = post(
        &f,
        "/api/chat",
        "mallory",
        json!({"message": "hi", "useRAG": false, "conversationId": conv}),
    )
    .await;
    assert_eq!(theft.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_down_still_answers_and_says_so() {
    let f = start().await;
    f.sim
        .set(|s| s.faults_mut(Group::Pubmed).error_rate = 1.0)
        .unwrap();
    let resp = post(
        &f,
        "/api/chat",
        "bob",
        json!({"message": "aspirin and stroke prevention", "useRAG": true}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["answer"]
            .as_str()
            .unwrap()
            .starts_with("Note: PubMed could not be searched"),
        "{body}"
    );
    let citations = body["citations"].as_array().unwrap();
    assert!(!citations.is_empty());
    assert!(citations.iter().all(|c| c["source"] == "semantic_scholar"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_down_is_503_and_the_query_is_refunded() {
    let f = start().await;
    f.sim
        .set(|s| s.faults_mut(Group::Llm).error_rate = 1.0)
        .unwrap();
    let resp = post(
        &f,
        "/api/chat",
        "carol",
        json!({"message": "statins in the elderly", "useRAG": true}),
    )
    .await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(common::problem_code(resp).await, "upstream_unavailable");
    // Refunded: all three daily queries are still there.
    assert_eq!(f.server.state.quota().remaining("carol").await.unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn research_returns_merged_papers() {
    let f = start().await;
    let resp = post(
        &f,
        "/api/research",
        "dave",
        json!({"query": "hypertension ACE inhibitors", "limit": 10}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let papers = body["papers"]
        .as_array()
        .or_else(|| body.as_array())
        .unwrap();
    assert!(!papers.is_empty() && papers.len() <= 10, "{body}");
    let mut sources: Vec<&str> = papers
        .iter()
        .map(|p| p["source"].as_str().unwrap())
        .collect();
    sources.sort();
    sources.dedup();
    assert_eq!(
        sources,
        ["pubmed", "semantic_scholar"],
        "both sources merged"
    );
}

/// Pacing holds end to end: 3 replicas x 3 concurrent RAG chats, each searching PubMed (esearch,
/// efetch) and Semantic Scholar once. The simulator (the independent observer) never sees more
/// than 3 PubMed requests in any second, nor more than 1 Semantic Scholar request (25 ms
/// tolerance for arrival timestamps), and yet the chats are answered from both sources: the
/// load fits in the pacing horizon (9 Semantic Scholar slots 1.1 s apart, within 10 s), so
/// pacing delays calls and drops none (a chat whose slot would be too far answers without that
/// source, with a note).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pacing_holds_end_to_end_across_replicas() {
    let sim = upstream_sim::spawn(SimConfig::default()).await.unwrap();
    let db = TestDb::create().await;
    let prefix = testkit::unique_prefix("pipepace");
    let mut servers = Vec::new();
    for _ in 0..3 {
        let mut cfg = common::config(&db, &prefix);
        // Contract defaults for pacing (3/s, 1/s); every chat comes from one test IP and a
        // distinct user, so lift the per-IP window out of the way.
        cfg.limits.chat_per_ip_per_min = 10_000;
        servers.push(replica(&sim, cfg).await);
    }
    let client = common::client();
    const CHATS: usize = 9;
    let mut tasks = Vec::new();
    for i in 0..CHATS {
        let url = servers[i % 3].url("/api/chat");
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(common::token(&format!("pacer-{i}")))
                .json(&json!({"message": format!("beta blockers heart failure outcomes {i}"), "useRAG": true}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }));
    }
    let mut from_both = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
        let answer = body["answer"].as_str().unwrap();
        from_both += usize::from(!answer.starts_with("Note: "));
    }
    let ((pubmed, pubmed_max), (s2, s2_max)) = f_stats(&sim);
    assert!(
        from_both >= CHATS - 1,
        "only {from_both} of {CHATS} chats were answered from both sources"
    );
    assert!(pubmed >= 2 * (CHATS - 1), "PubMed saw {pubmed} requests");
    assert!(s2 >= CHATS - 1, "Semantic Scholar saw {s2} requests");
    assert!(
        pubmed_max <= 3,
        "PubMed saw {pubmed_max} requests within one second"
    );
    assert!(
        s2_max <= 1,
        "Semantic Scholar saw {s2_max} requests within one second"
    );
}

/// (requests, most requests in any 975 ms window) for PubMed and Semantic Scholar.
fn f_stats(sim: &RunningSim) -> ((usize, usize), (usize, usize)) {
    let s = sim.stats();
    let pm = s.group(Group::Pubmed);
    let s2 = s.group(Group::S2);
    (
        (pm.timestamps_ms.len(), pm.max_in_window(975)),
        (s2.timestamps_ms.len(), s2.max_in_window(975)),
    )
}
