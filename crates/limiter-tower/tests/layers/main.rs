//! Each layer against the machine's Redis (`FLEETGATE_TEST_REDIS_URL`), in process: requests go
//! through an axum router with `oneshot`, so a test holds, reads or drops response bodies itself.
//! Every test uses its own key prefix.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admission;
mod outbound;
mod overlap;
mod quota;
mod runtime;
mod window;
mod windows;

use std::time::Duration;

use axum::body::Body;
use http::{HeaderName, Request, Response};
use http_body_util::BodyExt;
use limiter_core::{RedisConfig, RedisHandle};

/// A handle on the test Redis under a prefix of its own.
pub fn redis(name: &str) -> RedisHandle {
    RedisHandle::new(&RedisConfig {
        url: testkit::redis_url(),
        prefix: testkit::unique_prefix(name),
        ..RedisConfig::default()
    })
    .unwrap()
}

/// The header the tests key by.
pub const KEY: HeaderName = HeaderName::from_static("x-key");

/// `GET path` for `key`.
pub fn get(path: &str, key: &str) -> Request<Body> {
    Request::get(path)
        .header(KEY, key)
        .body(Body::empty())
        .unwrap()
}

/// The whole body as text.
pub async fn text<B>(resp: Response<B>) -> String
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The problem document of a refusal.
pub async fn problem<B>(resp: Response<B>) -> serde_json::Value
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    assert_eq!(
        resp.headers()["content-type"],
        "application/problem+json",
        "{:?}",
        resp.headers()
    );
    serde_json::from_str(&text(resp).await).unwrap()
}

/// A header as text.
pub fn header<B>(resp: &Response<B>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// Generous bound for anything that should happen "at once".
pub const SOON: Duration = Duration::from_secs(10);
