//! The real upstream clients against the simulator (which speaks the public APIs' protocols),
//! through real breakers and pacing in Redis; and against a server sending garbage.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use breaker_store::{Breakers, BreakersConfig, Outbound, OutboundConfig, RetryPolicy};
use chat::prompt::build_messages;
use chat::retrieval::Retriever;
use chat::upstream::{
    ChatMessage, LlmClient, LlmConfig, PubMedClient, PubMedConfig, SemanticScholarClient,
    SemanticScholarConfig, Source, UpstreamError, http_client, service,
};
use limiter_core::{RedisConfig, RedisHandle};
use upstream_sim::{Group, SimConfig};

struct Clients {
    pubmed: PubMedClient,
    s2: SemanticScholarClient,
    llm: LlmClient,
}

fn outbound(prefix: &str) -> Arc<Outbound> {
    outbound_with(prefix, BreakersConfig::default())
}

fn outbound_with(prefix: &str, config: BreakersConfig) -> Arc<Outbound> {
    let redis = RedisHandle::new(&RedisConfig {
        url: testkit::redis_url(),
        prefix: prefix.into(),
        ..RedisConfig::default()
    })
    .unwrap();
    let breakers = Breakers::new(redis, config).unwrap();
    Arc::new(Outbound::new(
        breakers,
        OutboundConfig {
            timeout: Duration::from_secs(5),
            retry: RetryPolicy {
                base: Duration::from_millis(20),
                ..RetryPolicy::default()
            },
            ..OutboundConfig::default()
        },
    ))
}

fn clients(pubmed: &str, s2: &str, llm: &str, prefix: &str) -> Clients {
    clients_with(pubmed, s2, llm, outbound(prefix))
}

fn clients_with(pubmed: &str, s2: &str, llm: &str, out: Arc<Outbound>) -> Clients {
    let http = http_client(Duration::from_secs(2));
    Clients {
        pubmed: PubMedClient::new(
            http.clone(),
            Arc::clone(&out),
            PubMedConfig {
                base_url: pubmed.into(),
                api_key: None,
                tool: "fleetgate-test".into(),
                email: None,
            },
        ),
        s2: SemanticScholarClient::new(
            http.clone(),
            Arc::clone(&out),
            SemanticScholarConfig {
                base_url: s2.into(),
                api_key: None,
            },
        ),
        llm: LlmClient::new(
            http,
            out,
            LlmConfig {
                base_url: llm.into(),
                model: "sim-1".into(),
                api_key: None,
                timeout: Duration::from_secs(5),
                ..LlmConfig::default()
            },
        ),
    }
}

#[tokio::test]
async fn searches_return_relevant_papers_and_merge_across_sources() {
    let sim = upstream_sim::spawn(SimConfig::default()).await.unwrap();
    let c = clients(
        &sim.pubmed_url(),
        &sim.s2_url(),
        &sim.llm_url(),
        &testkit::unique_prefix("upsearch"),
    );
    let pm = c.pubmed.search("metformin OR diabetes", 10).await.unwrap();
    assert!(!pm.is_empty());
    for p in &pm {
        assert_eq!(p.source, Source::Pubmed);
        assert!(p.pmid.is_some() && !p.title.is_empty());
        let text = format!("{} {}", p.title, p.abstract_text).to_lowercase();
        assert!(
            text.contains("metformin") || text.contains("diabetes"),
            "{text}"
        );
    }
    let s2 = c.s2.search("metformin diabetes", 10).await.unwrap();
    assert!(!s2.is_empty());

    let retriever = Retriever::new(c.pubmed.clone(), c.s2.clone());
    let r = retriever
        .search("Does metformin reduce mortality in type 2 diabetes?", 50)
        .await
        .unwrap();
    assert!(r.unavailable.is_empty());
    // No two results are the same work.
    for (i, a) in r.papers.iter().enumerate() {
        for b in &r.papers[i + 1..] {
            assert!(a.pmid.is_none() || a.pmid != b.pmid, "duplicate pmid");
            assert!(a.doi.is_none() || a.doi != b.doi, "duplicate doi");
        }
    }
    let top = format!("{} {}", r.papers[0].title, r.papers[0].abstract_text).to_lowercase();
    assert!(top.contains("metformin"), "{top}");
}

#[tokio::test]
async fn llm_answers_cite_the_sources_and_the_user_id_is_hashed() {
    let sim = upstream_sim::spawn(SimConfig::default()).await.unwrap();
    let c = clients(
        &sim.pubmed_url(),
        &sim.s2_url(),
        &sim.llm_url(),
        &testkit::unique_prefix("upllm"),
    );
    let retriever = Retriever::new(c.pubmed.clone(), c.s2.clone());
    let r = retriever
        .retrieve("statin therapy and stroke")
        .await
        .unwrap();
    assert!(r.papers.len() >= 2);
    let msgs = build_messages("statin therapy and stroke", &r.papers, &r.unavailable, &[]);
    let pseudonym = api::auth::pseudonym::Pseudonymizer::with_key(b"k").pseudonym("user-1");
    let answer = c.llm.complete(&msgs, &pseudonym).await.unwrap();
    assert!(answer.contains("[1]") && answer.contains("[2]"), "{answer}");
    let users = sim.stats().users;
    assert!(users.iter().any(|u| u.user == pseudonym));
    assert!(!users.iter().any(|u| u.user.contains("user-1")));
}

