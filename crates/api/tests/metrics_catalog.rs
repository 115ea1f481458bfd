//! The dashboard and alert rules in `deploy/observability/` against what the service really
//! exports: after a little traffic (so every family has samples), every metric a panel or rule
//! names is in `/metrics`, and every exported family has a panel. A binary of its own: the
//! registry is process-wide and the traffic here would move `metrics.rs`'s exact counts.
#![allow(clippy::unwrap_used)]

mod common;

use serde_json::json;
use upstream_sim::{Group, SimConfig};

/// Metric names used in a PromQL text (dashboards, alert rules).
fn names_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("fleetgate_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_name_only_exported_metrics_and_show_every_family() {
    let sim = upstream_sim::spawn(SimConfig::default()).await.unwrap();
    let db = common::TestDb::create().await;
    let cfg = common::config(&db, &testkit::unique_prefix("metrics-dash"));
    let server = common::rag_replica(&sim, cfg).await;
    let c = common::client();
    // Traffic that gives every family a sample: a cited answer (requests, limiter decisions,
    // queue wait, upstream attempts, scripts) and a research call while PubMed fails (upstream
    // errors, quota refund does not apply to research).
    let r = c
        .post(server.url("/api/chat"))
        .bearer_auth(common::token("dash-user"))
        .json(&json!({"message": "statin therapy in elderly patients", "useRAG": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sim.set(|s| {
        s.faults_mut(Group::Pubmed).error_rate = 1.0;
        s.faults_mut(Group::S2).error_rate = 1.0;
    })
    .unwrap();
    let r = c
        .post(server.url("/api/research"))
        .bearer_auth(common::token("dash-user"))
        .json(&json!({"query": "statin"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());
    let text = c
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Sample names each family may have, from its TYPE line (families without samples yet
    // are declared too).
    let mut exported = std::collections::BTreeSet::new();
    let mut families = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            families.insert(name.to_string());
            match kind {
                "counter" => {
                    exported.insert(format!("{name}_total"));
                }
                "histogram" => {
                    for s in ["_bucket", "_sum", "_count"] {
                        exported.insert(format!("{name}{s}"));
                    }
                }
                _ => {
                    exported.insert(name.to_string());
                }
            }
        }
    }
    assert!(families.len() >= 15, "{families:?}");

    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/observability");
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/grafana/dashboards/fleetgate.json")).unwrap(),
    )
    .unwrap();
    let mut used = std::collections::BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            let names = names_in(t["expr"].as_str().unwrap());
            assert!(
                !names.is_empty(),
                "panel {} queries no fleetgate metric",
                p["title"]
            );
            for n in names {
                assert!(
                    exported.contains(&n),
                    "panel {} names {n}, not exported",
                    p["title"]
                );
                used.insert(n);
            }
        }
    }
    // Every family the service exports has a panel.
    for f in &families {
        assert!(
            used.iter().any(|u| u == f
                || u.strip_prefix(f.as_str())
                    .is_some_and(|s| ["_total", "_bucket", "_sum", "_count"].contains(&s))),
            "no panel shows {f}"
        );
    }
    let alerts = std::fs::read_to_string(format!("{root}/alerts.yml")).unwrap();
    let alert_names = names_in(&alerts);
    assert!(alert_names.len() >= 5);
    for n in alert_names {
        assert!(exported.contains(&n), "alerts.yml names {n}, not exported");
    }
}
