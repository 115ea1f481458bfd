//! The `upstream-sim` binary: flags reach the settings, and the first stdout line tells the
//! address (scripts rely on it when they pass port 0).

use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::common::client;

#[tokio::test]
async fn binary_applies_flags_and_prints_its_address() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_upstream-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--latency-ms",
            "3",
            "--pubmed-latency-ms",
            "7",
            "--s2-429-rate",
            "0.5",
            "--llm-chunk-delay-ms",
            "11",
            "--llm-api-key",
            "sk-bin",
            "--corpus-size",
            "500",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().unwrap();
    let base = line
        .strip_prefix("upstream-sim listening on ")
        .unwrap()
        .to_string();
    let c = client();
    let v: Value = c
        .get(format!("{base}/control"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["pubmed"]["latency_ms"], 7);
    assert_eq!(v["s2"]["latency_ms"], 3);
    assert_eq!(v["s2"]["throttle_rate"], 0.5);
    assert_eq!(v["llm_chunk_delay_ms"], 11);
    assert_eq!(v["llm_api_key"], "sk-bin");
    let status = c
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
    child.kill().await.unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_upstream-sim"))
        .arg("--bogus")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown flag --bogus"));
}
