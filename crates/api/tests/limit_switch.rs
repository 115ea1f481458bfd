//! The benchmarks' routers (`api::bench_support`) are the service's own router with limit layers
//! left out, nothing else: a user without quota is refused by the full router and served by the
//! ones without the quota; the per-IP window's headers come only from the routers that keep it.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use api::bench_support::{Without, app_without};
use common::*;

async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routers_without_limits_leave_out_exactly_those_layers() {
    let db = TestDb::create().await;
    let prefix = testkit::unique_prefix("switch");
    let cfg = config(&db, &prefix);
    let store = migrate(&cfg).await;
    store.set_override("sw-user", Some(0)).await.unwrap();
    let fake = FakeAssistant::new(Duration::ZERO, usize::MAX, Mode::Answer);
    let full = Server::start(cfg, fake.clone()).await;
    let state = full.state.clone();
    let c = client();
    let post = |addr: String| {
        c.post(format!("{addr}/api/chat"))
            .bearer_auth(token("sw-user"))
            .json(&serde_json::json!({"message": "q"}))
            .send()
    };
    let r = post(full.url("")).await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("ratelimit-policy"));
    assert_eq!(problem_code(r).await, "daily_quota_exhausted");

    let no_quota = serve(app_without(state.clone(), Without::Quota)).await;
    let r = post(format!("http://{no_quota}")).await.unwrap();
    assert_eq!(r.status(), 200, "no quota spent");
    assert!(r.headers().contains_key("ratelimit-policy"), "window kept");

    let none = serve(app_without(state.clone(), Without::Limiters)).await;
    let r = post(format!("http://{none}")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(!r.headers().contains_key("ratelimit-policy"), "no window");
    // Authentication is not a limit: it stays.
    let r = c
        .post(format!("http://{none}/api/chat"))
        .json(&serde_json::json!({"message": "q"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(store.remaining("sw-user").await.unwrap(), 0);
}