#[tokio::test]
async fn stream_relays_deltas_before_the_end() {
    let sim = upstream_sim::spawn(SimConfig::default().with_llm_chunk_delay_ms(15))
        .await
        .unwrap();
    let c = clients(
        &sim.pubmed_url(),
        &sim.s2_url(),
        &sim.llm_url(),
        &testkit::unique_prefix("upstream"),
    );
    let msgs = vec![ChatMessage::new(
        "user",
        "Explain beta blockers in heart failure.",
    )];
    let started = Instant::now();
    let mut rx = c.llm.stream(&msgs, "u").await.unwrap();
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(d) = rx.recv().await {
        text.push_str(&d.unwrap());
        arrivals.push(started.elapsed());
    }
    assert!(arrivals.len() >= 5, "{} deltas", arrivals.len());
    // The first delta came well before the last: relayed, not buffered.
    assert!(arrivals[arrivals.len() - 1] - arrivals[0] >= Duration::from_millis(15 * 3));
    assert!(!text.is_empty());
}

#[tokio::test]
async fn dropping_the_stream_cancels_the_upstream_call() {
    let sim = upstream_sim::spawn(SimConfig::default().with_llm_chunk_delay_ms(50))
        .await
        .unwrap();
    let c = clients(
        &sim.pubmed_url(),
        &sim.s2_url(),
        &sim.llm_url(),
        &testkit::unique_prefix("upcancel"),
    );
    let msgs = vec![ChatMessage::new(
        "user",
        "A long answer please about hypertension.",
    )];
    let mut rx = c.llm.stream(&msgs, "u").await.unwrap();
    rx.recv().await.unwrap().unwrap();
    drop(rx);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let llm = sim.stats().group(Group::Llm).clone();
        if llm.in_flight == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "upstream stream still open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn one_source_down_still_retrieves_from_the_other() {
    let sim = upstream_sim::spawn(SimConfig::default()).await.unwrap();
    sim.set(|s| s.faults_mut(Group::Pubmed).error_rate = 1.0)
        .unwrap();
    let c = clients(
        &sim.pubmed_url(),
        &sim.s2_url(),
        &sim.llm_url(),
        &testkit::unique_prefix("uphalf"),
    );
    let r = Retriever::new(c.pubmed.clone(), c.s2.clone())
        .retrieve("aspirin primary prevention")
        .await
        .unwrap();
    assert_eq!(r.unavailable, [service::PUBMED]);
    assert!(!r.papers.is_empty());
    assert!(r.papers.iter().all(|p| p.source == Source::SemanticScholar));
    // Both down: an error, not an empty answer.
    sim.set(|s| s.faults_mut(Group::S2).error_rate = 1.0)
        .unwrap();
    let err = Retriever::new(c.pubmed.clone(), c.s2.clone())
        .retrieve("aspirin primary prevention")
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Unavailable { .. }), "{err:?}");
}

/// A server that answers every request with the next body of a list of hostile bodies.
async fn garbage_server(bodies: Vec<(u16, Vec<u8>)>) -> (String, Arc<AtomicUsize>) {
    let n = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(bodies);
    let counter = Arc::clone(&n);
    let app = axum::Router::new().fallback(move || {
        let (n, bodies) = (Arc::clone(&counter), Arc::clone(&bodies));
        async move {
            let i = n.fetch_add(1, Ordering::SeqCst) % bodies.len();
            let (status, body) = bodies[i].clone();
            (axum::http::StatusCode::from_u16(status).unwrap(), body)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), n)
}

#[tokio::test]
async fn fuzzed_upstream_bodies_never_panic() {
    let mut bodies: Vec<(u16, Vec<u8>)> = vec![
        (200, b"".to_vec()),
        (200, b"{".to_vec()),
        (200, b"null".to_vec()),
        (200, br#"{"esearchresult":{"idlist":[1,2]}}"#.to_vec()),
        (200, br#"{"data":[{"paperId":null}]}"#.to_vec()),
        (200, br#"{"choices":[{"message":{}}]}"#.to_vec()),
        (
            200,
            b"<PubmedArticleSet><PubmedArticle><MedlineCitation><PMID>1".to_vec(),
        ),
        (
            200,
            b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {trunc".to_vec(),
        ),
        (200, vec![0xff; 1000]),
        (500, b"oops".to_vec()),
        (404, b"nope".to_vec()),
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..40 {
        let len = (seed % 300) as usize;
        let body: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                b"{}[]\":,<>/ data01eaz\n\xff"[(seed % 22) as usize]
            })
            .collect();
        bodies.push((200, body));
    }
    let (url, hits) = garbage_server(bodies).await;
    // A breaker that never trips, so every hostile body reaches the parsers.
    let mut config = BreakersConfig::default();
    config.default_policy.failure_threshold = 1_000_000;
    let c = clients_with(
        &url,
        &url,
        &url,
        outbound_with(&testkit::unique_prefix("upfuzz"), config),
    );
    for _ in 0..60 {
        let _ = c.pubmed.search("x", 5).await;
        let _ = c.s2.search("x", 5).await;
        let _ = c.llm.complete(&[ChatMessage::new("user", "x")], "u").await;
        if let Ok(mut rx) = c.llm.stream(&[ChatMessage::new("user", "x")], "u").await {
            while rx.recv().await.is_some() {}
        }
    }
    assert!(
        hits.load(Ordering::SeqCst) >= 240,
        "every call reached the garbage server"
    );
}
