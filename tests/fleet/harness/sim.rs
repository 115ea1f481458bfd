//! The `upstream-sim` process: PubMed, Semantic Scholar and the LLM the replicas call, and the
//! independent observer of what reached them (`GET /stats`).

use std::path::Path;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use upstream_sim::LlmCall;

use super::bins;
use super::process::Proc;

/// A running simulator.
#[derive(Debug)]
pub struct Sim {
    pub base: String,
    proc: Proc,
    client: reqwest::Client,
}

impl Sim {
    /// Starts it on a free port with LLM answers taking `llm_latency_ms`, and learns the port from
    /// its first stdout line.
    pub async fn start(llm_latency_ms: u64, dir: &Path) -> Sim {
        let log = dir.join("upstream-sim.log");
        let mut cmd = Command::new(bins::upstream_sim());
        cmd.args(["--listen", "127.0.0.1:0", "--fault-seed", "7"])
            .args(["--llm-answer-latency-ms", &llm_latency_ms.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("start upstream-sim");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .expect("upstream-sim printed nothing within 30 s")
            .expect("read upstream-sim stdout")
            .expect("upstream-sim exited");
        let base = first
            .rsplit(' ')
            .next()
            .filter(|u| u.starts_with("http://"))
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .to_string();
        // Keep draining so a later write never meets a closed pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Sim {
            base,
            proc: Proc::from_child("upstream-sim", child, &log),
            client: super::client(),
        }
    }

    /// `GET /stats`.
    pub async fn stats(&self) -> Value {
        self.client
            .get(format!("{}/stats", self.base))
            .send()
            .await
            .expect("sim /stats")
            .json()
            .await
            .expect("sim /stats json")
    }

    /// `POST /stats/reset` (requests in flight keep counting).
    pub async fn reset_stats(&self) {
        let r = self
            .client
            .post(format!("{}/stats/reset", self.base))
            .send()
            .await
            .expect("sim reset");
        assert!(r.status().is_success());
    }

    /// `POST /control` with a settings patch, e.g. `{"llm_answer_latency_ms": 300}`.
    pub async fn control(&self, patch: Value) {
        let r = self
            .client
            .post(format!("{}/control", self.base))
            .json(&patch)
            .send()
            .await
            .expect("sim control");
        assert!(r.status().is_success(), "sim control: {}", r.status());
    }

    /// The simulator's clock (ms since it started), as `/stats` reports it: the time base of its
    /// arrival times and call log.
    pub async fn now_ms(&self) -> u64 {
        self.stats().await["uptime_ms"].as_u64().expect("uptime_ms")
    }

    /// The log of LLM calls (user, start, end; see `upstream_sim::calls`).
    pub async fn llm_calls(&self) -> Vec<LlmCall> {
        serde_json::from_value(self.stats().await["llm_calls"].clone()).expect("llm_calls")
    }

    /// Waits (up to `timeout`) until the LLM's recorded maximum since the last reset reaches
    /// `n`; returns the recorded maximum then (or at the timeout).
    pub async fn wait_llm_max(&self, n: u64, timeout: std::time::Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (_, max) = self.llm_in_flight().await;
            if max >= n || tokio::time::Instant::now() >= deadline {
                return max;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// LLM requests in flight now and the most at once since the last reset.
    pub async fn llm_in_flight(&self) -> (u64, u64) {
        let s = self.stats().await;
        let g = &s["groups"]["llm"];
        (
            g["in_flight"].as_u64().unwrap_or(0),
            g["max_in_flight"].as_u64().unwrap_or(0),
        )
    }

    pub fn running(&mut self) -> bool {
        self.proc.running()
    }
}

/// The largest per-user LLM concurrency in a stats snapshot, and whether any user was untracked.
pub fn max_user_in_flight(stats: &Value) -> (u64, u64) {
    let max = stats["llm_users"]
        .as_object()
        .map(|m| {
            m.values()
                .filter_map(|u| u["max_in_flight"].as_u64())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    (max, stats["llm_users_untracked"].as_u64().unwrap_or(0))
}

/// Sum of LLM requests in flight now over the given user hashes.
pub fn users_in_flight(stats: &Value, hashes: &[String]) -> u64 {
    hashes
        .iter()
        .filter_map(|h| stats["llm_users"][h]["in_flight"].as_u64())
        .sum()
}
