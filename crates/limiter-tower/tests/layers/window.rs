//! SlidingWindowLayer: refusals, headers, modes, the runtime limit, Redis unreachable.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get as route_get;
use limiter_core::{RedisConfig, RedisHandle, WindowPolicy};
use limiter_tower::{HeaderKey, LimitHandle, Mode, SlidingWindowLayer};
use tower::ServiceExt;

use super::{KEY, get, header, problem, redis};

fn app(layer: SlidingWindowLayer<HeaderKey>, calls: Arc<AtomicUsize>) -> Router {
    Router::new()
        .route(
            "/",
            route_get(move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                "ok"
            }),
        )
        .layer(layer)
}

#[tokio::test]
async fn refuses_over_the_limit_with_ratelimit_headers() {
    let policy = WindowPolicy::new("t", 2, Duration::from_secs(60));
    let layer = SlidingWindowLayer::new(redis("win"), policy, HeaderKey::new(KEY)).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app(layer, calls.clone());
    for left in [1, 0] {
        let resp = app.clone().oneshot(get("/", "a")).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "ratelimit-policy").unwrap(), "\"t\";q=2;w=60");
        let rl = header(&resp, "ratelimit").unwrap();
        assert!(rl.starts_with(&format!("\"t\";r={left};t=")), "{rl}");
    }
    let resp = app.clone().oneshot(get("/", "a")).await.unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = header(&resp, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert!(
        header(&resp, "ratelimit")
            .unwrap()
            .starts_with("\"t\";r=0;t=")
    );
    assert_eq!(header(&resp, "ratelimit-policy").unwrap(), "\"t\";q=2;w=60");
    let doc = problem(resp).await;
    assert_eq!(doc["code"], "rate_limited");
    assert_eq!(doc["status"], 429);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "a refusal never reaches the handler"
    );
    // Another key has its own window; a request without a key is refused.
    let resp = app.clone().oneshot(get("/", "b")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let no_key = http::Request::get("/")
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(no_key).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(problem(resp).await["code"], "invalid_request");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn shadow_and_off_never_refuse_and_the_limit_changes_at_runtime() {
    let handle = LimitHandle::new();
    let policy = WindowPolicy::new("s", 1, Duration::from_secs(60));
    let layer = SlidingWindowLayer::new(redis("win-mode"), policy, HeaderKey::new(KEY))
        .unwrap()
        .handle(handle.clone());
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app(layer, calls.clone());
    assert_eq!(
        app.clone().oneshot(get("/", "a")).await.unwrap().status(),
        200
    );
    assert_eq!(
        app.clone().oneshot(get("/", "a")).await.unwrap().status(),
        429
    );

    handle.set_mode(Mode::Shadow);
    let resp = app.clone().oneshot(get("/", "a")).await.unwrap();
    assert_eq!(resp.status(), 200, "shadow lets it through");
    assert_eq!(
        header(&resp, "limit-shadow-refusal").unwrap(),
        "rate_limited"
    );
    assert_eq!(handle.shadow_refusals(), 1);
    let resp = app.clone().oneshot(get("/", "fresh")).await.unwrap();
    assert_eq!(
        header(&resp, "limit-shadow-refusal"),
        None,
        "not marked when allowed"
    );

    handle.set_mode(Mode::Off);
    let resp = app.clone().oneshot(get("/", "a")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "ratelimit-policy"),
        None,
        "off decides nothing"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 4);

    // Enforcing again with limit 3: "a" has one admission in the window (refusals and
    // shadow/off requests are not recorded), so two more pass.
    handle.set_mode(Mode::Enforce);
    handle.set_window_limit(Some(3));
    for _ in 0..2 {
        let resp = app.clone().oneshot(get("/", "a")).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "ratelimit-policy").unwrap(), "\"s\";q=3;w=60");
    }
    assert_eq!(
        app.clone().oneshot(get("/", "a")).await.unwrap().status(),
        429
    );
}

