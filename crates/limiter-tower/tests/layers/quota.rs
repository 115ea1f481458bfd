//! QuotaLayer: check before, commit on success, refund on a 5xx or before the first byte.
//!
//! The hook is a small in-memory quota (the library leaves the store to its user); what it was
//! asked to do arrives on a channel, since settlements run in the background.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get as route_get;
use http::StatusCode;
use limiter_tower::{HeaderKey, LimitHandle, Mode, QuotaDenied, QuotaHook, QuotaLayer};
use tokio::sync::{Semaphore, mpsc};
use tower::ServiceExt;

use super::{KEY, SOON, get, header, problem, text};

/// Units left per key (2 for a key not seen). With `answer`, each check reports "check" and
/// then waits for a permit of it, so a test decides when the check answers.
#[derive(Debug)]
pub(super) struct Hook {
    pub left: Mutex<HashMap<String, u32>>,
    pub events: mpsc::UnboundedSender<&'static str>,
    pub answer: Option<Arc<Semaphore>>,
}

impl QuotaHook for Hook {
    type Ticket = String;

    async fn check(&self, key: &str) -> Result<String, QuotaDenied> {
        if let Some(answer) = &self.answer {
            self.events.send("check").unwrap();
            answer.acquire().await.unwrap().forget();
        }
        let mut left = self.left.lock().unwrap();
        let n = left.entry(key.to_string()).or_insert(2);
        if *n == 0 {
            return Err(QuotaDenied {
                retry_after: Some(Duration::from_secs(3600)),
            });
        }
        *n -= 1;
        Ok(key.to_string())
    }

    async fn commit(&self, _: String) {
        self.events.send("commit").unwrap();
    }

    async fn refund(&self, key: String) {
        *self.left.lock().unwrap().get_mut(&key).unwrap() += 1;
        self.events.send("refund").unwrap();
    }
}

pub(super) async fn next(rx: &mut mpsc::UnboundedReceiver<&'static str>) -> &'static str {
    tokio::time::timeout(SOON, rx.recv())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn commits_successes_and_refunds_failures() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let hook = Hook {
        left: Mutex::new(HashMap::new()),
        events: tx,
        answer: None,
    };
    let never = || {
        // A stream that never yields: the client leaves before its first byte.
        Body::from_stream(futures_util::stream::pending::<
            Result<String, std::io::Error>,
        >())
    };
    let app = Router::new()
        .route("/ok", route_get(|| async { "fine" }))
        .route("/fail", route_get(|| async { StatusCode::BAD_GATEWAY }))
        .route("/slow", route_get(move || async move { never() }))
        .layer(QuotaLayer::new(hook, HeaderKey::new(KEY)));

    let resp = app.clone().oneshot(get("/ok", "u")).await.unwrap();
    assert_eq!(text(resp).await, "fine");
    assert_eq!(next(&mut rx).await, "commit");

    let resp = app.clone().oneshot(get("/fail", "u")).await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(next(&mut rx).await, "refund", "a 5xx is given back");

    let resp = app.clone().oneshot(get("/slow", "u")).await.unwrap();
    drop(resp);
    assert_eq!(next(&mut rx).await, "refund", "nothing was served");

    // One unit was spent (the first); one left.
    let resp = app.clone().oneshot(get("/ok", "u")).await.unwrap();
    assert_eq!(text(resp).await, "fine");
    assert_eq!(next(&mut rx).await, "commit");

    let resp = app.clone().oneshot(get("/ok", "u")).await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(header(&resp, "retry-after").unwrap(), "3600");
    assert_eq!(problem(resp).await["code"], "quota_exhausted");
    assert!(rx.try_recv().is_err(), "a refusal settles nothing");

    let no_key = http::Request::get("/ok").body(Body::empty()).unwrap();
    let resp = app.clone().oneshot(no_key).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(problem(resp).await["code"], "invalid_request");
}

/// [`Hook`], saying its spends are final once checked.
struct FinalSpends(Hook);

impl QuotaHook for FinalSpends {
    type Ticket = String;

    async fn check(&self, key: &str) -> Result<String, QuotaDenied> {
        self.0.check(key).await
    }

    async fn commit(&self, ticket: String) {
        self.0.commit(ticket).await;
    }

    async fn refund(&self, ticket: String) {
        self.0.refund(ticket).await;
    }

    fn commits(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn a_hook_without_commits_is_only_refunded() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let hook = FinalSpends(Hook {
        left: Mutex::new(HashMap::new()),
        events: tx,
        answer: None,
    });
    let app = Router::new()
        .route("/ok", route_get(|| async { "fine" }))
        .route("/fail", route_get(|| async { StatusCode::BAD_GATEWAY }))
        .layer(QuotaLayer::new(hook, HeaderKey::new(KEY)));
    let resp = app.clone().oneshot(get("/ok", "u")).await.unwrap();
    assert_eq!(text(resp).await, "fine");
    let resp = app.clone().oneshot(get("/fail", "u")).await.unwrap();
    assert_eq!(resp.status(), 502);
    // Events arrive in order: the success ran no commit before the failure's refund.
    assert_eq!(next(&mut rx).await, "refund");
    // Two units: the first success kept one, the refund gave the other back.
    let resp = app.clone().oneshot(get("/ok", "u")).await.unwrap();
    assert_eq!(text(resp).await, "fine");
    let resp = app.clone().oneshot(get("/ok", "u")).await.unwrap();
    assert_eq!(resp.status(), 429);
    assert!(rx.try_recv().is_err(), "a commit ran");
}

#[tokio::test]
async fn shadow_lets_a_request_without_quota_through_unspent() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let hook = Hook {
        left: Mutex::new(HashMap::from([("u".to_string(), 0)])),
        events: tx,
        answer: None,
    };
    let handle = LimitHandle::new();
    handle.set_mode(Mode::Shadow);
    let app = Router::new()
        .route("/ok", route_get(|| async { "fine" }))
        .layer(QuotaLayer::new(hook, HeaderKey::new(KEY)).handle(handle.clone()));
    let resp = app.clone().oneshot(get("/ok", "u")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "limit-shadow-refusal").unwrap(),
        "quota_exhausted"
    );
    assert_eq!(text(resp).await, "fine");
    assert_eq!(handle.shadow_refusals(), 1);
    // A key with quota is spent and committed as usual.
    let resp = app.clone().oneshot(get("/ok", "v")).await.unwrap();
    assert_eq!(header(&resp, "limit-shadow-refusal"), None);
    assert_eq!(text(resp).await, "fine");
    assert_eq!(next(&mut rx).await, "commit");
    assert!(rx.try_recv().is_err(), "the refused one settled nothing");
}
