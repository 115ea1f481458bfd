//! Shared helpers: an HTTP client and JSON shortcuts.

use std::time::Duration;

use serde_json::Value;
use upstream_sim::{RunningSim, SimConfig};

pub fn client() -> reqwest::Client {
    // reqwest is built with rustls-no-provider: a provider must be installed first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub async fn sim(cfg: SimConfig) -> RunningSim {
    upstream_sim::spawn(cfg.with_fault_seed(7)).await.unwrap()
}

pub async fn get(c: &reqwest::Client, url: &str) -> (u16, Value) {
    let resp = c.get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

pub async fn get_text(c: &reqwest::Client, url: &str) -> (u16, String) {
    let resp = c.get(url).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

pub async fn post(c: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let resp = c.post(url).json(body).send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Title and abstract of a PubMed paper, lower-cased, fetched through efetch.
pub async fn efetch_text(c: &reqwest::Client, sim: &RunningSim, pmid: &str) -> String {
    let url = format!(
        "{}/efetch.fcgi?db=pubmed&id={pmid}&rettype=abstract&retmode=xml",
        sim.pubmed_url()
    );
    get_text(c, &url).await.1.to_lowercase()
}

/// Polls `cond` until true or 10 s pass (for conditions the simulator reaches asynchronously).
pub async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}
