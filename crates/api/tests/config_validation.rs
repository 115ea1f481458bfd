//! Every configuration the service cannot work with is refused at start: `fleetgate serve` exits
//! with code 2 before it binds or connects anything, and its message names the variable and says
//! what is expected. The boundary values just inside each rule are accepted.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use api::config::Config;

/// `fleetgate serve` with a JWT secret and `vars`; returns (exit code, stderr). A configuration
/// that passed would fail later and differently: nothing answers at the Redis and database
/// addresses, and the listen address is not one of this machine's; the process is killed if it
/// has not exited within 20 s.
fn serve_with(vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let dead = format!("127.0.0.1:{}", testkit::free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .arg("serve")
        .env_clear()
        .env(
            "FLEETGATE_JWT_SECRET",
            "a-secret-that-is-never-printed-0123456789",
        )
        .env("FLEETGATE_REDIS_URL", format!("redis://{dead}"))
        .env("FLEETGATE_DATABASE_URL", format!("postgres://{dead}/none"))
        .env("FLEETGATE_LISTEN", "192.0.2.1:9")
        .envs(vars.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Variables set, the variable the refusal must name, and what it must say.
type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);

fn load(vars: &[(&str, &str)]) -> Result<Config, api::ConfigError> {
    let env: HashMap<&str, &str> = vars.iter().copied().collect();
    Config::load_from(|k| env.get(k).map(|v| v.to_string()))
}

#[test]
fn each_unworkable_value_is_refused_at_start_naming_its_variable() {
    let at_least_one = [
        "FLEETGATE_CHAT_PER_IP_PER_MIN",
        "FLEETGATE_RESEARCH_PER_IP_PER_MIN",
        "FLEETGATE_EXPORT_PER_IP_PER_MIN",
        "FLEETGATE_MAX_CONCURRENT_PER_USER",
        "FLEETGATE_MAX_CONCURRENT_GLOBAL",
        "FLEETGATE_EXPECTED_REPLICAS",
        "FLEETGATE_DATABASE_MAX_CONNECTIONS",
        "FLEETGATE_PUBMED_RATE_PER_SEC",
        "FLEETGATE_SEMANTIC_SCHOLAR_RATE_PER_SEC",
        "FLEETGATE_BREAKER_FAILURE_THRESHOLD",
        "FLEETGATE_EMERGENCY_CLEANUP_IDLE_SECS",
    ];
    let mut cases: Vec<Case> = at_least_one
        .iter()
        .map(|v| (vec![(*v, "0")], *v, "at least 1"))
        .collect();
    let long_prefix = "p".repeat(65);
    cases.extend([
        (
            vec![
                ("FLEETGATE_MAX_CONCURRENT_PER_USER", "5"),
                ("FLEETGATE_MAX_CONCURRENT_GLOBAL", "4"),
            ],
            "FLEETGATE_MAX_CONCURRENT_PER_USER",
            "must not exceed FLEETGATE_MAX_CONCURRENT_GLOBAL",
        ),
        (
            vec![("FLEETGATE_REDIS_PREFIX", "fg{x}")],
            "FLEETGATE_REDIS_PREFIX",
            "[A-Za-z0-9_.-/]",
        ),
        (
            vec![("FLEETGATE_REDIS_PREFIX", "fg:a")],
            "FLEETGATE_REDIS_PREFIX",
            "[A-Za-z0-9_.-/]",
        ),
        (
            vec![("FLEETGATE_REDIS_PREFIX", long_prefix.as_str())],
            "FLEETGATE_REDIS_PREFIX",
            "1-64 characters",
        ),
        (
            vec![("FLEETGATE_ADMISSION_HEARTBEAT_MS", "29")],
            "FLEETGATE_ADMISSION_HEARTBEAT_MS",
            "at least 30",
        ),
        (
            vec![("FLEETGATE_LEASE_TTL_MS", "99")],
            "FLEETGATE_LEASE_TTL_MS",
            "at least 100",
        ),
        (
            vec![("FLEETGATE_PIPELINE", "magic")],
            "FLEETGATE_PIPELINE",
            "expected `rag`, `unconfigured` or `echo`",
        ),
        (
            vec![("FLEETGATE_LOG_FORMAT", "xml")],
            "FLEETGATE_LOG_FORMAT",
            "expected `human` or `json`",
        ),
        (
            vec![("FLEETGATE_TRUSTED_PROXIES", "10.0.0.0/33")],
            "FLEETGATE_TRUSTED_PROXIES",
            "",
        ),
        (
            vec![("FLEETGATE_QUOTA_TIERS", "pro")],
            "FLEETGATE_QUOTA_TIERS",
            "name=count",
        ),
        (
            vec![("FLEETGATE_FREE_DAILY_QUERIES", "3000000000")],
            "FLEETGATE_FREE_DAILY_QUERIES",
            "too large",
        ),
        (
            vec![("FLEETGATE_LEASE_TTL_MS", "-5")],
            "FLEETGATE_LEASE_TTL_MS",
            "expected u64",
        ),
    ]);
    for (vars, var, reason) in &cases {
        let (code, err) = serve_with(vars);
        assert_eq!(code, Some(2), "{vars:?} was not refused: {err}");
        assert!(
            err.contains("configuration error") && err.contains(var) && err.contains(reason),
            "{vars:?}: the message must name {var} and say {reason:?}: {err}"
        );
        assert!(!err.contains("never-printed"), "{err}");
        // The same rule through the loader the service uses (TOML and tests go this way too).
        let e = load(vars).unwrap_err().to_string();
        assert!(e.contains(var), "{vars:?}: {e}");
    }
}

#[test]
fn the_same_rules_apply_to_the_config_file() {
    let path = std::env::temp_dir().join(format!("fg-validate-{}.toml", rand::random::<u32>()));
    std::fs::write(
        &path,
        "[admission]\nmax_concurrent_per_user = 30\nmax_concurrent_global = 20\n",
    )
    .unwrap();
    let p = path.to_string_lossy().to_string();
    let (code, err) = serve_with(&[("FLEETGATE_CONFIG", &p)]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("FLEETGATE_MAX_CONCURRENT_PER_USER"), "{err}");
}

#[test]
fn values_at_each_boundary_are_accepted() {
    let c = load(&[
        ("FLEETGATE_MAX_CONCURRENT_PER_USER", "4"),
        ("FLEETGATE_MAX_CONCURRENT_GLOBAL", "4"),
        ("FLEETGATE_ADMISSION_HEARTBEAT_MS", "30"),
        ("FLEETGATE_LEASE_TTL_MS", "100"),
        ("FLEETGATE_EXPECTED_REPLICAS", "1"),
        ("FLEETGATE_REDIS_PREFIX", &"p".repeat(64)),
        ("FLEETGATE_PIPELINE", "echo"),
        ("FLEETGATE_LOG_FORMAT", "json"),
        ("FLEETGATE_EMERGENCY_CLEANUP_IDLE_SECS", "1"),
    ])
    .unwrap();
    assert_eq!(c.admission.max_concurrent_per_user, 4);
    assert_eq!(c.admission.heartbeat_ttl_ms, 30);
    assert_eq!(c.admission.lease_ttl_ms, 100);
    assert_eq!(c.database.emergency_idle_secs, 1);
    // The defaults pass as well.
    load(&[]).unwrap();
}

/// Why the configuration is loaded by a table of its own (`config/env.rs`) rather than a
/// layered loader such as figment or config-rs: those read every layer, environment included,
/// through serde, and serde's type errors quote the value they found. A secret set under the
/// wrong variable (a database password in `FLEETGATE_REDIS_TIMEOUT_MS`, say) would be printed
/// at start, into logs. This loader names the variable, or the file's line and key, and never the
/// value. The first assertion is the library behaviour that rules them out.
#[test]
fn a_value_that_does_not_parse_is_never_printed_unlike_through_serde() {
    let secret = "s3cr3t-under-the-wrong-key";
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Layer {
        timeout_ms: u64,
    }
    let through_serde = toml::from_str::<Layer>(&format!("timeout_ms = \"{secret}\""))
        .unwrap_err()
        .to_string();
    assert!(through_serde.contains(secret), "{through_serde}");

    let from_env = load(&[("FLEETGATE_REDIS_TIMEOUT_MS", secret)])
        .unwrap_err()
        .to_string();
    assert!(
        from_env.contains("FLEETGATE_REDIS_TIMEOUT_MS"),
        "{from_env}"
    );
    assert!(!from_env.contains(secret), "{from_env}");

    let path = std::env::temp_dir().join(format!("fg-secret-{}.toml", rand::random::<u32>()));
    std::fs::write(&path, format!("[redis]\ntimeout_ms = \"{secret}\"\n")).unwrap();
    let p = path.to_string_lossy().to_string();
    let from_file = load(&[("FLEETGATE_CONFIG", &p)]).unwrap_err().to_string();
    let _ = std::fs::remove_file(&path);
    assert!(from_file.contains("line 2"), "{from_file}");
    assert!(from_file.contains("expected u64"), "{from_file}");
    assert!(!from_file.contains(secret), "{from_file}");
}

/// The gateway guards its runtime-limits actions with the same admin token as `serve`, held to
/// the same length: a short one stops it at start, before it reads its policy.
#[test]
fn a_gateway_with_a_short_admin_token_does_not_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .arg("gateway")
        .env_clear()
        .env("FLEETGATE_ADMIN_TOKEN", "short")
        .env("FLEETGATE_GATEWAY_CONFIG", "/nonexistent/gateway.toml")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("FLEETGATE_ADMIN_TOKEN"), "{err}");
    assert!(err.contains("at least 32 bytes"), "{err}");
    assert!(!err.contains("short\""), "{err}");
}
