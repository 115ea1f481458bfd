//! Hostile input: malformed query strings, bodies, methods and paths get 4xx, never a 5xx or a
//! dead server.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use upstream_sim::SimConfig;

use crate::common::{client, sim};

#[tokio::test]
async fn malformed_queries_never_fail_the_server() {
    let sim = sim(SimConfig::default()).await;
    let c = client();
    let queries = [
        "%zz%%&&==&term=%00",
        "term=%ff%fe%fd&retmax=99999999999999999999999",
        "term=a&retstart=18446744073709551615&retmode=json",
        "term=((((((&retmode=json",
        "term=[[[[]]]]]]&retmode=json",
        "id=1,2,,3,%20,&retmode=json",
        "id=99999999999999999999999",
        "query=%E2%80%AE&limit=-5",
        "query=a&fields=,,,&offset=1",
        "query=a&offset=18446744073709551615&limit=100",
        "query=a&offset=18446744073709551616",
        "query=a&year=-",
        "query=a&year=2000-1990",
    ];
    let paths = [
        "pubmed/esearch.fcgi",
        "pubmed/esummary.fcgi",
        "pubmed/efetch.fcgi",
        "s2/graph/v1/paper/search",
    ];
    for p in paths {
        for q in queries {
            let url = format!("{}/{p}?{q}", sim.base_url());
            let status = c.get(&url).send().await.unwrap().status().as_u16();
            assert!(status < 500, "{url}: {status}");
        }
    }
    let long_term = "diabetes+".repeat(5000);
    let status = c
        .get(format!(
            "{}/esearch.fcgi?term={long_term}",
            sim.pubmed_url()
        ))
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.as_u16() < 500);
}

#[tokio::test]
async fn oversized_and_odd_bodies_get_4xx() {
    let sim = sim(SimConfig {
        max_body_bytes: 64 * 1024,
        ..SimConfig::default()
    })
    .await;
    let c = client();
    let url = format!("{}/chat/completions", sim.llm_url());
    let huge =
        json!({ "model": "m", "messages": [{ "role": "user", "content": "x".repeat(200_000) }] });
    let resp = c.post(&url).json(&huge).send().await.unwrap();
    assert_eq!(resp.status(), 413);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert!(v["error"]["message"].is_string());

    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert_eq!(c.post(&url).body(deep).send().await.unwrap().status(), 400);
    assert_eq!(
        c.post(&url)
            .body(vec![0xffu8, 0xfe, 0x00])
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(c.get(&url).send().await.unwrap().status(), 405);
    assert_eq!(
        c.delete(format!("{}/esearch.fcgi", sim.pubmed_url()))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
    assert_eq!(
        c.get(format!("{}/nowhere", sim.base_url()))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // A POST form with the wrong content type.
    let resp = c
        .post(format!("{}/esearch.fcgi", sim.pubmed_url()))
        .body("term=x")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_client_error());
    let resp = c
        .post(format!("{}/control", sim.base_url()))
        .body("x".repeat(100_000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
}

/// Raw bytes straight onto the socket, past any client-side URL cleaning.
#[tokio::test]
async fn raw_garbage_requests_do_not_kill_the_server() {
    let sim = sim(SimConfig::default()).await;
    let garbage: [&[u8]; 5] = [
        b"GET /pubmed/esearch.fcgi?term=\xff\xfe%%% HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /s2/graph/v1/paper/\xc3\x28 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{\"a\":",
        b"\x00\x01\x02 nonsense\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\ntraceparent: \xff\xff\r\n\r\n",
    ];
    for g in garbage {
        let mut s = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
        s.write_all(g).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(!head.starts_with("HTTP/1.1 5"), "{head}");
    }
    // Still serving.
    let status = client()
        .get(format!("{}/stats", sim.base_url()))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
}
