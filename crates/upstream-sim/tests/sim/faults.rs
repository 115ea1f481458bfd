//! Injected latency, errors, 429s and hangs, set at start, in-process and via `/control`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use upstream_sim::{Faults, Group, SimClock, SimConfig};

use crate::common::{client, eventually, get, post, sim};

#[tokio::test]
async fn error_rate_one_fails_only_its_group() {
    let faults = Faults {
        error_rate: 1.0,
        error_status: 503,
        ..Faults::default()
    };
    let sim = sim(SimConfig::default().with_faults(Group::Pubmed, faults)).await;
    let c = client();
    let (status, v) = get(
        &c,
        &format!(
            "{}/esearch.fcgi?db=pubmed&term=asthma&retmode=json",
            sim.pubmed_url()
        ),
    )
    .await;
    assert_eq!(status, 503);
    assert!(v["error"].is_string(), "{v}");
    let (status, _) = get(&c, &format!("{}/paper/search?query=asthma", sim.s2_url())).await;
    assert_eq!(status, 200);
    // LLM errors are OpenAI-shaped.
    sim.set(|s| s.llm.error_rate = 1.0).unwrap();
    let (status, v) = post(
        &c,
        &format!("{}/chat/completions", sim.llm_url()),
        &json!({"model": "m"}),
    )
    .await;
    assert_eq!(status, 500);
    assert_eq!(v["error"]["type"], "server_error");
    let stats = sim.stats();
    assert_eq!(stats.group(Group::Pubmed).status(503), 1);
    assert_eq!(stats.group(Group::S2).status(200), 1);
}

#[tokio::test]
async fn error_rate_is_a_fraction() {
    let sim = sim(SimConfig::default()).await;
    sim.set(|s| s.s2.error_rate = 0.5).unwrap();
    let c = client();
    let url = format!("{}/paper/search?query=asthma&limit=1", sim.s2_url());
    let mut failed = 0;
    for _ in 0..200 {
        if get(&c, &url).await.0 == 500 {
            failed += 1;
        }
    }
    assert!((60..=140).contains(&failed), "{failed} of 200 failed");
}

#[tokio::test]
async fn throttling_answers_429_with_retry_after() {
    let sim = sim(SimConfig::default()).await;
    sim.set(|s| {
        for g in Group::ALL {
            let f = s.faults_mut(g);
            f.throttle_rate = 1.0;
            f.retry_after_secs = 7;
        }
    })
    .unwrap();
    let c = client();
    for (url, check) in [
        (format!("{}/esearch.fcgi?term=x", sim.pubmed_url()), "error"),
        (format!("{}/paper/search?query=x", sim.s2_url()), "message"),
    ] {
        let resp = c.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "7");
        let v: Value = resp.json().await.unwrap();
        assert!(v[check].is_string(), "{v}");
    }
    let resp = c
        .post(format!("{}/chat/completions", sim.llm_url()))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
}

#[tokio::test]
async fn latency_delays_only_its_group() {
    let sim = sim(SimConfig::default().with_latency(Group::Pubmed, 300, 100)).await;
    let c = client();
    let t = Instant::now();
    assert_eq!(
        get(
            &c,
            &format!("{}/esearch.fcgi?term=asthma", sim.pubmed_url())
        )
        .await
        .0,
        200
    );
    let slow = t.elapsed();
    assert!(slow >= Duration::from_millis(300), "{slow:?}");
    let t = Instant::now();
    assert_eq!(
        get(&c, &format!("{}/paper/search?query=asthma", sim.s2_url()))
            .await
            .0,
        200
    );
    assert!(t.elapsed() < slow, "s2 took {:?}", t.elapsed());
}

/// A hung request never answers; when the client gives up the simulator counts it dropped
/// and no longer in flight.
#[tokio::test]
async fn hang_lasts_until_client_gives_up() {
    let sim = sim(SimConfig::default()).await;
    sim.set(|s| s.s2.hang_rate = 1.0).unwrap();
    let c = client();
    let t = Instant::now();
    let err = c
        .get(format!("{}/paper/search?query=asthma", sim.s2_url()))
        .timeout(Duration::from_millis(400))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    assert!(t.elapsed() >= Duration::from_millis(400));
    assert!(
        eventually(|| {
            let s = sim.stats().group(Group::S2);
            s.in_flight == 0 && s.dropped == 1
        })
        .await,
        "{:?}",
        sim.stats().group(Group::S2)
    );
    assert_eq!(sim.stats().group(Group::S2).total, 1);
}

