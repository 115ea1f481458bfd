//! Per-call overhead of the outbound wrapper against the machine's Redis (loopback):
//! - CLOSED, breaker only: local permit + one `breaker_record` script call, which the wrapper runs
//!   in the background for a success (so the caller does not wait for it);
//! - CLOSED, paced: plus one `pacing_reserve` call (rate high enough that no slot is waited for);
//! - OPEN: refused from the local cache, no Redis call;
//! - push latency: a transition on one replica until another replica's cache has it.
//!
//! Run: `cargo bench -p breaker-store --bench overhead` (against the test Redis: `testkit::redis_url`).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use breaker_store::{
    Attempt, BreakerPolicy, BreakerState, Breakers, BreakersConfig, CallError, Outbound,
    OutboundConfig, ServiceOutbound,
};
use limiter_core::{Pacer, RedisConfig, RedisHandle};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn measure<F, Fut>(label: &str, n: usize, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    // Let background records of the previous run drain, then warm up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..n / 10 {
        f().await;
    }
    let mut samples = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        f().await;
        samples.push(t.elapsed());
    }
    let total = start.elapsed();
    samples.sort();
    println!(
        "{label:<46} n={n:<7} p50={:>9.2?} p99={:>9.2?} max={:>9.2?} ({:.0} calls/s sequential)",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[n - 1],
        n as f64 / total.as_secs_f64()
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let prefix = testkit::unique_prefix("bench-breaker");
        let redis = RedisHandle::new(&RedisConfig {
            url: testkit::redis_url(),
            prefix,
            ..RedisConfig::default()
        })
        .unwrap();
        let policy = BreakerPolicy {
            failure_threshold: 1_000_000,
            ..BreakerPolicy::default()
        };
        let breakers = Breakers::new(
            redis.clone(),
            BreakersConfig {
                default_policy: policy,
                ..BreakersConfig::default()
            },
        )
        .unwrap();
        let pacer = Pacer::new(redis.clone(), "paced", 1_000_000.0, 1_000).unwrap();
        let out = Outbound::new(breakers.clone(), OutboundConfig::default()).with_service(
            "paced",
            ServiceOutbound {
                pacer: Some(pacer),
                ..ServiceOutbound::default()
            },
        );
        let ok = |_| async { Attempt::<(), ()>::Success(()) };

        measure("baseline: one Redis PING round trip", 20_000, || async {
            redis.ping().await.unwrap();
        })
        .await;
        measure("CLOSED wrapper, breaker only", 20_000, || async {
            out.call("plain", true, ok).await.unwrap();
        })
        .await;
        measure("CLOSED wrapper, paced + breaker", 20_000, || async {
            out.call("paced", true, ok).await.unwrap();
        })
        .await;
        measure(
            "CLOSED acquire + awaited record (no wrapper)",
            20_000,
            || async {
                let p = breakers.acquire("plain").await.unwrap();
                breakers.record(p, breaker_store::Outcome::Success).await;
            },
        )
        .await;

        breakers
            .force_open("plain", Duration::from_secs(600))
            .await
            .unwrap();
        breakers
            .force_open("paced", Duration::from_secs(600))
            .await
            .unwrap();
        measure("OPEN wrapper (refused locally)", 200_000, || async {
            let r = out.call("plain", true, ok).await;
            assert!(matches!(r, Err(CallError::Unavailable { .. })));
        })
        .await;
        measure("OPEN wrapper, paced service", 200_000, || async {
            let r = out.call("paced", true, ok).await;
            assert!(matches!(r, Err(CallError::Unavailable { .. })));
        })
        .await;
        breakers.force_close("plain").await.unwrap();
        breakers.force_close("paced").await.unwrap();

        // Push latency: a transition made on one replica, until another replica's cache has it.
        let other = Breakers::new(
            RedisHandle::new(&RedisConfig {
                url: testkit::redis_url(),
                prefix: redis.keys().prefix().to_string(),
                ..RedisConfig::default()
            })
            .unwrap(),
            BreakersConfig::default(),
        )
        .unwrap();
        other.acquire("push").await.ok();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut samples = Vec::new();
        for i in 0..500 {
            let want = if i % 2 == 0 {
                BreakerState::Open
            } else {
                BreakerState::Closed
            };
            let t = Instant::now();
            if want == BreakerState::Open {
                breakers
                    .force_open("push", Duration::from_secs(60))
                    .await
                    .unwrap();
            } else {
                breakers.force_close("push").await.unwrap();
            }
            while other.state("push") != want {
                tokio::task::yield_now().await;
            }
            samples.push(t.elapsed());
        }
        samples.sort();
        println!(
            "{:<46} n={:<7} p50={:>9.2?} p99={:>9.2?} max={:>9.2?}",
            "push: admin call on A until B's cache has it",
            samples.len(),
            percentile(&samples, 0.5),
            percentile(&samples, 0.99),
            samples[samples.len() - 1]
        );
    });
}
