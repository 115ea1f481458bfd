//! WindowsLayer: several windows over one request, each counting what it allowed, the first
//! refusing window's answer, every window's headers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get as route_get;
use bytes::Bytes;
use limiter_core::WindowPolicy;
use limiter_tower::{
    ConstantKey, HeaderKey, LimitHandle, LimitRejection, Mode, RejectionRenderer,
    SlidingWindowLayer, WindowsLayer,
};
use tower::ServiceExt;

use super::{KEY, get, redis, text};

/// Answers 429 with its own name as the body, so a test sees which window refused.
#[derive(Debug)]
struct Named(&'static str);

impl RejectionRenderer for Named {
    fn render(&self, _: &LimitRejection) -> http::Response<Bytes> {
        http::Response::builder()
            .status(429)
            .body(Bytes::from_static(self.0.as_bytes()))
            .unwrap()
    }
}

fn values(resp: &http::Response<Body>, name: &str) -> Vec<String> {
    resp.headers()
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn every_window_counts_and_the_first_refusal_answers() {
    let redis = redis("wins");
    let minute = Duration::from_secs(60);
    // Per key, 3 a minute; for everyone together, 2 a minute.
    let per_key = SlidingWindowLayer::new(
        redis.clone(),
        WindowPolicy::new("k", 3, minute),
        HeaderKey::new(KEY),
    )
    .unwrap()
    .renderer(Named("k"));
    let all_handle = LimitHandle::new();
    let all = SlidingWindowLayer::new(
        redis,
        WindowPolicy::new("all", 2, minute),
        ConstantKey::new("x"),
    )
    .unwrap()
    .renderer(Named("all"))
    .handle(all_handle.clone());
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let app = Router::new()
        .route(
            "/",
            route_get(move || async move {
                counter.fetch_add(1, Ordering::SeqCst);
                "ok"
            }),
        )
        .layer(WindowsLayer::<Body>::new().window(&per_key).window(&all));

    for left in [1, 0] {
        let resp = app.clone().oneshot(get("/", "a")).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            values(&resp, "ratelimit-policy"),
            ["\"k\";q=3;w=60", "\"all\";q=2;w=60"]
        );
        let rl = values(&resp, "ratelimit");
        assert_eq!(rl.len(), 2, "{rl:?}");
        assert!(rl[1].starts_with(&format!("\"all\";r={left};t=")), "{rl:?}");
    }
    // The shared window refuses; the per-key one allowed, and counted, the request.
    let resp = app.clone().oneshot(get("/", "a")).await.unwrap();
    assert_eq!(resp.status(), 429);
    let rl = values(&resp, "ratelimit");
    assert!(rl[0].starts_with("\"k\";r=0;t="), "{rl:?}");
    assert!(rl[1].starts_with("\"all\";r=0;t="), "{rl:?}");
    assert_eq!(text(resp).await, "all");
    // Both refuse now: the answer is the first window's.
    let resp = app.clone().oneshot(get("/", "a")).await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(text(resp).await, "k");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "refusals never reach the handler"
    );

    // A window in shadow lets through what it would refuse, and marks it; the other still
    // decides on its own.
    all_handle.set_mode(Mode::Shadow);
    let resp = app.clone().oneshot(get("/", "b")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[limiter_tower::SHADOW_HEADER], "rate_limited");
    // Off: that window is not even looked at (no headers of its own).
    all_handle.set_mode(Mode::Off);
    let resp = app.clone().oneshot(get("/", "c")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(values(&resp, "ratelimit-policy"), ["\"k\";q=3;w=60"]);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}