#[tokio::test]
async fn hang_ends_at_hang_max_or_shutdown() {
    let sim = sim(SimConfig::default()).await;
    sim.set(|s| {
        s.pubmed.hang_rate = 1.0;
        s.pubmed.hang_max_ms = 200;
    })
    .unwrap();
    let c = client();
    let t = Instant::now();
    let (status, _) = get(
        &c,
        &format!("{}/esearch.fcgi?term=asthma", sim.pubmed_url()),
    )
    .await;
    assert_eq!(status, 504);
    assert!(t.elapsed() >= Duration::from_millis(200));

    // Shutdown ends an endless hang at once.
    sim.set(|s| s.pubmed.hang_max_ms = 3_600_000).unwrap();
    let url = format!("{}/esearch.fcgi?term=asthma", sim.pubmed_url());
    let pending = tokio::spawn(async move { c.get(url).send().await.map(|r| r.status().as_u16()) });
    let state = sim.state().clone();
    assert!(eventually(|| state.stats().group(Group::Pubmed).in_flight == 1).await);
    let t = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), sim.shutdown())
        .await
        .unwrap()
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(3));
    let outcome = pending.await.unwrap();
    assert!(matches!(outcome, Ok(504) | Err(_)), "{outcome:?}");
}

#[tokio::test]
async fn control_endpoint_reads_and_patches_settings() {
    let sim = sim(SimConfig::default().with_llm_chunk_delay_ms(5)).await;
    let c = client();
    let control = format!("{}/control", sim.base_url());
    let (status, initial) = get(&c, &control).await;
    assert_eq!(status, 200);
    assert_eq!(initial["llm_chunk_delay_ms"], 5);
    assert_eq!(initial["pubmed"]["error_rate"], 0.0);

    let patch = json!({ "all": { "latency_ms": 20 }, "pubmed": { "error_rate": 1.0, "latency_ms": 0 }, "llm_chunk_delay_ms": 9 });
    let (status, v) = post(&c, &control, &patch).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["pubmed"]["error_rate"], 1.0);
    assert_eq!(v["pubmed"]["latency_ms"], 0);
    assert_eq!(v["s2"]["latency_ms"], 20);
    assert_eq!(v["llm"]["latency_ms"], 20);
    assert_eq!(v["llm_chunk_delay_ms"], 9);
    assert_eq!(get(&c, &control).await.1, v);
    assert_eq!(sim.settings().s2.latency_ms, 20);
    assert_eq!(
        get(&c, &format!("{}/esearch.fcgi?term=x", sim.pubmed_url()))
            .await
            .0,
        500
    );

    // Invalid patches change nothing.
    for bad in [
        json!({ "s2": { "error_rate": 2.0 } }),
        json!({ "s2": { "eror_rate": 0.1 } }),
        json!({ "nope": 1 }),
        json!("x"),
    ] {
        let (status, e) = post(&c, &control, &bad).await;
        assert_eq!(status, 400, "{bad}");
        assert!(e["error"].is_string());
    }
    let resp = c.post(&control).body("not json").send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(get(&c, &control).await.1, v);

    // Reset: start-up settings and empty stats.
    let (status, v) = post(&c, &format!("{control}/reset"), &json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(v, initial);
    assert_eq!(sim.stats().group(Group::Pubmed).total, 0);
}

/// Like NCBI's 3 requests per second: the fourth within a second gets 429 at once, and
/// denied requests do not use up the allowance. The limit's clock is a manual one that only the
/// test moves, so the window's edges are exact however slowly the machine runs.
#[tokio::test]
async fn enforced_rate_limit_answers_429_beyond_it() {
    let clock = SimClock::manual();
    let sim = sim(SimConfig::default().with_clock(clock.clone())).await;
    sim.set(|s| {
        s.pubmed.rate_limit_per_sec = 3;
        s.pubmed.retry_after_secs = 1;
    })
    .unwrap();
    let c = client();
    let url = format!("{}/esearch.fcgi?term=asthma", sim.pubmed_url());
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(get(&c, &url).await.0);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    // Other groups are not limited.
    for _ in 0..5 {
        assert_eq!(
            get(&c, &format!("{}/paper/search?query=x", sim.s2_url()))
                .await
                .0,
            200
        );
    }
    // The window is one second from the first admitted request: still full 1 ms before its end,
    // open at its end, and the refused requests took none of the allowance.
    clock.advance(Duration::from_millis(999));
    assert_eq!(get(&c, &url).await.0, 429);
    clock.advance(Duration::from_millis(1));
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(get(&c, &url).await.0);
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    let pubmed = sim.stats().group(Group::Pubmed);
    assert_eq!((pubmed.status(200), pubmed.status(429)), (6, 6));
}
