//! QuotaLayer::overlapping and WindowsLayer::overlapping: the spend (and the windows' check)
//! runs while the layers inside work, and the gate holds the request until they answered. The
//! hook's check waits for the test to let it answer; the app counts the requests that reached it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get as route_get;
use limiter_core::{Admission, AdmissionConfig};
use limiter_tower::{
    AdmissionLayer, ConstantKey, HeaderKey, QuotaLayer, SlidingWindowLayer, WindowsLayer,
};
use tokio::sync::{Semaphore, mpsc};
use tower::ServiceExt;

use super::quota::{Hook, next};
use super::{KEY, SOON, get, problem, redis, text};

struct Setup {
    app: Router,
    admission: Admission,
    adm_layer: AdmissionLayer<HeaderKey>,
    answer: Arc<Semaphore>,
    events: mpsc::UnboundedReceiver<&'static str>,
    served: Arc<AtomicUsize>,
}

/// The app behind every stack here: answers "fine" and counts what reached it.
fn counting_app() -> (Router, Arc<AtomicUsize>) {
    let served = Arc::new(AtomicUsize::new(0));
    let seen = served.clone();
    let handler = move || {
        seen.fetch_add(1, Ordering::SeqCst);
        async { "fine" }
    };
    (Router::new().route("/", route_get(handler)), served)
}

/// quota (overlapping) → admission (one slot) → gate → app; key "none" has no units.
async fn setup(name: &str) -> Setup {
    let (tx, events) = mpsc::unbounded_channel();
    let answer = Arc::new(Semaphore::new(0));
    let hook = Hook {
        left: Mutex::new(HashMap::from([("none".to_string(), 0)])),
        answer: Some(answer.clone()),
        events: tx,
    };
    let cfg = AdmissionConfig {
        user_cap: 1,
        global_cap: 1,
        ..AdmissionConfig::default()
    };
    let admission = Admission::start(redis(name), cfg).await.unwrap();
    let adm_layer = AdmissionLayer::new(admission.clone(), "default", HeaderKey::new(KEY)).unwrap();
    let (quota, gate) = QuotaLayer::new(hook, HeaderKey::new(KEY)).overlapping();
    let (app, served) = counting_app();
    let app = app.layer(gate).layer(adm_layer.clone()).layer(quota);
    Setup {
        app,
        admission,
        adm_layer,
        answer,
        events,
        served,
    }
}

/// The response of a request spawned earlier, which must come (bounded).
async fn answered<R>(h: tokio::task::JoinHandle<Result<R, std::convert::Infallible>>) -> R {
    tokio::time::timeout(SOON, h)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
}

/// Waits (bounded) until `f` holds.
async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + SOON;
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn the_spend_runs_while_the_request_waits_for_its_slot() {
    let mut s = setup("ovl-wait").await;
    let (holder, _) = s.adm_layer.admit("other", None).await.unwrap();
    let b = tokio::spawn(s.app.clone().oneshot(get("/", "u")));
    // Both at once: the spend was asked for and the request is queued.
    assert_eq!(next(&mut s.events).await, "check");
    until("queued", async || s.admission.local_waiters() == 1).await;
    // The spend answers first: the request still waits for its slot.
    s.answer.add_permits(1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!b.is_finished());
    assert_eq!(s.served.load(Ordering::SeqCst), 0);
    drop(holder);
    let resp = answered(b).await;
    assert_eq!(text(resp).await, "fine");
    assert_eq!(s.served.load(Ordering::SeqCst), 1);
    assert_eq!(next(&mut s.events).await, "commit");
}

