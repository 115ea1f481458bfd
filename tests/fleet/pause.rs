//! Redis paused (SIGSTOP) for five times the replicas' reply timeout, mid-load with the fleet at
//! its cap, then resumed (SIGCONT). Unlike a crash the connections stay open: calls time out,
//! the replicas admit on their local limits, and when Redis resumes it runs every command still
//! buffered, including the ones whose callers gave up (an enter, a leave, a release, a renewal).
//! Over the whole run the LLM never runs more than 20 calls at once (the simulator's recorded
//! maximum), every request is served or refused with `Retry-After`, every replica is back on the
//! shared queue, and the shared cap is enforced again afterwards (20, not less: no slot is left
//! held by a caller that gave up).

use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::load::summary;
use crate::harness::{Fleet, FleetOptions, RedisTarget, TestDb, serial};

const LLM_MS: u64 = 500;
const HEARTBEAT_MS: u64 = 2000;
const REPLY_TIMEOUT_MS: u64 = 1000;
const PAUSE: Duration = Duration::from_millis(5 * REPLY_TIMEOUT_MS);

fn signal(pid: &str, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, pid])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_paused_beyond_the_reply_timeout() {
    let _one = serial().await;
    let redis = testkit::RedisServer::start();
    let pid = redis
        .command("INFO server")
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .map(|p| p.trim().to_string())
        .expect("process_id in INFO server");
    let db = TestDb::create().await;
    let opts = FleetOptions {
        llm_latency_ms: LLM_MS,
        ..FleetOptions::new(RedisTarget::Standalone(redis.url()), &db.url)
    }
    .env("FLEETGATE_REDIS_TIMEOUT_MS", REPLY_TIMEOUT_MS)
    .env("FLEETGATE_ADMISSION_HEARTBEAT_MS", HEARTBEAT_MS);
    let mut fleet = Fleet::start("pause", opts).await;
    let load = fleet
        .load_at_cap("pause", Duration::from_millis(HEARTBEAT_MS), LLM_MS)
        .await;

    // From here the simulator records the whole run: the pause, the resume, and after.
    signal(&pid, "-STOP");
    let paused = Instant::now();
    tokio::time::sleep(PAUSE).await;
    let mut modes = Vec::new();
    for i in 0..fleet.replicas.len() {
        modes.push(
            fleet
                .health(i)
                .await
                .map(|h| h["components"]["admission"]["mode"].clone()),
        );
    }
    signal(&pid, "-CONT");
    let resumed = Instant::now();
    let shared_after = fleet
        .wait_all_shared(resumed, Duration::from_secs(20))
        .await;
    let (max_pause, again, again_max) = fleet.run_max_then_cap_again().await;
    let outcomes = load.stop().await;
    let during = outcomes
        .iter()
        .filter(|o| o.finished >= paused && o.started <= resumed)
        .count();
    eprintln!(
        "redis paused {PAUSE:?}: modes at its end {modes:?}; shared again {shared_after:?} after \
         the resume; LLM max {max_pause} over the run, then {again} / {again_max}; {during} \
         requests overlapped the pause; {:?}",
        summary(&outcomes)
    );

    fleet.assert_all_running();
    assert!(
        max_pause <= 20,
        "the LLM saw {max_pause} at once with Redis paused"
    );
    assert!(
        modes
            .iter()
            .all(|m| *m == Some(serde_json::json!("degraded"))),
        "every replica noticed the pause: {modes:?}"
    );
    assert!(
        outcomes.iter().all(|o| o.ok() || o.retryable()),
        "a request neither answered nor refused with Retry-After: {:?}",
        summary(&outcomes)
    );
    shared_after.expect("not every replica shared again within 20 s of the resume");
    assert_eq!(
        (again, again_max),
        (20, 20),
        "the shared cap (20) after the resume"
    );
    fleet.assert_drained(0, 3, Duration::from_secs(15)).await;
}
