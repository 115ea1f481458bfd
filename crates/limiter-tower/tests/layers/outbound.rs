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
    BreakerPolicy, Breakers, BreakersConfig, Outbound, OutboundConfig, RetryPolicy,
};
use http::{Request, Response};
use limiter_tower::{OutboundError, OutboundLayer};
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
    let breakers = Breakers::new(
        redis(name),
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
    Arc::new(Outbound::new(
        breakers,
        OutboundConfig {
            retry,
            ..OutboundConfig::default()
        },
    ))
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
