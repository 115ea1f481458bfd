//! The example app (`examples/axum_app.rs`, included as a module) served over TCP against the
//! machine's Redis: a request queues behind a streamed answer (cap 1 per address) and is served
//! once that answer's body ends, and the window refuses the sixth request of the minute. The
//! README shows the same code as the example file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../examples/axum_app.rs"]
#[allow(dead_code)]
mod axum_app;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use tokio::sync::Semaphore;

/// Requests running now (handler start to end of body) and the most seen at once.
#[derive(Debug, Default)]
struct Observer {
    running: AtomicUsize,
    max: AtomicUsize,
}

struct Running(Arc<Observer>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `/` answers at once; `/stream` sends a first chunk, then its last once `gate` gives a permit.
fn routes(obs: Arc<Observer>, gate: Arc<Semaphore>) -> Router {
    let stream = move || {
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
            Body::from_stream(futures_util::StreamExt::map(chunks, move |c| {
                let _held = &running;
                c
            }))
        }
    };
    Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route("/stream", get(stream))
}

#[tokio::test]
async fn the_example_queues_behind_a_stream_and_rate_limits() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let obs = Arc::new(Observer::default());
    let gate = Arc::new(Semaphore::new(0));
    let prefix = testkit::unique_prefix("example");
    let app = axum_app::protect(
        routes(obs.clone(), gate.clone()),
        &testkit::redis_url(),
        &prefix,
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{addr}{path}");

    // A streams; its first chunk is out, its body not finished.
    let mut a = http.get(url("/stream")).send().await.unwrap();
    assert_eq!(a.status(), 200);
    assert_eq!(a.chunk().await.unwrap().unwrap(), "first\n");

    // B (same address, cap 1) queues until A's body ends.
    let b = tokio::spawn({
        let req = http.get(url("/stream"));
        async move { req.send().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!b.is_finished(), "B must queue while A streams");
    assert_eq!(obs.running.load(Ordering::SeqCst), 1);
    gate.add_permits(1);
    assert_eq!(a.chunk().await.unwrap().unwrap(), "last\n");
    assert!(a.chunk().await.unwrap().is_none());
    let b = tokio::time::timeout(Duration::from_secs(10), b)
        .await
        .expect("B admitted once A's body ended")
        .unwrap();
    assert_eq!(b.status(), 200);
    gate.add_permits(1);
    assert_eq!(b.text().await.unwrap(), "first\nlast\n");
    assert_eq!(obs.max.load(Ordering::SeqCst), 1, "never above the cap");

    // Two requests are in this minute's window of 5: three more pass, the sixth is refused.
    for _ in 0..3 {
        let r = http.get(url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = http.get(url("/")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert!(
        r.headers()["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"app\";r=0;")
    );
    let doc: serde_json::Value = r.json().await.unwrap();
    assert_eq!(doc["code"], "rate_limited");
}

/// The README sections show the example file as it is.
#[test]
fn readmes_show_the_example() {
    let example = include_str!("../examples/axum_app.rs");
    for (name, readme) in [
        ("crate README", include_str!("../README.md")),
        ("root README", include_str!("../../../README.md")),
    ] {
        assert!(
            readme.contains(example.trim_end()),
            "{name}: the snippet differs from examples/axum_app.rs"
        );
    }
}
