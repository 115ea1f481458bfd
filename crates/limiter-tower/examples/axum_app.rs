//! A plain axum app protected by fleet-wide limits kept in Redis: 5 requests a minute per client
//! address, and one running request per address at a time (the others wait in the fleet-wide
//! queue; a streamed answer keeps its slot until its last byte).
//!
//! Run: `cargo run -p limiter-tower --example axum_app` (Redis at `REDIS_URL`, default
//! `redis://127.0.0.1:6379`), then `curl -N localhost:3000/stream` twice at once.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use limiter_core::{Admission, AdmissionConfig, RedisConfig, RedisHandle, WindowPolicy};
use limiter_tower::{AdmissionLayer, ClientIpKey, SlidingWindowLayer};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Puts `routes` behind the limits, their state in Redis under the key prefix `prefix`.
pub async fn protect(routes: Router, redis_url: &str, prefix: &str) -> Result<Router, Error> {
    let redis = RedisHandle::new(&RedisConfig {
        url: redis_url.into(),
        prefix: prefix.into(),
        ..RedisConfig::default()
    })?;
    // axum keeps the peer address in `ConnectInfo`.
    let client = ClientIpKey::direct()
        .peer_from(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()));
    let per_minute = WindowPolicy::new("app", 5, Duration::from_secs(60));
    let window = SlidingWindowLayer::new(redis.clone(), per_minute, client.clone())?;
    let queue = AdmissionConfig {
        user_cap: 1,
        global_cap: 20,
        ..AdmissionConfig::default()
    };
    let admission = AdmissionLayer::new(Admission::start(redis, queue).await?, "default", client)?
        .queue_timeout(Duration::from_secs(30));
    // The last layer added runs first: the window refuses before anything queues.
    Ok(routes.layer(admission).layer(window))
}

/// A quick answer and a slow streamed one.
fn routes() -> Router {
    let ticks = || {
        futures_util::StreamExt::then(futures_util::stream::iter(1..=5), |i| async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok::<_, std::convert::Infallible>(format!("tick {i}\n"))
        })
    };
    Router::new().route("/", get(|| async { "hello\n" })).route(
        "/stream",
        get(move || async move { Body::from_stream(ticks()) }),
    )
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let app = protect(routes(), &url, "example").await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).await?;
    Ok(())
}
