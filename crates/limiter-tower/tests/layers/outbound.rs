//! OutboundLayer: retries of idempotent calls, the shared breaker opening and failing fast.
//!
//! The client is a tower service answering from a scripted list of statuses (the layer is about
//! what happens around a client, not about HTTP); breaker and pacing state are in Redis.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use breaker_store::{
    BreakerPolicy, Breakers, BreakersConfig, Outbound, OutboundConfig, RetryPolicy, ServiceOutbound,
};
use http::{Request, Response};
use limiter_core::Pacer;
use limiter_tower::{OutboundError, OutboundLayer};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

use super::redis;

/// A client answering with `statuses` in order (the last one forever), counting its calls.
fn client(
    statuses: &[u16],
    calls: Arc<AtomicUsize>,
) -> impl tower::Service<
    Request<String>,
    Response = Response<String>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send
+ Sync
+ 'static {
    let script = Arc::new(Mutex::new(
        statuses.iter().copied().collect::<VecDeque<_>>(),
    ));
    tower::service_fn(move |_req: Request<String>| {
        let script = script.clone();
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            let mut s = script.lock().unwrap();
            let status = if s.len() > 1 {
                s.pop_front()
            } else {
                s.front().copied()
            };
            Ok::<_, Infallible>(
                Response::builder()
                    .status(status.unwrap_or(200))
                    .body(String::new())
                    .unwrap(),
            )
        }
    })
}

fn outbound(name: &str, threshold: u32) -> Arc<Outbound> {
    Arc::new(outbound_on(redis(name), threshold))
}

fn outbound_on(redis: limiter_core::RedisHandle, threshold: u32) -> Outbound {
    let breakers = Breakers::new(
        redis,
        BreakersConfig {
            default_policy: BreakerPolicy {
                failure_threshold: threshold,
                open: Duration::from_secs(30),
                ..BreakerPolicy::default()
            },
            ..BreakersConfig::default()
        },
    )
    .unwrap();
    let retry = RetryPolicy {
        max_attempts: 3,
        base: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        ..RetryPolicy::default()
    };
    Outbound::new(
        breakers,
        OutboundConfig {
            retry,
            ..OutboundConfig::default()
        },
    )
}

fn req(method: &str) -> Request<String> {
    Request::builder()
        .method(method)
        .uri("http://upstream.test/x")
        .body(String::new())
        .unwrap()
}

#[tokio::test]
async fn idempotent_calls_are_retried_others_are_not() {
    let layer = OutboundLayer::new(outbound("out-retry", 100), "up");
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = layer.layer(client(&[503, 200], calls.clone()));
    let resp = svc.clone().oneshot(req("GET")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one retry");

    let calls = Arc::new(AtomicUsize::new(0));
    let svc = layer.layer(client(&[503, 200], calls.clone()));
    let resp = svc.oneshot(req("POST")).await.unwrap();
    assert_eq!(resp.status(), 503, "the upstream's answer is passed on");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "POST is tried once");

    let calls = Arc::new(AtomicUsize::new(0));
    let svc = layer.layer(client(&[404], calls.clone()));
    assert_eq!(svc.oneshot(req("GET")).await.unwrap().status(), 404);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "a 4xx is not retried");
}

#[tokio::test]
async fn the_breaker_opens_and_calls_fail_fast() {
    let out = outbound("out-breaker", 3);
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = OutboundLayer::new(out, "flaky").layer(client(&[500], calls.clone()));
    let mut refused = None;
    for _ in 0..10 {
        match svc.clone().oneshot(req("POST")).await {
            Ok(resp) => assert_eq!(resp.status(), 500),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let Some(OutboundError::Unavailable { retry_after, .. }) = refused else {
        panic!("expected the breaker to open, got {refused:?}");
    };
    assert!(retry_after > Duration::ZERO);
    let seen = calls.load(Ordering::SeqCst);
    assert!((3..=4).contains(&seen), "{seen} calls before it opened");
    for _ in 0..3 {
        assert!(matches!(
            svc.clone().oneshot(req("GET")).await,
            Err(OutboundError::Unavailable { .. })
        ));
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        seen,
        "an open breaker calls nobody"
    );
}

#[tokio::test]
async fn calls_are_paced_fleet_wide() {
    // 5 calls a second, no burst: any 6 consecutive calls span at least a second. The client
    // records when each call reached it.
    let redis = redis("out-pace");
    let pacer = Pacer::new(redis.clone(), "paced", 5.0, 1).unwrap();
    let out = outbound_on(redis, 100).with_service(
        "paced",
        ServiceOutbound {
            pacer: Some(pacer),
            ..ServiceOutbound::default()
        },
    );
    let times = Arc::new(Mutex::new(Vec::new()));
    let client = {
        let times = times.clone();
        tower::service_fn(move |_req: Request<String>| {
            let times = times.clone();
            async move {
                times.lock().unwrap().push(Instant::now());
                Ok::<_, Infallible>(Response::new(String::new()))
            }
        })
    };
    let svc = OutboundLayer::new(Arc::new(out), "paced").layer(client);
    let calls = (0..10).map(|_| svc.clone().oneshot(req("GET")));
    for r in futures_util::future::join_all(calls).await {
        assert_eq!(r.unwrap().status(), 200);
    }
    let mut t = times.lock().unwrap().clone();
    t.sort();
    assert_eq!(t.len(), 10);
    for w in t.windows(6) {
        let span = w[5] - w[0];
        // Generous: Redis time and this clock may disagree by a few ms.
        assert!(
            span >= Duration::from_millis(900),
            "6 calls within {span:?}"
        );
    }
}
