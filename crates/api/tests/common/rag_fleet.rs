//! One replica with the real chat assistant against its own simulator and database, for the
//! end-to-end tests (`pipeline`, `streaming`).

use serde_json::Value;
use upstream_sim::{RunningSim, SimConfig};

use super::{Server, TestDb};

pub struct Fleet {
    pub sim: RunningSim,
    pub server: Server,
    _db: TestDb,
}

pub async fn start() -> Fleet {
    start_with(|_| {}).await
}

pub async fn start_with(tune: impl FnOnce(&mut api::config::Config)) -> Fleet {
    let sim = upstream_sim::spawn(SimConfig::default()).await.unwrap();
    let db = TestDb::create().await;
    let prefix = testkit::unique_prefix("pipe");
    let mut cfg = super::config(&db, &prefix);
    tune(&mut cfg);
    // Each test makes a handful of calls: keep the sources paced, but not slow.
    cfg.upstream.pubmed_rate_per_sec = 20;
    cfg.upstream.semantic_scholar_rate_per_sec = 20;
    let server = replica(&sim, cfg).await;
    Fleet {
        sim,
        server,
        _db: db,
    }
}

/// One replica with the real pipeline against `sim`.
pub async fn replica(sim: &RunningSim, cfg: api::config::Config) -> Server {
    super::rag_replica(sim, cfg).await
}

pub async fn post(f: &Fleet, path: &str, user: &str, body: Value) -> reqwest::Response {
    super::client()
        .post(f.server.url(path))
        .bearer_auth(super::token(user))
        .json(&body)
        .send()
        .await
        .unwrap()
}