#[tokio::test]
async fn the_gate_holds_an_admitted_request_until_the_spend_answers() {
    let mut s = setup("ovl-gate").await;
    let b = tokio::spawn(s.app.clone().oneshot(get("/", "u")));
    assert_eq!(next(&mut s.events).await, "check");
    // Admitted (the only slot is taken), yet the app has not seen it.
    until("admitted", async || {
        s.admission.stats().await.unwrap().in_use == 1
    })
    .await;
    assert_eq!(s.served.load(Ordering::SeqCst), 0);
    assert!(!b.is_finished());
    s.answer.add_permits(1);
    let resp = answered(b).await;
    assert_eq!(text(resp).await, "fine");
    assert_eq!(s.served.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_refused_spend_gives_up_the_queue_place_and_then_spends_first() {
    let mut s = setup("ovl-refused").await;
    let (holder, _) = s.adm_layer.admit("other", None).await.unwrap();
    let b = tokio::spawn(s.app.clone().oneshot(get("/", "none")));
    assert_eq!(next(&mut s.events).await, "check");
    until("queued", async || s.admission.local_waiters() == 1).await;
    s.answer.add_permits(1);
    let resp = answered(b).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(problem(resp).await["code"], "quota_exhausted");
    until("left the queue", async || {
        s.admission.local_waiters() == 0 && s.admission.stats().await.unwrap().queued == [0]
    })
    .await;
    drop(holder);
    until("slot free", async || {
        s.admission.stats().await.unwrap().in_use == 0
    })
    .await;

    // Known refused: the next request spends before it takes a slot or a queue place.
    let c = tokio::spawn(s.app.clone().oneshot(get("/", "none")));
    assert_eq!(next(&mut s.events).await, "check");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stats = s.admission.stats().await.unwrap();
    assert_eq!((stats.in_use, s.admission.local_waiters()), (0, 0));
    s.answer.add_permits(1);
    let resp = answered(c).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(s.served.load(Ordering::SeqCst), 0);
    assert!(s.events.try_recv().is_err(), "refusals settle nothing");
}

#[tokio::test]
async fn a_spend_whose_request_went_away_is_given_back() {
    let mut s = setup("ovl-gone").await;
    let b = tokio::spawn(s.app.clone().oneshot(get("/", "u")));
    assert_eq!(next(&mut s.events).await, "check");
    b.abort();
    let _ = b.await;
    // The spend answers after its request was dropped: it is refunded, never served.
    s.answer.add_permits(1);
    assert_eq!(next(&mut s.events).await, "refund");
    assert_eq!(s.served.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_refusal_by_a_layer_inside_gives_the_spend_back() {
    let (tx, mut events) = mpsc::unbounded_channel();
    let answer = Arc::new(Semaphore::new(100));
    let hook = Hook {
        left: Mutex::new(HashMap::new()),
        answer: Some(answer),
        events: tx,
    };
    let policy = limiter_core::WindowPolicy::new("ovl-inner", 1, Duration::from_secs(60));
    let window = SlidingWindowLayer::new(redis("ovl-inner"), policy, HeaderKey::new(KEY)).unwrap();
    let app = Router::new()
        .route("/", route_get(|| async { "fine" }))
        .layer(window)
        .layer(QuotaLayer::new(hook, HeaderKey::new(KEY)));
    let resp = app.clone().oneshot(get("/", "u")).await.unwrap();
    assert_eq!(text(resp).await, "fine");
    assert_eq!(
        (next(&mut events).await, next(&mut events).await),
        ("check", "commit")
    );
    let resp = app.clone().oneshot(get("/", "u")).await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(problem(resp).await["code"], "rate_limited");
    assert_eq!(
        (next(&mut events).await, next(&mut events).await),
        ("check", "refund")
    );
}

/// windows (overlapping: `limit` per key, and 100 for all keys) → quota (the hook) → gate →
/// app, the app counting what reached it.
fn windows_around_a_spend(
    redis: limiter_core::RedisHandle,
    limit: u32,
    hook: Hook,
) -> (Router, Arc<AtomicUsize>) {
    let minute = Duration::from_secs(60);
    let policy = limiter_core::WindowPolicy::new("ovl-win", limit, minute);
    let per_key = SlidingWindowLayer::new(redis.clone(), policy, HeaderKey::new(KEY)).unwrap();
    let policy = limiter_core::WindowPolicy::new("ovl-all", 100, minute);
    let all = SlidingWindowLayer::new(redis, policy, ConstantKey::new("all")).unwrap();
    let (windows, gate) = WindowsLayer::<Body>::new()
        .window(&per_key)
        .window(&all)
        .overlapping();
    let (app, served) = counting_app();
    let app = app
        .layer(gate)
        .layer(QuotaLayer::new(hook, HeaderKey::new(KEY)))
        .layer(windows);
    (app, served)
}

#[tokio::test]
async fn windows_checked_alongside_a_spend_give_it_back_when_they_refuse() {
    let (tx, mut events) = mpsc::unbounded_channel();
    let answer = Arc::new(Semaphore::new(0));
    let hook = Hook {
        left: Mutex::new(HashMap::from([("u".to_string(), 5)])),
        answer: Some(answer.clone()),
        events: tx,
    };
    let (app, served) = windows_around_a_spend(redis("ovl-win-refuse"), 1, hook);
    let a = tokio::spawn(app.clone().oneshot(get("/", "u")));
    assert_eq!(next(&mut events).await, "check");
    answer.add_permits(1);
    assert_eq!(text(answered(a).await).await, "fine");
    assert_eq!(next(&mut events).await, "commit");

    // Over the window: the spend starts alongside, and the refusal does not wait for it.
    let b = tokio::spawn(app.clone().oneshot(get("/", "u")));
    assert_eq!(next(&mut events).await, "check");
    let resp = answered(b).await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("ratelimit"));
    assert_eq!(problem(resp).await["code"], "rate_limited");
    // The spend answers after its request was refused: given back, never served.
    answer.add_permits(1);
    assert_eq!(next(&mut events).await, "refund");
    assert_eq!(served.load(Ordering::SeqCst), 1);

    // Now refused from the per-key window's local cache (the other still asks Redis): nothing
    // starts inside.
    let resp = app.clone().oneshot(get("/", "u")).await.unwrap();
    assert_eq!(resp.status(), 429);
    let nothing = tokio::time::timeout(Duration::from_millis(300), events.recv()).await;
    assert!(nothing.is_err(), "a spend started: {nothing:?}");
    assert_eq!(served.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_gate_holds_the_request_until_the_windows_answer() {
    let server = testkit::RedisServer::start();
    // Long enough that a stalled Redis is waited for, not failed open.
    let redis = limiter_core::RedisHandle::new(&limiter_core::RedisConfig {
        url: server.url(),
        prefix: testkit::unique_prefix("ovl-win-gate"),
        response_timeout: Duration::from_secs(30),
        ..limiter_core::RedisConfig::default()
    })
    .unwrap();
    let (tx, mut events) = mpsc::unbounded_channel();
    let answer = Arc::new(Semaphore::new(10));
    let hook = Hook {
        left: Mutex::new(HashMap::from([("u".to_string(), 5)])),
        answer: Some(answer),
        events: tx,
    };
    let (app, served) = windows_around_a_spend(redis, 5, hook);
    let resp = app.clone().oneshot(get("/", "u")).await.unwrap();
    assert_eq!(text(resp).await, "fine");
    assert_eq!(
        (next(&mut events).await, next(&mut events).await),
        ("check", "commit")
    );

    // Redis stalls: the spend answers at once, the windows cannot.
    server.pause();
    let b = tokio::spawn(app.clone().oneshot(get("/", "u")));
    assert_eq!(next(&mut events).await, "check");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let early = served.load(Ordering::SeqCst);
    let finished = b.is_finished();
    server.resume();
    assert_eq!(
        (early, finished),
        (1, false),
        "passed the gate before the windows"
    );
    assert_eq!(text(answered(b).await).await, "fine");
    assert_eq!(served.load(Ordering::SeqCst), 2);
    assert_eq!(next(&mut events).await, "commit");
}
