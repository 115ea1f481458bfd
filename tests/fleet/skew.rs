//! Clock skew: replica 0 runs 30 s ahead and replica 1 30 s behind (libfaketime, preloaded into
//! their processes only; Debian's `faketime` package), replica 2 on the machine's clock. Every
//! limit decision takes its time from Redis `TIME` inside the scripts, so under load the fleet
//! still reaches exactly its cap of 20 at the LLM and never more (the simulator's recorded
//! maximum), and every request is served. The skew is checked in effect through each replica's
//! HTTP `Date` header.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::harness::load::summary;
use crate::harness::{Fleet, FleetOptions, Load, LoadOptions, RedisTarget, TestDb, client, serial};

/// Where Debian's `faketime` package puts the library, per architecture.
const LIBFAKETIME: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
];
const SKEW_S: i64 = 30;

/// Seconds into the UTC day of an HTTP date (`Wed, 02 Dec 2026 20:58:12 GMT`).
fn day_seconds(http_date: &str) -> Option<i64> {
    let hms = http_date.split_whitespace().nth(4)?;
    let mut parts = hms.split(':').map(|p| p.parse::<i64>().ok());
    Some(parts.next()?? * 3600 + parts.next()?? * 60 + parts.next()??)
}

/// How far replica `i`'s wall clock is ahead of ours, in seconds (its `Date` header; taken
/// modulo a day, so midnight between the two readings does not matter).
async fn skew_of(fleet: &Fleet, i: usize) -> Option<i64> {
    let r = client().get(fleet.url(i, "/healthz")).send().await.ok()?;
    let theirs = day_seconds(r.headers().get("date")?.to_str().ok()?)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    let ours = i64::try_from(now % 86_400).ok()?;
    Some((theirs - ours + 86_400 + 43_200) % 86_400 - 43_200)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_with_skewed_clocks_keep_the_cap() {
    let lib = LIBFAKETIME
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
        .expect("libfaketime missing: scripts/test installs Debian's faketime package");
    let _one = serial().await;
    let redis = testkit::RedisServer::start();
    let db = TestDb::create().await;
    let mut opts = FleetOptions {
        llm_latency_ms: 500,
        ..FleetOptions::new(RedisTarget::Standalone(redis.url()), &db.url)
    };
    for (i, skew) in [(0, format!("+{SKEW_S}s")), (1, format!("-{SKEW_S}s"))] {
        opts = opts
            .replica_env(i, "LD_PRELOAD", lib)
            .replica_env(i, "FAKETIME", skew)
            // Only the wall clock: tokio's timers run on the monotonic one.
            .replica_env(i, "FAKETIME_DONT_FAKE_MONOTONIC", 1)
            .replica_env(i, "DONT_FAKE_MONOTONIC", 1);
    }
    let fleet = Fleet::start("skew", opts).await;
    let skews = [
        skew_of(&fleet, 0).await,
        skew_of(&fleet, 1).await,
        skew_of(&fleet, 2).await,
    ];
    let near = |s: Option<i64>, want: i64| s.is_some_and(|s| (s - want).abs() <= 3);
    assert!(
        near(skews[0], SKEW_S) && near(skews[1], -SKEW_S) && near(skews[2], 0),
        "replica clocks not skewed as set: {skews:?}"
    );
    let load = Load::start(
        &client(),
        LoadOptions {
            bases: fleet.bases(),
            users: (0..60).map(|n| format!("skew-user-{n}")).collect(),
            ip_offset: 0,
            failover: false,
        },
    );
    fleet.sim.reset_stats().await;
    let reached = fleet.sim.wait_llm_max(20, Duration::from_secs(15)).await;
    // A while at the cap: leases renewed and handed on between the skewed replicas.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (_, max) = fleet.sim.llm_in_flight().await;
    let outcomes = load.stop().await;
    eprintln!(
        "skew: replica clocks {skews:?} s off; LLM reached {reached}, max {max}; {:?}",
        summary(&outcomes)
    );
    assert_eq!((reached, max), (20, 20), "the cap, exactly");
    assert!(outcomes.iter().all(|o| o.ok()), "{:?}", summary(&outcomes));
    let served: Vec<usize> = (0..3)
        .map(|i| outcomes.iter().filter(|o| o.replica == i && o.ok()).count())
        .collect();
    assert!(
        served.iter().all(|&n| n > 0),
        "served per replica {served:?}"
    );
    fleet.assert_drained(0, 3, Duration::from_secs(15)).await;
}
