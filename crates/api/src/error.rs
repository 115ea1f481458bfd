//! The one error type of the service. Every failure a client can see is an [`ApiError`], rendered as
//! `application/problem+json` (RFC 9457) with a stable `code` from the interface contract. Internal
//! causes are logged here and never put in a response.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The problem document every error response carries.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type (`urn:fleetgate:problem:<code>`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Short human-readable summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// Stable machine-readable code (`rate_limited`, `daily_quota_exhausted`, ...).
    pub code: String,
    /// Explanation specific to this occurrence (never an internal error text).
    pub detail: String,
}

/// A failure as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Per-IP window closed (layer 1).
    #[error("rate limited")]
    RateLimited {
        /// Until another request would be admitted.
        retry_after: Duration,
    },
    /// The daily quota is spent (layer 3).
    #[error("daily quota exhausted")]
    QuotaExhausted {
        /// Until the next UTC midnight.
        retry_after: Duration,
        /// The user's daily limit.
        limit: u32,
    },
    /// Waited in the queue until the timeout (layer 2).
    #[error("queue timeout")]
    QueueTimeout {
        /// Suggested wait before retrying.
        retry_after: Duration,
    },
    /// The queue is full (layer 2).
    #[error("queue full")]
    QueueFull {
        /// Suggested wait before retrying.
        retry_after: Duration,
    },
    /// This user already has its maximum of waiters in the queue (layer 2).
    #[error("user queue full")]
    UserQueueFull {
        /// Suggested wait before retrying.
        retry_after: Duration,
    },
    /// An upstream's breaker is open or it failed.
    #[error("upstream unavailable")]
    UpstreamUnavailable {
        /// Suggested wait before retrying.
        retry_after: Duration,
    },
    /// An upstream did not answer in time.
    #[error("upstream timeout")]
    UpstreamTimeout,
    /// Missing, malformed or expired credentials.
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    /// Credentials present but not allowed.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// Bad input; the detail tells the client what to fix.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Body over the limit.
    #[error("payload too large")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The request body was not received by its deadline (`FLEETGATE_HTTP_BODY_TIMEOUT_MS`).
    #[error("request timeout")]
    RequestTimeout,
    /// The conversation is longer than an export may be (`FLEETGATE_EXPORT_MAX_MESSAGES`).
    #[error("export too large")]
    ExportTooLarge {
        /// Messages the conversation has, at least.
        messages: u64,
        /// The bound.
        limit: u32,
    },
    /// No such route or resource.
    #[error("not found")]
    NotFound(String),
    /// A dependency (PostgreSQL, Redis, the pipeline) cannot serve now, or the replica is
    /// shutting down. The cause goes to the log only.
    #[error("service unavailable: {cause}")]
    ServiceUnavailable {
        /// Suggested wait before retrying.
        retry_after: Duration,
        /// What the client is told.
        detail: &'static str,
        /// Logged, never returned.
        cause: String,
    },
    /// A bug or an unexpected state. The cause goes to the log only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A `service_unavailable` with a public detail and a logged cause.
    pub fn unavailable(detail: &'static str, cause: impl std::fmt::Display) -> Self {
        ApiError::ServiceUnavailable {
            retry_after: Duration::from_secs(5),
            detail,
            cause: cause.to_string(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::RateLimited { .. }
            | ApiError::QuotaExhausted { .. }
            | ApiError::UserQueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::QueueTimeout { .. }
            | ApiError::QueueFull { .. }
            | ApiError::UpstreamUnavailable { .. }
            | ApiError::ServiceUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::ExportTooLarge { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code of the interface contract.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::QuotaExhausted { .. } => "daily_quota_exhausted",
            ApiError::QueueTimeout { .. } => "queue_timeout",
            ApiError::QueueFull { .. } => "queue_full",
            ApiError::UserQueueFull { .. } => "user_queue_full",
            ApiError::UpstreamUnavailable { .. } => "upstream_unavailable",
            ApiError::UpstreamTimeout => "upstream_timeout",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::ExportTooLarge { .. } => "export_too_large",
            ApiError::NotFound(_) => "not_found",
            ApiError::ServiceUnavailable { .. } => "service_unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::RateLimited { .. } => "Too many requests from this address",
            ApiError::QuotaExhausted { .. } => "Daily query quota exhausted",
            ApiError::QueueTimeout { .. } => "Timed out waiting for a free slot",
            ApiError::QueueFull { .. } => "The wait queue is full",
            ApiError::UserQueueFull { .. } => "Too many of your requests are waiting",
            ApiError::UpstreamUnavailable { .. } => "An upstream service is unavailable",
            ApiError::UpstreamTimeout => "An upstream service timed out",
            ApiError::Unauthorized(_) => "Authentication required",
            ApiError::Forbidden(_) => "Not allowed",
            ApiError::InvalidRequest(_) => "Invalid request",
            ApiError::PayloadTooLarge { .. } => "Payload too large",
            ApiError::RequestTimeout => "Request body not received in time",
            ApiError::ExportTooLarge { .. } => "Conversation too long to export",
            ApiError::NotFound(_) => "Not found",
            ApiError::ServiceUnavailable { .. } => "Service temporarily unavailable",
            ApiError::Internal(_) => "Internal server error",
        }
    }

    fn detail(&self) -> String {
        match self {
            ApiError::RateLimited { retry_after } => format!(
                "request rate limit for this address reached; retry in {} s",
                secs_ceil(*retry_after)
            ),
            ApiError::QuotaExhausted { limit, .. } => format!(
                "all {limit} queries of today are used; the quota resets at 00:00 UTC"
            ),
            ApiError::QueueTimeout { .. } => {
                "no slot became free within the queue timeout; retry later".into()
            }
            ApiError::QueueFull { .. } => "too many requests are waiting; retry later".into(),
            ApiError::UserQueueFull { .. } => {
                "you already have the most requests allowed waiting; retry once one is served"
                    .into()
            }
            ApiError::UpstreamUnavailable { .. } => {
                "a service this request depends on is failing; retry later (your query was not counted)".into()
            }
            ApiError::UpstreamTimeout => {
                "a service this request depends on did not answer in time (your query was not counted)".into()
            }
            ApiError::Unauthorized(d) | ApiError::Forbidden(d) => (*d).into(),
            ApiError::InvalidRequest(d) | ApiError::NotFound(d) => d.clone(),
            ApiError::PayloadTooLarge { limit } => {
                format!("the request body exceeds the limit of {limit} bytes")
            }
            ApiError::RequestTimeout => {
                "the request body did not arrive within the time allowed; send it at once".into()
            }
            ApiError::ExportTooLarge { messages, limit } => format!(
                "the conversation has {messages} messages or more; an export holds at most {limit}"
            ),
            ApiError::ServiceUnavailable { detail, .. } => (*detail).into(),
            ApiError::Internal(_) => "an unexpected error occurred".into(),
        }
    }

    /// `Retry-After`, for the statuses that carry one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after }
            | ApiError::QuotaExhausted { retry_after, .. }
            | ApiError::QueueTimeout { retry_after }
            | ApiError::QueueFull { retry_after }
            | ApiError::UserQueueFull { retry_after }
            | ApiError::UpstreamUnavailable { retry_after }
            | ApiError::ServiceUnavailable { retry_after, .. } => Some(*retry_after),
            ApiError::UpstreamTimeout => Some(Duration::from_secs(5)),
            _ => None,
        }
    }

    /// The problem document.
    pub fn problem(&self) -> Problem {
        Problem {
            kind: format!("urn:fleetgate:problem:{}", self.code()),
            title: self.title().into(),
            status: self.status().as_u16(),
            code: self.code().into(),
            detail: self.detail(),
        }
    }
}

/// Whole seconds, rounded up, at least 1 (a `Retry-After: 0` invites a hot retry loop).
pub fn secs_ceil(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

/// Renders a problem document with a status and extra headers (used by layers as well).
pub fn problem_response(err: &ApiError, extra: HeaderMap) -> Response {
    let status = err.status();
    match err {
        ApiError::Internal(cause) => tracing::error!(code = err.code(), %cause, "request failed"),
        ApiError::ServiceUnavailable { cause, .. } => {
            tracing::warn!(code = err.code(), %cause, "request failed")
        }
        _ => tracing::debug!(code = err.code(), "request rejected"),
    }
    let body = serde_json::to_vec(&err.problem()).unwrap_or_default();
    let mut resp = (status, body).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if let Some(ra) = err.retry_after() {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs_ceil(ra)));
    }
    if matches!(err, ApiError::Unauthorized(_)) {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if matches!(err, ApiError::RequestTimeout) {
        // The rest of the body may still come; this connection cannot carry another request.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    for (name, value) in extra.iter() {
        headers.insert(HeaderName::clone(name), value.clone());
    }
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        problem_response(&self, HeaderMap::new())
    }
}
