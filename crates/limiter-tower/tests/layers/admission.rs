//! AdmissionLayer: the slot lives as long as the response body, refusals, shadow mode.
//!
//! The observer is the handler itself: it counts the requests running (from the handler's start
//! to the end of the body it streams) and the most ever running at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get as route_get;
use http_body_util::BodyExt;
use limiter_core::{Admission, AdmissionConfig};
use limiter_tower::{AdmissionLayer, HeaderKey, LimitHandle, Mode};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use super::{KEY, SOON, get, header, problem, redis, text};

/// Requests running now and the most seen at once.
#[derive(Debug, Default)]
struct Observer {
    running: AtomicUsize,
    max: AtomicUsize,
}

/// Decrements `running` when the stream ends or is dropped.
struct Running(Arc<Observer>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A handler streaming `first`, then waiting for a permit of `gate` before its last chunk.
fn app<A: limiter_tower::Admit>(
    layer: AdmissionLayer<HeaderKey, A>,
    obs: Arc<Observer>,
    gate: Arc<Semaphore>,
) -> Router {
    let handler = move || {
        let obs = obs.clone();
        let gate = gate.clone();
        async move {
            let now = obs.running.fetch_add(1, Ordering::SeqCst) + 1;
            obs.max.fetch_max(now, Ordering::SeqCst);
            let running = Running(obs);
            let chunks = futures_util::stream::unfold(0u8, move |step| {
                let gate = gate.clone();
                async move {
                    match step {
                        0 => Some((Ok::<_, std::io::Error>("first\n".to_string()), 1)),
                        1 => {
                            gate.acquire().await.unwrap().forget();
                            Some((Ok("last\n".to_string()), 2))
                        }
                        _ => None,
                    }
                }
            });
            let chunks = futures_util::StreamExt::map(chunks, move |c| {
                let _held = &running;
                c
            });
            Body::from_stream(chunks)
        }
    };
    Router::new().route("/", route_get(handler)).layer(layer)
}

async fn layer(name: &str, cfg: AdmissionConfig) -> AdmissionLayer<HeaderKey> {
    layer_and_admission(name, cfg).await.0
}

/// The layer and its admission (to observe the waiters it queues).
async fn layer_and_admission(
    name: &str,
    cfg: AdmissionConfig,
) -> (AdmissionLayer<HeaderKey>, Admission) {
    let admission = Admission::start(redis(name), cfg).await.unwrap();
    let layer = AdmissionLayer::new(admission.clone(), "default", HeaderKey::new(KEY)).unwrap();
    (layer, admission)
}

fn cap_one() -> AdmissionConfig {
    AdmissionConfig {
        user_cap: 1,
        global_cap: 1,
        ..AdmissionConfig::default()
    }
}

#[tokio::test]
async fn a_streamed_body_keeps_its_slot_until_it_ends() {
    let obs = Arc::new(Observer::default());
    let gate = Arc::new(Semaphore::new(0));
    let (layer, admission) = layer_and_admission("adm-stream", cap_one()).await;
    let app = app(layer, obs.clone(), gate.clone());

    // A: admitted, headers back, its body still streaming.
    let a = app.clone().oneshot(get("/", "u")).await.unwrap();
    assert_eq!(a.status(), 200);
    assert_eq!(obs.running.load(Ordering::SeqCst), 1);

    // B waits in the queue while A's body runs: its handler does not start.
    let b = tokio::spawn(app.clone().oneshot(get("/", "u")));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while admission.local_waiters() != 1 && !b.is_finished() {
        assert!(tokio::time::Instant::now() < deadline, "B never queued");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!b.is_finished(), "B must wait for A's body to end");
    assert_eq!(obs.running.load(Ordering::SeqCst), 1);

    // A's body ends: B is admitted.
    gate.add_permits(1);
    assert_eq!(text(a).await, "first\nlast\n");
    let b = tokio::time::timeout(SOON, b)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(b.status(), 200);
    gate.add_permits(1);
    assert_eq!(text(b).await, "first\nlast\n");
    assert_eq!(obs.max.load(Ordering::SeqCst), 1, "never above the cap");
}

#[tokio::test]
async fn a_dropped_body_frees_the_slot() {
    let obs = Arc::new(Observer::default());
    let gate = Arc::new(Semaphore::new(0));
    let app = app(
        layer("adm-drop", cap_one()).await,
        obs.clone(),
        gate.clone(),
    );
    let a = app.clone().oneshot(get("/", "u")).await.unwrap();
    let b = tokio::spawn(app.clone().oneshot(get("/", "u")));
    // The client goes away mid-stream.
    drop(a);
    let b = tokio::time::timeout(SOON, b)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(b.status(), 200);
    assert_eq!(obs.max.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn queue_timeout_is_refused_and_shadow_lets_it_through() {
    let obs = Arc::new(Observer::default());
    let gate = Arc::new(Semaphore::new(0));
    let admission = Admission::start(redis("adm-timeout"), cap_one())
        .await
        .unwrap();
    let enforce = AdmissionLayer::new(admission.clone(), "default", HeaderKey::new(KEY))
        .unwrap()
        .queue_timeout(Duration::from_millis(300));
    let app = app(enforce, obs.clone(), gate.clone());
    let a = app.clone().oneshot(get("/", "u")).await.unwrap();

    let b = app.clone().oneshot(get("/", "u")).await.unwrap();
    assert_eq!(b.status(), 503);
    assert_eq!(header(&b, "retry-after").unwrap(), "10");
    assert_eq!(problem(b).await["code"], "queue_timeout");

    // Same queue, a layer in shadow mode with a long timeout: shadow never waits for it.
    let handle = LimitHandle::new();
    handle.set_mode(Mode::Shadow);
    let shadow = AdmissionLayer::new(admission, "default", HeaderKey::new(KEY))
        .unwrap()
        .queue_timeout(Duration::from_secs(60))
        .handle(handle.clone());
    let shadow_app = self::app(shadow, obs.clone(), gate.clone());
    let c = tokio::time::timeout(SOON, shadow_app.oneshot(get("/", "u")))
        .await
        .expect("shadow mode does not queue")
        .unwrap();
    assert_eq!(c.status(), 200);
    assert_eq!(header(&c, "limit-shadow-refusal").unwrap(), "queue_timeout");
    assert_eq!(handle.shadow_refusals(), 1);
    assert_eq!(
        obs.max.load(Ordering::SeqCst),
        2,
        "shadow let the second one run"
    );
    drop((a, c));
}

/// Waits until the fleet-wide queue holds `n` waiters.
async fn queued(admission: &Admission, n: u64) {
    tokio::time::timeout(SOON, async {
        while admission.stats().await.unwrap().total_queued() != n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("waiters in the queue");
}

#[tokio::test]
async fn a_full_queue_and_a_key_at_its_waiter_cap_are_refused_at_once() {
    let obs = Arc::new(Observer::default());
    let gate = Arc::new(Semaphore::new(0));
    let cfg = AdmissionConfig {
        max_queue: 2,
        max_queued_per_user: 1,
        ..cap_one()
    };
    let admission = Admission::start(redis("adm-full"), cfg).await.unwrap();
    let layer = AdmissionLayer::new(admission.clone(), "default", HeaderKey::new(KEY)).unwrap();
    let app = app(layer, obs.clone(), gate.clone());
    let a = app.clone().oneshot(get("/", "u")).await.unwrap();
    let b = tokio::spawn(app.clone().oneshot(get("/", "u")));
    queued(&admission, 1).await;

    // "u" already has its one waiter.
    let c = tokio::time::timeout(SOON, app.clone().oneshot(get("/", "u")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.status(), 429);
    assert_eq!(header(&c, "retry-after").unwrap(), "10");
    assert_eq!(problem(c).await["code"], "user_queue_full");

    let d = tokio::spawn(app.clone().oneshot(get("/", "v")));
    queued(&admission, 2).await;
    // The queue holds its maximum.
    let e = tokio::time::timeout(SOON, app.clone().oneshot(get("/", "w")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.status(), 503);
    assert_eq!(header(&e, "retry-after").unwrap(), "10");
    assert_eq!(problem(e).await["code"], "queue_full");
    assert_eq!(obs.max.load(Ordering::SeqCst), 1);

    // Everything queued is served in turn as bodies end.
    gate.add_permits(3);
    drop(a);
    for w in [b, d] {
        let r = tokio::time::timeout(SOON, w)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(text(r).await, "first\nlast\n");
    }
    assert_eq!(obs.max.load(Ordering::SeqCst), 1, "never above the cap");
}

/// A slot source wrapping limiter-core's queue: counts the slots held, refuses the key `closing`.
#[derive(Debug)]
struct Counted {
    admission: Admission,
    held: Arc<AtomicUsize>,
}

/// A permit counted in `Counted::held` while it lives.
struct CountedSlot(#[allow(dead_code)] limiter_core::Permit, Arc<AtomicUsize>);

impl Drop for CountedSlot {
    fn drop(&mut self) {
        self.1.fetch_sub(1, Ordering::SeqCst);
    }
}

impl limiter_tower::Admit for Counted {
    type Slot = CountedSlot;

    fn classes(&self) -> &limiter_core::Classes {
        self.admission.classes()
    }

    async fn admit(
        &self,
        key: &str,
        class: limiter_core::Class,
        deadline: tokio::time::Instant,
        positions: Option<tokio::sync::watch::Sender<u32>>,
    ) -> Result<CountedSlot, limiter_tower::LimitRejection> {
        if key == "closing" {
            return Err(limiter_tower::LimitRejection::ShuttingDown {
                retry_after: Duration::from_secs(1),
            });
        }
        let permit =
            limiter_tower::Admit::admit(&self.admission, key, class, deadline, positions).await?;
        self.held.fetch_add(1, Ordering::SeqCst);
        Ok(CountedSlot(permit, Arc::clone(&self.held)))
    }

    fn queued(slot: &CountedSlot) -> Duration {
        slot.0.queued()
    }
}

#[tokio::test]
async fn a_custom_slot_source_holds_for_the_body_and_the_handler_sees_its_wait() {
    let admission = Admission::start(
        redis("adm-custom"),
        AdmissionConfig {
            user_cap: 1,
            global_cap: 1,
            ..AdmissionConfig::default()
        },
    )
    .await
    .unwrap();
    let held = Arc::new(AtomicUsize::new(0));
    let source = Counted {
        admission,
        held: Arc::clone(&held),
    };
    let layer = AdmissionLayer::with_admitter(source, "default", HeaderKey::new(KEY)).unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let handler = {
        let (seen, held) = (seen.clone(), held.clone());
        move |admitted: Option<axum::Extension<limiter_tower::Admitted>>| {
            let (seen, held) = (seen.clone(), held.clone());
            async move {
                assert!(admitted.is_some(), "the handler learns its wait");
                seen.store(held.load(Ordering::SeqCst), Ordering::SeqCst);
                "ok"
            }
        }
    };
    let app = Router::new().route("/", route_get(handler)).layer(layer);
    let resp = app.clone().oneshot(get("/", "a")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "the slot was held while the handler ran"
    );
    assert_eq!(
        held.load(Ordering::SeqCst),
        1,
        "and still is until the body ends"
    );
    assert_eq!(text(resp).await, "ok");
    assert_eq!(held.load(Ordering::SeqCst), 0);
    let refused = app.clone().oneshot(get("/", "closing")).await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(header(&refused, "retry-after").unwrap(), "1");
    assert_eq!(problem(refused).await["code"], "service_unavailable");
}

/// Slots of `Counted`'s queue whose revocation the test triggers (standing in for a replica
/// that could not renew its lease in time).
#[derive(Debug)]
struct Revocable {
    inner: Counted,
}

impl limiter_tower::Admit for Revocable {
    type Slot = CountedSlot;

    fn classes(&self) -> &limiter_core::Classes {
        limiter_tower::Admit::classes(&self.inner)
    }

    async fn admit(
        &self,
        key: &str,
        class: limiter_core::Class,
        deadline: tokio::time::Instant,
        positions: Option<tokio::sync::watch::Sender<u32>>,
    ) -> Result<CountedSlot, limiter_tower::LimitRejection> {
        limiter_tower::Admit::admit(&self.inner, key, class, deadline, positions).await
    }

    fn queued(slot: &CountedSlot) -> Duration {
        <Counted as limiter_tower::Admit>::queued(slot)
    }

    fn revoked(_slot: &CountedSlot) -> futures_util::future::BoxFuture<'static, ()> {
        let mut rx = REVOKE
            .with(|r| r.borrow().clone())
            .expect("revocation wired");
        Box::pin(async move {
            let _ = rx.wait_for(|r| *r).await;
        })
    }
}

thread_local! {
    // `Admit::revoked` is an associated function: the test's signal reaches it through here
    // (the tests below run on a current-thread runtime, so one thread sees it).
    static REVOKE: std::cell::RefCell<Option<tokio::sync::watch::Receiver<bool>>> =
        const { std::cell::RefCell::new(None) };
}

type Revoke = tokio::sync::watch::Sender<bool>;

async fn revocable(
    name: &str,
) -> (
    AdmissionLayer<HeaderKey, Revocable>,
    Arc<AtomicUsize>,
    Revoke,
) {
    let admission = Admission::start(redis(name), cap_one()).await.unwrap();
    let held = Arc::new(AtomicUsize::new(0));
    let (revoke, rx) = tokio::sync::watch::channel(false);
    REVOKE.with(|r| *r.borrow_mut() = Some(rx));
    let source = Revocable {
        inner: Counted {
            admission,
            held: Arc::clone(&held),
        },
    };
    let layer = AdmissionLayer::with_admitter(source, "default", HeaderKey::new(KEY)).unwrap();
    (layer, held, revoke)
}

#[tokio::test]
async fn a_revoked_slot_stops_the_handler_before_its_answer_and_is_refused() {
    let (layer, held, revoke) = revocable("adm-revoke-head").await;
    let obs = Arc::new(Observer::default());
    let handler = {
        let obs = obs.clone();
        move || {
            let obs = obs.clone();
            async move {
                obs.running.fetch_add(1, Ordering::SeqCst);
                let _running = Running(obs);
                std::future::pending::<()>().await;
                "never"
            }
        }
    };
    let app = Router::new().route("/", route_get(handler)).layer(layer);
    let call = tokio::spawn(app.oneshot(get("/", "a")));
    while obs.running.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    revoke.send_replace(true);
    let resp = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the request was not stopped")
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(header(&resp, "retry-after").unwrap(), "5");
    assert_eq!(problem(resp).await["code"], "service_unavailable");
    assert_eq!(
        obs.running.load(Ordering::SeqCst),
        0,
        "the handler was stopped"
    );
    assert_eq!(held.load(Ordering::SeqCst), 0, "the slot was let go");
}

#[tokio::test]
async fn a_revoked_slot_cuts_its_streamed_body_with_an_error() {
    let (layer, held, revoke) = revocable("adm-revoke-body").await;
    let obs = Arc::new(Observer::default());
    // The gate is never opened: the stream would wait for its last chunk forever.
    let app = app(layer, obs.clone(), Arc::new(Semaphore::new(0)));
    let resp = app.oneshot(get("/", "a")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "first\n");
    assert_eq!(held.load(Ordering::SeqCst), 1);
    revoke.send_replace(true);
    let cut = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("the body was not cut")
        .expect("a frame after the revocation");
    let err = cut.expect_err("the body ends with an error, not as if complete");
    assert!(err.to_string().contains("slot revoked"), "{err}");
    assert_eq!(
        obs.running.load(Ordering::SeqCst),
        0,
        "the stream was dropped"
    );
    assert_eq!(held.load(Ordering::SeqCst), 0, "the slot was let go");
}