#[tokio::test]
async fn redis_unreachable_fails_open_or_closed_without_internal_text() {
    let down = RedisHandle::new(&RedisConfig {
        url: format!("redis://127.0.0.1:{}", testkit::free_port()),
        prefix: testkit::unique_prefix("win-down"),
        ..RedisConfig::default()
    })
    .unwrap();
    let policy = WindowPolicy::new("d", 5, Duration::from_secs(60));
    let calls = Arc::new(AtomicUsize::new(0));
    let open = SlidingWindowLayer::new(down.clone(), policy.clone(), HeaderKey::new(KEY)).unwrap();
    let resp = app(open, calls.clone())
        .oneshot(get("/", "a"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "fail-open by default");
    let closed = SlidingWindowLayer::new(down, policy, HeaderKey::new(KEY))
        .unwrap()
        .fail_open(false);
    let resp = app(closed, calls.clone())
        .oneshot(get("/", "a"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(header(&resp, "retry-after").is_some());
    let doc = problem(resp).await;
    assert_eq!(doc["code"], "service_unavailable");
    let text = doc.to_string().to_lowercase();
    assert!(
        !text.contains("redis") && !text.contains("refused"),
        "{text}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_refused_key_is_answered_without_redis_until_its_window_reopens() {
    // The proxy is the observer: it counts the script calls that reach Redis.
    let target: u16 = testkit::redis_url()
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or(6379);
    let proxy = testkit::proxy::TcpProxy::start(target).await;
    let via_proxy = RedisHandle::new(&RedisConfig {
        url: proxy.url(),
        prefix: testkit::unique_prefix("win-cache"),
        ..RedisConfig::default()
    })
    .unwrap();
    let policy = WindowPolicy::new("c", 1, Duration::from_secs(60));
    let layer = SlidingWindowLayer::new(via_proxy, policy, HeaderKey::new(KEY)).unwrap();
    let app = app(layer, Arc::new(AtomicUsize::new(0)));
    assert_eq!(
        app.clone().oneshot(get("/", "a")).await.unwrap().status(),
        200
    );
    assert_eq!(
        app.clone().oneshot(get("/", "a")).await.unwrap().status(),
        429
    );
    let scripts = script_calls(&proxy);
    assert!(scripts >= 2, "both decisions went to Redis ({scripts})");
    for _ in 0..20 {
        let resp = app.clone().oneshot(get("/", "a")).await.unwrap();
        assert_eq!(resp.status(), 429);
        assert!(header(&resp, "retry-after").is_some());
    }
    assert_eq!(
        script_calls(&proxy),
        scripts,
        "refusals of a known key cost Redis nothing"
    );
    // Another key still goes to Redis.
    assert_eq!(
        app.clone().oneshot(get("/", "b")).await.unwrap().status(),
        200
    );
    assert!(script_calls(&proxy) > scripts);
}

/// Records every decision a window tells its observer.
#[derive(Debug, Default, Clone)]
struct Seen(Arc<std::sync::Mutex<Vec<limiter_tower::WindowDecision>>>);

impl limiter_tower::DecisionObserver for Seen {
    fn window_decided(
        &self,
        _: &WindowPolicy,
        d: &limiter_tower::WindowDecision,
        _: &tracing::Span,
    ) {
        self.0.lock().unwrap().push(*d);
    }
}

#[tokio::test]
async fn the_observer_sees_each_decision_and_whether_the_cache_answered() {
    use limiter_tower::WindowDecision;
    let seen = Seen::default();
    let policy = WindowPolicy::new("o", 1, Duration::from_secs(60));
    let layer = SlidingWindowLayer::new(redis("win-obs"), policy, HeaderKey::new(KEY))
        .unwrap()
        .observer(seen.clone());
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app(layer, calls.clone());
    let statuses = [
        app.clone().oneshot(get("/", "a")).await.unwrap().status(),
        app.clone().oneshot(get("/", "a")).await.unwrap().status(),
        app.clone().oneshot(get("/", "a")).await.unwrap().status(),
    ];
    assert_eq!(statuses, [200, 429, 429]);
    let seen = seen.0.lock().unwrap().clone();
    assert!(
        matches!(seen[0], WindowDecision::Allowed { remaining: 0, .. }),
        "{seen:?}"
    );
    // Refused by Redis first, then from the local denial cache.
    assert!(
        matches!(seen[1], WindowDecision::Denied { cached: false, .. }),
        "{seen:?}"
    );
    assert!(
        matches!(seen[2], WindowDecision::Denied { cached: true, .. }),
        "{seen:?}"
    );
    assert_eq!(seen.len(), 3);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// Script calls sent through `proxy`, whichever way they ran.
fn script_calls(proxy: &testkit::proxy::TcpProxy) -> usize {
    ["FCALL", "EVALSHA", "EVAL"]
        .iter()
        .map(|c| proxy.commands_sent(c))
        .sum()
}
