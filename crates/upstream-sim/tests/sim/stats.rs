//! `/stats`: counts, statuses, in-flight and max concurrency, timestamps, reset, bounds.

use std::time::Duration;

use serde_json::Value;
use upstream_sim::{Endpoint, Group, SimConfig, StatsSnapshot};

use crate::common::{client, eventually, get, post, sim};

#[tokio::test]
async fn counts_requests_per_endpoint_and_group() {
    let sim = sim(SimConfig::default()).await;
    let c = client();
    for _ in 0..3 {
        get(
            &c,
            &format!("{}/esearch.fcgi?term=asthma", sim.pubmed_url()),
        )
        .await;
    }
    get(&c, &format!("{}/esummary.fcgi?id=abc", sim.pubmed_url())).await;
    get(&c, &format!("{}/paper/search?query=asthma", sim.s2_url())).await;
    let (status, v) = get(&c, &format!("{}/stats", sim.base_url())).await;
    assert_eq!(status, 200);
    let s: StatsSnapshot = serde_json::from_value(v).unwrap();
    let es = s.endpoint(Endpoint::PubmedEsearch);
    assert_eq!(
        (es.total, es.status(200), es.in_flight, es.max_in_flight),
        (3, 3, 0, 1)
    );
    assert_eq!(es.timestamps_ms.len(), 3);
    assert!(es.timestamps_ms.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(s.endpoint(Endpoint::PubmedEsummary).status(400), 1);
    let pm = s.group(Group::Pubmed);
    assert_eq!((pm.total, pm.status(200), pm.status(400)), (4, 3, 1));
    assert_eq!(s.group(Group::S2).total, 1);
    assert_eq!(s.group(Group::Llm).total, 0);
    // Control and stats routes are not counted.
    assert_eq!(s.groups.values().map(|g| g.total).sum::<u64>(), 5);

    let resp = c
        .post(format!("{}/stats/reset", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let s = sim.stats();
    assert_eq!(s.group(Group::Pubmed), Default::default());
    assert!(s.endpoints.contains_key("llm.chat"));
}

/// Ten slow requests at once: the simulator sees exactly ten in flight, then none.
#[tokio::test]
async fn max_concurrency_under_ten_slow_requests() {
    let sim = sim(SimConfig::default().with_latency(Group::Pubmed, 1000, 0)).await;
    let c = client();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (c, url) = (
            c.clone(),
            format!("{}/esearch.fcgi?term=asthma&retmode=json", sim.pubmed_url()),
        );
        tasks.push(tokio::spawn(async move {
            c.get(url).send().await.unwrap().status().as_u16()
        }));
    }
    let state = sim.state().clone();
    assert!(eventually(|| state.stats().group(Group::Pubmed).in_flight == 10).await);
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let s = sim.stats();
    let es = s.endpoint(Endpoint::PubmedEsearch);
    assert_eq!(
        (es.total, es.status(200), es.in_flight, es.max_in_flight),
        (10, 10, 0, 10)
    );
    assert_eq!(s.group(Group::Pubmed).max_in_flight, 10);
}

/// A stream counts as in flight until its last chunk.
#[tokio::test]
async fn streams_stay_in_flight_until_done() {
    let sim = sim(SimConfig::default().with_llm_chunk_delay_ms(30)).await;
    let c = client();
    let body = serde_json::json!({ "model": "m", "stream": true, "messages": [{ "role": "user", "content": "Is aspirin useful after stroke?" }] });
    let resp = c
        .post(format!("{}/chat/completions", sim.llm_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let during = sim.stats().endpoint(Endpoint::LlmChat);
    assert_eq!((during.in_flight, during.status(200)), (1, 1));
    let text = resp.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    let state = sim.state().clone();
    assert!(eventually(|| state.stats().endpoint(Endpoint::LlmChat).in_flight == 0).await);
    assert_eq!(sim.stats().endpoint(Endpoint::LlmChat).dropped, 0);
}

/// Arrival timestamps let a test check pacing: spaced requests never exceed 3 per second.
#[tokio::test]
async fn timestamps_show_pacing() {
    let sim = sim(SimConfig::default()).await;
    let c = client();
    for _ in 0..4 {
        get(
            &c,
            &format!("{}/esearch.fcgi?term=asthma", sim.pubmed_url()),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let spaced = sim.stats().group(Group::Pubmed);
    assert_eq!(spaced.timestamps_ms.len(), 4);
    assert!(
        spaced.max_in_window(1000) <= 3,
        "{:?}",
        spaced.timestamps_ms
    );
    sim.reset_stats();
    for _ in 0..5 {
        get(
            &c,
            &format!("{}/esearch.fcgi?term=asthma", sim.pubmed_url()),
        )
        .await;
    }
    assert_eq!(sim.stats().group(Group::Pubmed).max_in_window(1000), 5);
}

#[tokio::test]
async fn ring_buffers_are_bounded() {
    let sim = sim(SimConfig {
        stats_capacity: 5,
        ..SimConfig::default()
    })
    .await;
    let c = client();
    for i in 0..8 {
        let body = serde_json::json!({ "model": "m", "user": format!("u{i}"), "messages": [{ "role": "user", "content": "q" }] });
        let resp = c
            .post(format!("{}/chat/completions", sim.llm_url()))
            .header("traceparent", format!("tp{i}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let s = sim.stats();
    let llm = s.group(Group::Llm);
    assert_eq!((llm.total, llm.timestamps_ms.len()), (8, 5));
    let users: Vec<&str> = s.users.iter().map(|u| u.user.as_str()).collect();
    assert_eq!(users, ["u3", "u4", "u5", "u6", "u7"]);
    assert_eq!(s.traceparents.len(), 5);
    let (_, v) = post(
        &c,
        &format!("{}/control/reset", sim.base_url()),
        &Value::Null,
    )
    .await;
    assert!(v.is_object());
    assert!(sim.stats().users.is_empty());
}
