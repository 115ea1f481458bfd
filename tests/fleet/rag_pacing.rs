//! Outbound pacing across real processes: 9 RAG chats at once on 3 replicas (3 each), each
//! searching PubMed (esearch, then efetch) and Semantic Scholar once, at the default fleet-wide
//! rates (PubMed 3/s, Semantic Scholar 1/s). The simulator's arrival times show at most 3 PubMed
//! requests and 1 Semantic Scholar request in any 1 s window, and the chats are answered from
//! both sources: the load fits in the pacing horizon (9 Semantic Scholar slots 1.1 s apart, within
//! the 10 s a call may wait), so pacing delays calls across processes and drops none.

use serde_json::{Value, json};
use upstream_sim::{Group, StatsSnapshot};

use crate::harness::load::{ip, token};
use crate::harness::{Fleet, FleetOptions, RedisTarget, TestDb, client, serial};

const CHATS: usize = 9;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rag_chats_are_paced_fleet_wide() {
    let _one = serial().await;
    let redis = testkit::RedisServer::start();
    let db = TestDb::create().await;
    let opts = FleetOptions {
        llm_latency_ms: 100,
        ..FleetOptions::new(RedisTarget::Standalone(redis.url()), &db.url)
    };
    let fleet = Fleet::start("rag-pacing", opts).await;
    let c = client();
    let tasks: Vec<_> = (0..CHATS)
        .map(|i| {
            let (c, url) = (c.clone(), fleet.url(i % 3, "/api/chat"));
            tokio::spawn(async move {
                let r = c
                    .post(url)
                    .bearer_auth(token(&format!("rag-pacer-{i}")))
                    .header("x-forwarded-for", ip(i))
                    .json(&json!({"message": format!("ACE inhibitors and kidney outcomes {i}"), "useRAG": true}))
                    .send()
                    .await
                    .expect("chat");
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap_or(Value::Null))
            })
        })
        .collect();
    let mut from_both = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
        let answer = body["answer"].as_str().unwrap_or_default();
        from_both += usize::from(!answer.starts_with("Note: "));
    }
    let stats: StatsSnapshot = serde_json::from_value(fleet.sim.stats().await).unwrap();
    let (pubmed, s2) = (stats.group(Group::Pubmed), stats.group(Group::S2));
    let gaps = |ts: &[u64]| ts.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>();
    eprintln!(
        "rag pacing: {from_both} of {CHATS} from both sources; PubMed {} requests, gaps {:?}; \
         Semantic Scholar {}, gaps {:?}",
        pubmed.total,
        gaps(&pubmed.timestamps_ms),
        s2.total,
        gaps(&s2.timestamps_ms)
    );
    assert!(
        from_both >= CHATS - 1,
        "only {from_both} of {CHATS} chats were answered from both sources"
    );
    assert!(
        pubmed.total >= 2 * (CHATS as u64 - 1),
        "PubMed saw {}",
        pubmed.total
    );
    assert!(
        s2.total >= CHATS as u64 - 1,
        "Semantic Scholar saw {}",
        s2.total
    );
    assert!(
        pubmed.max_in_window(1000) <= 3,
        "PubMed saw {} requests within one second",
        pubmed.max_in_window(1000)
    );
    assert!(
        s2.max_in_window(1000) <= 1,
        "Semantic Scholar saw {} requests within one second",
        s2.max_in_window(1000)
    );
}
