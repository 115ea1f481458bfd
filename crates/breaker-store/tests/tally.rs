//! Plain successes (no failure ratio in the policy) are tallied per replica and reach the shared
//! window's call count together: all of them counted, in a handful of script calls. The server is
//! the test's own, so its command counts are this test's alone.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use breaker_store::{BreakerPolicy, Outcome};
use common::*;
use testkit::{RedisServer, unique_prefix};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_successes_reach_the_window_in_a_few_script_calls() {
    let server = RedisServer::start();
    let policy = BreakerPolicy::default();
    assert!(policy.failure_ratio.is_none());
    let rs = replicas(
        &server.url(),
        &unique_prefix("brk-tally"),
        3,
        &config(policy),
    );
    let before = server.script_calls();
    for i in 0..300 {
        let b = &rs[i % 3];
        let p = b.acquire(SERVICE).await.unwrap();
        b.record_in_background(p, Outcome::Success).await;
    }
    // Every success is counted, within a few tally periods.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut reads = 0;
    let snap = loop {
        let s = rs[0].snapshot(SERVICE).await.unwrap();
        reads += 1;
        if s.calls_in_window >= 300 || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!((snap.calls_in_window, snap.failures_in_window), (300, 0));
    let records = server.script_calls() - before - reads;
    // One write per replica and period: the loop above takes far less than a second, so ten
    // periods per replica is a generous bound; one call per success would be 300.
    assert!(records <= 30, "300 successes took {records} script calls");

    // A failure is still recorded at once, not tallied.
    let p = rs[1].acquire(SERVICE).await.unwrap();
    rs[1].record(p, Outcome::Failure).await;
    let s = rs[2].snapshot(SERVICE).await.unwrap();
    assert_eq!((s.calls_in_window, s.failures_in_window), (301, 1));
}
