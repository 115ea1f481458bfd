//! How fast the simulator answers, so benchmarks of fleetgate know it is not the bottleneck.
//! Run: `cargo bench -p upstream-sim --bench throughput` (optional args: seconds per case,
//! concurrency). Prints corpus generation time and, per endpoint, requests/s and latency
//! percentiles with no injected faults.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::json;
use upstream_sim::{Corpus, CorpusConfig, SimConfig};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let secs: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(3);
    let concurrency: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(16);

    let t = Instant::now();
    let corpus = Corpus::generate(&CorpusConfig::default());
    println!(
        "corpus: {} papers generated and indexed in {:?}",
        corpus.papers().len(),
        t.elapsed()
    );

    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = upstream_sim::spawn(SimConfig::default().with_llm_chunk_delay_ms(0))
        .await
        .unwrap();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let chat = json!({
        "model": "m",
        "messages": [
            { "role": "system", "content": "[1] Metformin and mortality\n[2] Exercise and HbA1c\n[3] SGLT2 inhibitors in CKD" },
            { "role": "user", "content": "Does metformin reduce mortality in type 2 diabetes?" }
        ]
    });
    let cases: Vec<(&str, reqwest::Method, String, Option<serde_json::Value>)> = vec![
        (
            "pubmed esearch (json, retmax 20)",
            reqwest::Method::GET,
            format!(
                "{}/esearch.fcgi?db=pubmed&term=metformin+diabetes&retmode=json",
                sim.pubmed_url()
            ),
            None,
        ),
        (
            "pubmed efetch (xml, 5 ids)",
            reqwest::Method::GET,
            {
                let ids: Vec<String> = corpus
                    .papers()
                    .iter()
                    .filter_map(|p| p.pmid)
                    .take(5)
                    .map(|i| i.to_string())
                    .collect();
                format!(
                    "{}/efetch.fcgi?db=pubmed&id={}&rettype=abstract&retmode=xml",
                    sim.pubmed_url(),
                    ids.join(",")
                )
            },
            None,
        ),
        (
            "s2 search (limit 20, 6 fields)",
            reqwest::Method::GET,
            format!(
                "{}/paper/search?query=metformin%20diabetes&limit=20&fields=title,abstract,year,authors,url,externalIds",
                sim.s2_url()
            ),
            None,
        ),
        (
            "llm chat (non-stream)",
            reqwest::Method::POST,
            format!("{}/chat/completions", sim.llm_url()),
            Some(chat.clone()),
        ),
        (
            "llm chat (stream, 0 ms delay)",
            reqwest::Method::POST,
            format!("{}/chat/completions", sim.llm_url()),
            Some({
                let mut c = chat.clone();
                c["stream"] = json!(true);
                c
            }),
        ),
    ];
    println!("{secs} s per case, {concurrency} concurrent clients over HTTP/1.1 keep-alive");
    for (name, method, url, body) in cases {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (client, method, url, body) =
                (client.clone(), method.clone(), url.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let mut req = client.request(method.clone(), &url);
                    if let Some(b) = &body {
                        req = req.json(b);
                    }
                    let resp = req.send().await.unwrap();
                    assert!(resp.status().is_success());
                    resp.bytes().await.unwrap();
                    lat.push(t.elapsed());
                }
                lat
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all.sort();
        println!(
            "{name:<36} {:>8.0} req/s   p50 {:>7.2?}   p99 {:>7.2?}",
            all.len() as f64 / secs as f64,
            percentile(&all, 0.5),
            percentile(&all, 0.99)
        );
    }
    sim.shutdown().await.unwrap();
}
