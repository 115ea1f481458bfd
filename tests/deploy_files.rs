//! The deploy files agree with the service: every `FLEETGATE_*` variable they set is one the
//! configuration loader reads (`api::config::variables()`, the table it applies), the ones
//! `serve` needs are set for every
//! replica, the probes and health checks ask routes the service has (its OpenAPI document), the
//! drain fits in the termination grace period, and compose mounts the observability files where
//! they live.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

/// Variables a replica cannot do without (the database and Redis have defaults, but a deploy
/// file relying on `localhost` ones would be wrong).
const REQUIRED: &[&str] = &[
    "FLEETGATE_JWT_SECRET",
    "FLEETGATE_ADMIN_TOKEN",
    "FLEETGATE_DATABASE_URL",
];
const REDIS: &[&str] = &["FLEETGATE_REDIS_URL", "FLEETGATE_REDIS_CLUSTER"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every YAML document of a file.
fn documents(path: &Path) -> Vec<Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

fn routes() -> BTreeSet<String> {
    let doc: serde_json::Value = serde_json::from_str(api::routes::openapi::document()).unwrap();
    doc["paths"].as_object().unwrap().keys().cloned().collect()
}

fn check_names(names: &BTreeSet<String>, file: &str) {
    let read: BTreeSet<&str> = api::config::variables().collect();
    for n in names.iter().filter(|n| n.starts_with("FLEETGATE_")) {
        assert!(
            read.contains(n.as_str()),
            "{file}: {n} is not a variable the service reads"
        );
    }
}

fn check_required(names: &BTreeSet<String>, what: &str) {
    for r in REQUIRED {
        assert!(names.contains(*r), "{what}: {r} not set");
    }
    assert!(
        REDIS.iter().any(|r| names.contains(*r)),
        "{what}: neither FLEETGATE_REDIS_URL nor FLEETGATE_REDIS_CLUSTER set"
    );
}

/// Names of a compose `environment` (a map, or a list of `NAME=value`).
fn compose_env(env: &Value) -> BTreeSet<String> {
    match env {
        Value::Mapping(m) => m
            .keys()
            .filter_map(|k| k.as_str().map(String::from))
            .collect(),
        Value::Sequence(s) => s
            .iter()
            .filter_map(|v| v.as_str())
            .map(|v| v.split('=').next().unwrap_or(v).to_string())
            .collect(),
        _ => BTreeSet::new(),
    }
}

#[test]
fn compose_file_matches_the_service() {
    let mut docs = documents(&root().join("deploy/compose/compose.yaml"));
    assert_eq!(docs.len(), 1);
    // The replicas share one definition by an anchor (`<<` merge keys resolved too).
    docs[0].apply_merge().unwrap();
    let services = docs[0]["services"].as_mapping().unwrap();
    for needed in [
        "redis",
        "postgres",
        "replica-1",
        "replica-2",
        "replica-3",
        "nginx",
        "otel-collector",
        "jaeger",
        "prometheus",
        "grafana",
    ] {
        assert!(
            services.contains_key(needed),
            "compose: no {needed} service"
        );
    }
    let mut uses_fleetgate_image = 0;
    for (name, svc) in services {
        let name = name.as_str().unwrap();
        let env = compose_env(&svc["environment"]);
        check_names(&env, &format!("compose service {name}"));
        if svc["image"].as_str() == Some("fleetgate:local") && svc["entrypoint"].is_null() {
            uses_fleetgate_image += 1;
            assert!(
                env.contains("FLEETGATE_DATABASE_URL"),
                "compose {name}: no database"
            );
        }
    }
    assert_eq!(
        uses_fleetgate_image, 4,
        "migrate and 3 replicas run the fleetgate binary"
    );
    for r in ["replica-1", "replica-2", "replica-3"] {
        let replica = &docs[0]["services"][r];
        check_required(&compose_env(&replica["environment"]), r);
        assert_eq!(replica["command"][0], "serve");
    }
    let fleet = &docs[0]["services"]["replica-1"];
    // nginx balances over the replicas, and Prometheus scrapes them, by their service names.
    let nginx = std::fs::read_to_string(root().join("deploy/compose/nginx.conf")).unwrap();
    let prometheus = documents(&root().join("deploy/observability/prometheus.yml"));
    let targets: Vec<&str> = prometheus[0]["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|j| j["static_configs"].as_sequence().into_iter().flatten())
        .flat_map(|c| c["targets"].as_sequence().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    for r in ["replica-1", "replica-2", "replica-3"] {
        assert!(
            nginx.contains(&format!("server {r}:8080")),
            "nginx.conf lacks {r}"
        );
        assert!(
            targets.contains(&format!("{r}:8080").as_str()),
            "Prometheus does not scrape {r}"
        );
    }
    for t in &targets {
        let host = t.split(':').next().unwrap();
        assert!(
            services.contains_key(host),
            "Prometheus scrapes {t}: no such service"
        );
    }
    let check = fleet["healthcheck"]["test"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(" ");
    let routes = routes();
    assert!(
        check.contains("GET /readyz") && routes.contains("/readyz"),
        "{check}"
    );
    // The build uses the repository's Dockerfile, which exists.
    let build = &fleet["build"];
    let dockerfile = root().join(build["dockerfile"].as_str().unwrap());
    assert!(dockerfile.is_file(), "{}", dockerfile.display());
    let dockerfile = std::fs::read_to_string(dockerfile).unwrap();
    assert!(
        dockerfile.contains("--locked -p api"),
        "the image builds the workspace's api"
    );
    // The observability files are mounted from deploy/observability/.
    let mounts: Vec<String> = services
        .values()
        .filter_map(|s| s["volumes"].as_sequence())
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    for f in [
        "../observability/otel-collector.yaml",
        "../observability/prometheus.yml",
        "../observability/alerts.yml",
        "../observability/grafana/provisioning",
        "../observability/grafana/dashboards",
    ] {
        assert!(
            mounts.iter().any(|m| m.starts_with(&format!("{f}:"))),
            "compose does not mount {f}"
        );
    }
    // nginx is the only trusted proxy: its fixed address is the one the replicas trust.
    let nginx_ip = docs[0]["services"]["nginx"]["networks"]["fleet"]["ipv4_address"]
        .as_str()
        .unwrap();
    assert_eq!(
        fleet["environment"]["FLEETGATE_TRUSTED_PROXIES"].as_str(),
        Some(format!("{nginx_ip}/32").as_str())
    );
}

#[test]
fn kubernetes_manifests_match_the_service() {
    let dir = root().join("deploy/k8s");
    let mut objects = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for f in &files {
        objects.extend(documents(f));
    }
    let of_kind = |kind: &str| -> Vec<&Value> {
        objects
            .iter()
            .filter(|o| o["kind"].as_str() == Some(kind))
            .collect()
    };
    // Every listed resource exists.
    let kustomization = of_kind("Kustomization");
    assert_eq!(kustomization.len(), 1);
    for r in kustomization[0]["resources"].as_sequence().unwrap() {
        assert!(dir.join(r.as_str().unwrap()).is_file(), "{r:?}");
    }
    let config = of_kind("ConfigMap");
    assert_eq!(config.len(), 1);
    let config_keys: BTreeSet<String> = config[0]["data"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    check_names(&config_keys, "configmap.yaml");

    let deployments = of_kind("Deployment");
    assert_eq!(deployments.len(), 1);
    let d = deployments[0];
    assert_eq!(d["spec"]["replicas"], 3);
    let pod = &d["spec"]["template"]["spec"];
    let routes = routes();
    let mut main = None;
    let containers = pod["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .chain(pod["initContainers"].as_sequence().into_iter().flatten());
    for c in containers {
        let mut names: BTreeSet<String> = c["env"]
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect();
        // Secrets are references, never values in the manifest.
        for e in c["env"].as_sequence().into_iter().flatten() {
            let n = e["name"].as_str().unwrap();
            if n.contains("SECRET")
                || n.contains("TOKEN")
                || n.ends_with("_URL") && n.contains("DATABASE")
            {
                assert!(e["value"].is_null(), "{n} must come from a Secret");
                assert!(!e["valueFrom"]["secretKeyRef"]["name"].is_null(), "{n}");
            }
        }
        for from in c["envFrom"].as_sequence().into_iter().flatten() {
            assert_eq!(from["configMapRef"]["name"], config[0]["metadata"]["name"]);
            names.extend(config_keys.iter().cloned());
        }
        check_names(&names, &format!("container {:?}", c["name"]));
        if c["args"][0] == "serve" {
            main = Some((c, names));
        }
    }
    let (c, names) = main.expect("a container running `fleetgate serve`");
    check_required(&names, "deployment");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        if let Some(p) = c[probe]["httpGet"]["path"].as_str() {
            assert!(
                routes.contains(p),
                "{probe} asks {p}, not a route of the service"
            );
        }
    }
    // The drain (preStop sleep, then FLEETGATE_SHUTDOWN_GRACE_MS) ends before SIGKILL.
    let pre_stop: u64 = c["lifecycle"]["preStop"]["exec"]["command"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let grace_ms: u64 = config[0]["data"]["FLEETGATE_SHUTDOWN_GRACE_MS"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let termination = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        pre_stop + grace_ms / 1000 < termination,
        "preStop {pre_stop} s + drain {grace_ms} ms must end within {termination} s"
    );

    let selector = &d["spec"]["selector"]["matchLabels"];
    for kind in ["Service", "PodDisruptionBudget"] {
        let o = of_kind(kind);
        assert_eq!(o.len(), 1, "{kind}");
        let sel = if kind == "Service" {
            &o[0]["spec"]["selector"]
        } else {
            &o[0]["spec"]["selector"]["matchLabels"]
        };
        assert_eq!(sel, selector, "{kind} selects the deployment's pods");
    }
    let pdb = of_kind("PodDisruptionBudget")[0];
    assert!(pdb["spec"]["minAvailable"].as_u64().unwrap() < 3);
    let hpa = of_kind("HorizontalPodAutoscaler");
    assert_eq!(hpa.len(), 1);
    assert_eq!(
        hpa[0]["spec"]["scaleTargetRef"]["name"],
        d["metadata"]["name"]
    );
    assert!(hpa[0]["spec"]["minReplicas"].as_u64().unwrap() >= 3);
}

/// `FLEETGATE_*` names in a text (a trailing `_` or `*` marks a family, e.g. `FLEETGATE_*`, and is
/// skipped), without the test harness's own `FLEETGATE_TEST_*`.
fn named_variables(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in text.match_indices("FLEETGATE_") {
        let name: String = text[at..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        if !name.ends_with('_') && !name.starts_with("FLEETGATE_TEST_") {
            out.insert(name);
        }
    }
    out
}

/// Every file under `dir` (recursively) whose name ends with one of `exts`.
fn files_under(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p, exts));
        } else if exts
            .iter()
            .any(|x| p.to_string_lossy().ends_with(&format!(".{x}")) || x.is_empty())
        {
            out.push(p);
        }
    }
    out
}

/// The service, its deploy files and its README name only variables the loader reads: a
/// variable read anywhere but through the loader's table, or a stale name in a message or a
/// deploy file, fails here.
#[test]
fn every_variable_named_is_one_the_loader_reads() {
    let read: BTreeSet<&str> = api::config::variables().collect();
    let mut places = files_under(&root().join("crates/api/src"), &["rs"]);
    places.extend(files_under(&root().join("deploy"), &[""]));
    places.push(root().join("README.md"));
    for f in places {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue; // not text
        };
        for n in named_variables(&text) {
            assert!(
                read.contains(n.as_str()),
                "{}: {n} is not a variable the configuration loader reads",
                f.display()
            );
        }
    }
}

/// The README has one configuration table (`| env | default | meaning |`) with exactly one row
/// per variable the loader reads, each with a default and a meaning: a
/// variable added to the loader without its row, a stale row, a duplicate, a row naming two
/// variables or a second table fails here.
#[test]
fn readme_table_documents_every_variable() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let rows = config_table_rows(&readme);
    let mut documented: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let mut read: Vec<&str> = api::config::variables().collect();
    documented.sort_unstable();
    read.sort_unstable();
    assert_eq!(
        documented, read,
        "README's configuration table must list each of the loader's variables exactly once"
    );
    for (name, default, meaning) in &rows {
        assert!(!default.is_empty(), "README: {name} has no default");
        assert!(!meaning.is_empty(), "README: {name} has no meaning");
    }
}

/// The rows of README's one configuration table: (variable, default, meaning).
fn config_table_rows(readme: &str) -> Vec<(String, String, String)> {
    const HEADER: &str = "| env | default | meaning |";
    let tables = readme.lines().filter(|l| l.trim() == HEADER).count();
    assert_eq!(
        tables, 1,
        "README must have exactly one configuration table"
    );
    let mut rows = Vec::new();
    for line in readme
        .lines()
        .skip_while(|l| l.trim() != HEADER)
        .skip(2) // the header and its |---| line
        .take_while(|l| l.starts_with('|'))
    {
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .splitn(3, " | ")
            .map(str::trim)
            .collect();
        let [first, default, meaning] = cells[..] else {
            panic!("README configuration row without three cells: {line}");
        };
        let names = named_variables(first);
        let name = first.trim_matches('`');
        assert!(
            names.len() == 1 && names.contains(name),
            "README configuration row must name one variable alone in its first cell: {line}"
        );
        rows.push((name.to_string(), default.to_string(), meaning.to_string()));
    }
    rows
}

/// `FLEETGATE_*` names set in a Kubernetes container's `env`.
fn container_env(c: &Value) -> BTreeSet<String> {
    c["env"]
        .as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|e| e["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// What a gateway needs beside its policy: the policy's path, Redis, and what the policy itself
/// names (the HS256 secret's variable, a database for daily quotas).
fn check_gateway_env(env: &BTreeSet<String>, policy: &gateway::Policy, what: &str) {
    check_names(env, what);
    for needed in [
        "FLEETGATE_GATEWAY_CONFIG",
        "FLEETGATE_REDIS_URL",
        "FLEETGATE_LISTEN",
    ] {
        assert!(env.contains(needed), "{what}: {needed} not set");
    }
    if let Some(var) = &policy.identity.jwt_hs256_secret_env {
        assert!(
            env.contains(var),
            "{what}: the policy's secret {var} is not set"
        );
    }
    if policy.needs_database() {
        assert!(
            env.contains("FLEETGATE_DATABASE_URL"),
            "{what}: daily quotas without FLEETGATE_DATABASE_URL"
        );
    }
}

/// The gateway examples (`deploy/gateway`): the policies they mount load, the gateway gets the
/// variables it reads and its policy where `FLEETGATE_GATEWAY_CONFIG` says, and the app is
/// where the policy's `upstream` points.
#[test]
fn gateway_examples_match_the_gateway() {
    let dir = root().join("deploy/gateway");
    // Compose: the policy file mounted read-only at the configured path.
    let docs = documents(&dir.join("compose.yaml"));
    let services = docs[0]["services"].as_mapping().unwrap();
    for needed in ["redis", "postgres", "app", "gateway"] {
        assert!(
            services.contains_key(needed),
            "gateway compose: no {needed}"
        );
    }
    let gw = &docs[0]["services"]["gateway"];
    assert_eq!(gw["command"][0].as_str(), Some("gateway"));
    let policy = gateway::Policy::load(&dir.join("gateway.toml")).unwrap();
    let env = compose_env(&gw["environment"]);
    check_gateway_env(&env, &policy, "gateway compose");
    let config = gw["environment"]["FLEETGATE_GATEWAY_CONFIG"]
        .as_str()
        .unwrap();
    let mounts: Vec<&str> = gw["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        mounts.contains(&format!("./gateway.toml:{config}:ro").as_str()),
        "gateway compose: the policy is not mounted at {config}: {mounts:?}"
    );
    let upstream: http::Uri = policy.upstream.parse().unwrap();
    assert!(
        services.contains_key(upstream.host().unwrap()),
        "the policy's upstream {} is no compose service",
        policy.upstream
    );

    // Kubernetes: the app and the gateway in one Pod, the policy from the ConfigMap.
    let docs = documents(&dir.join("k8s-sidecar.yaml"));
    let kind = |k: &str| docs.iter().find(|d| d["kind"].as_str() == Some(k)).unwrap();
    let text = kind("ConfigMap")["data"]["gateway.toml"].as_str().unwrap();
    let policy = gateway::Policy::parse(text).unwrap();
    assert_eq!(
        policy.upstream, "http://127.0.0.1:3000",
        "the app is in the Pod"
    );
    let pod = &kind("Deployment")["spec"]["template"]["spec"];
    let containers = pod["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 2, "the app and its gateway");
    let gw = containers
        .iter()
        .find(|c| c["args"][0].as_str() == Some("gateway"))
        .expect("a container running `fleetgate gateway`");
    let env = container_env(gw);
    check_gateway_env(&env, &policy, "gateway sidecar");
    let value = |name: &str| {
        gw["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|e| e["name"].as_str() == Some(name))
            .unwrap()
            .clone()
    };
    for secret in [
        "FLEETGATE_JWT_SECRET",
        "FLEETGATE_DATABASE_URL",
        "FLEETGATE_REDIS_URL",
    ] {
        assert!(
            value(secret)["valueFrom"]["secretKeyRef"]["name"].is_string(),
            "{secret} comes from a Secret"
        );
    }
    let config = value("FLEETGATE_GATEWAY_CONFIG")["value"]
        .as_str()
        .unwrap()
        .to_string();
    let mount = gw["volumeMounts"][0]["mountPath"].as_str().unwrap();
    assert_eq!(config, format!("{mount}/gateway.toml"));
    let volume = gw["volumeMounts"][0]["name"].as_str().unwrap();
    let cm = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"].as_str() == Some(volume))
        .unwrap();
    assert_eq!(
        cm["configMap"]["name"],
        kind("ConfigMap")["metadata"]["name"]
    );
    // The Service reaches the gateway, never the app directly.
    let target = kind("Service")["spec"]["ports"][0]["targetPort"].clone();
    let port = &gw["ports"][0];
    assert!(
        target == port["name"] || target == port["containerPort"],
        "{target:?}"
    );
    let listen = value("FLEETGATE_LISTEN")["value"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(listen.ends_with(&format!(":{}", port["containerPort"].as_u64().unwrap())));
}
