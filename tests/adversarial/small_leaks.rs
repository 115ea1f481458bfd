//! Smaller leaks: a caller's `x-request-id` written as is into every log line and trace; raw user
//! ids in logs; an LLM `user` field anyone can reverse by hashing guessed ids; a Kubernetes
//! ConfigMap trusting every address of 10.0.0.0/8 as a proxy.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use sha2::Digest;

use crate::harness::fleet::JWT_SECRET;
use crate::harness::{PgCluster, TestDb, serial, wait_for};
use crate::support::{Replica, ask};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_kept_only_when_plausible() {
    let _s = serial().await;
    let r = Replica::start("reqid", &[("FLEETGATE_PIPELINE", "echo")]).await;
    let id_of = |sent: String| {
        let req = r.client.get(r.url("/healthz")).header("x-request-id", sent);
        async move {
            let resp = req.send().await.unwrap();
            resp.headers()["x-request-id"].to_str().unwrap().to_string()
        }
    };
    assert_eq!(id_of("lb-7f3a.42:1".into()).await, "lb-7f3a.42:1");
    for bad in [
        "a".repeat(2000),
        "x\"}, \"admin\": true, {\"".into(),
        "two words".into(),
    ] {
        let got = id_of(bad.clone()).await;
        assert_ne!(got, bad);
        assert!(got.len() <= 64, "{got}");
        assert!(
            got.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'),
            "a minted id: {got}"
        );
    }
}

/// The LLM's `user` is HMAC-SHA256 of the subject under a server key (derived from the JWT
/// secret, or `FLEETGATE_USER_HASH_KEY`), not a plain SHA-256 anyone can recompute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_llm_user_is_a_keyed_pseudonym() {
    let _s = serial().await;
    let sub = "patient-zero@example.org";
    let r = Replica::start("llmuser", &[]).await;
    let resp = r.chat(sub, "198.51.100.80", ask("hello", false)).await;
    assert_eq!(resp.status(), 200);
    let users: BTreeSet<String> = r.sim.stats().await["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user"].as_str().unwrap().to_string())
        .collect();
    let plain = hex::encode(sha2::Sha256::digest(sub.as_bytes()));
    assert!(
        !users.contains(&plain),
        "a plain SHA-256 of the subject: {users:?}"
    );
    let keyed =
        api::auth::pseudonym::Pseudonymizer::derived_from(JWT_SECRET.as_bytes()).pseudonym(sub);
    assert!(users.contains(&keyed), "{users:?}");

    let key = "an-operator-chosen-key-of-32-bytes-or-more";
    let r = Replica::start("llmuserkey", &[("FLEETGATE_USER_HASH_KEY", key)]).await;
    let resp = r.chat(sub, "198.51.100.81", ask("hello", false)).await;
    assert_eq!(resp.status(), 200);
    let keyed = api::auth::pseudonym::Pseudonymizer::with_key(key.as_bytes()).pseudonym(sub);
    let users = r.sim.stats().await["users"].to_string();
    assert!(users.contains(&keyed), "{users}");
}

/// The log names users by pseudonym only. A chat fails upstream while PostgreSQL (a cluster this
/// test owns) goes away, so its refund fails and is logged: the line carries the request's span
/// with the pseudonym, and the user id appears nowhere in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_name_users_by_pseudonym_only() {
    let _s = serial().await;
    let pg = PgCluster::start();
    let db = TestDb::create_on(&pg.url()).await;
    let sub = "victor-identifiable-user-id";
    let r = Replica::start_on(
        "logs",
        db,
        &[
            ("RUST_LOG", "info"),
            ("FLEETGATE_DATABASE_ACQUIRE_TIMEOUT_MS", "500"),
        ],
    )
    .await;
    // Every LLM call fails after 1.5 s (retried once): time to take the database away.
    r.sim
        .control(json!({"llm": {"latency_ms": 1500, "error_rate": 1.0}}))
        .await;
    let chat = r.chat(sub, "198.51.100.90", ask("hello", false));
    let stop = async {
        wait_for(Duration::from_secs(10), || async {
            let (now, _) = r.sim.llm_in_flight().await;
            let total = r.llm_requests().await;
            (now > 0 || total > 0).then_some(())
        })
        .await
        .expect("the LLM was never called");
        pg.stop();
    };
    let (resp, ()) = tokio::join!(chat, stop);
    assert_eq!(resp.status(), 503);
    let pseudonym =
        api::auth::pseudonym::Pseudonymizer::derived_from(JWT_SECRET.as_bytes()).pseudonym(sub);
    let logged = wait_for(Duration::from_secs(10), || async {
        let log = r.log();
        log.contains("quota refund failed").then_some(log)
    })
    .await
    .expect("the failed refund was not logged");
    assert!(
        !logged.contains(sub),
        "the user id is in the log:\n{logged}"
    );
    let line = logged
        .lines()
        .find(|l| l.contains("quota refund failed"))
        .unwrap();
    assert!(line.contains(&pseudonym), "{line}");
}

/// The Kubernetes manifests trust only a narrow block as proxies, and only the ingress controller
/// (and monitoring) can reach the pods.
#[test]
fn kubernetes_trusts_only_the_ingress_controller() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/k8s");
    let docs: Vec<serde_yaml::Value> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .flat_map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            serde_yaml::Deserializer::from_str(&text)
                .map(|d| serde::Deserialize::deserialize(d).unwrap())
                .collect::<Vec<serde_yaml::Value>>()
        })
        .collect();
    let config = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    let trusted = config["data"]["FLEETGATE_TRUSTED_PROXIES"]
        .as_str()
        .unwrap();
    let blocks: Vec<ipnet::IpNet> = trusted
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(|b| {
            b.parse()
                .or_else(|_| b.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .unwrap()
        })
        .collect();
    assert!(!blocks.is_empty());
    for b in &blocks {
        let narrow = match b {
            ipnet::IpNet::V4(v4) => v4.prefix_len() >= 16,
            ipnet::IpNet::V6(v6) => v6.prefix_len() >= 48,
        };
        assert!(narrow, "{b} trusts too many addresses as proxies");
    }
    let policy = docs
        .iter()
        .find(|d| d["kind"] == "NetworkPolicy")
        .expect("a NetworkPolicy for the replicas");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "fleetgate"
    );
    let rules = policy["spec"]["ingress"].as_sequence().unwrap();
    assert!(!rules.is_empty());
    for rule in rules {
        assert!(
            rule["from"].as_sequence().is_some_and(|f| !f.is_empty()),
            "an ingress rule open to every pod: {rule:?}"
        );
    }
}
