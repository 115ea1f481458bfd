//! [`ApiRenderer`]: the limiter-tower layers' refusals in the service's own error contract (the
//! problem documents, codes and headers of [`ApiError`]), so a refusal reads the same whichever
//! layer made it.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderValue, Response, header};
use limiter_tower::{LimitRejection, RejectionRenderer};

use crate::error::{ApiError, secs_ceil};

/// Which limit refused: the wording of `service_unavailable` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiRenderer {
    /// The per-IP window.
    Window,
    /// Admission to a slot.
    Admission,
}

impl ApiRenderer {
    /// The service's error for a layer's refusal.
    pub fn api_error(self, r: &LimitRejection) -> ApiError {
        let ten = Duration::from_secs(10);
        match r {
            LimitRejection::RateLimited { retry_after } => ApiError::RateLimited {
                retry_after: *retry_after,
            },
            LimitRejection::QueueTimeout { retry_after } => ApiError::QueueTimeout {
                retry_after: *retry_after,
            },
            LimitRejection::QueueFull { retry_after } => ApiError::QueueFull {
                retry_after: *retry_after,
            },
            LimitRejection::UserQueueFull { retry_after } => ApiError::UserQueueFull {
                retry_after: *retry_after,
            },
            LimitRejection::ShuttingDown { retry_after } => ApiError::ServiceUnavailable {
                retry_after: *retry_after,
                detail: "this server is shutting down; retry",
                cause: "shutdown in progress".into(),
            },
            LimitRejection::NoKey => {
                ApiError::InvalidRequest("the request does not say who it is for".into())
            }
            LimitRejection::Unavailable { .. } if self == ApiRenderer::Window => {
                ApiError::unavailable("rate limiting is temporarily unavailable", "Redis error")
            }
            LimitRejection::Unavailable { retry_after } => ApiError::ServiceUnavailable {
                retry_after: *retry_after,
                detail: "admission is temporarily unavailable; retry",
                cause: "admission unavailable".into(),
            },
            other => ApiError::ServiceUnavailable {
                retry_after: other.retry_after().unwrap_or(ten),
                detail: "the service is temporarily unavailable; retry",
                cause: format!("limit refusal {}", other.code()),
            },
        }
    }
}

/// `err` as a complete problem+json response (what [`crate::error::problem_response`] writes).
pub fn rendered(err: &ApiError) -> Response<Bytes> {
    match err {
        ApiError::ServiceUnavailable { cause, .. } => {
            tracing::warn!(code = err.code(), %cause, "request failed")
        }
        _ => tracing::debug!(code = err.code(), "request rejected"),
    }
    let body = serde_json::to_vec(&err.problem()).unwrap_or_default();
    let mut resp = Response::new(Bytes::from(body));
    *resp.status_mut() = err.status();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if let Some(ra) = err.retry_after() {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs_ceil(ra)));
    }
    resp
}

impl RejectionRenderer for ApiRenderer {
    fn render(&self, r: &LimitRejection) -> Response<Bytes> {
        rendered(&self.api_error(r))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_window_refusal_reads_as_the_service_s_own() {
        let r = ApiRenderer::Window.render(&LimitRejection::RateLimited {
            retry_after: Duration::from_millis(2500),
        });
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "3");
        let doc: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(doc["type"], "urn:fleetgate:problem:rate_limited");
        assert_eq!(doc["code"], "rate_limited");
        let r = ApiRenderer::Window.render(&LimitRejection::Unavailable {
            retry_after: Duration::from_secs(1),
        });
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "5");
    }
}
