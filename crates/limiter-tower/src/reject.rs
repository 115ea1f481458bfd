//! Refusals ([`LimitRejection`]) and how they become responses ([`RejectionRenderer`]; the default
//! [`ProblemJson`] writes RFC 9457 `application/problem+json`).
//!
//! A refusal carries only what the client may know: a stable code, a status and when to retry.
//! Internal causes (a Redis error, say) are logged by the layer and never rendered.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

/// Why a layer refused a request.
///
/// ```
/// use std::time::Duration;
/// use limiter_tower::LimitRejection;
///
/// let r = LimitRejection::QueueTimeout { retry_after: Duration::from_secs(10) };
/// assert_eq!(r.status(), 503);
/// assert_eq!(r.code(), "queue_timeout");
/// assert_eq!(r.retry_after(), Some(Duration::from_secs(10)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitRejection {
    /// The client's sliding window is full (429 `rate_limited`).
    RateLimited {
        /// Until the window admits again.
        retry_after: Duration,
    },
    /// No slot became free before the queue timeout (503 `queue_timeout`).
    QueueTimeout {
        /// Suggested wait.
        retry_after: Duration,
    },
    /// The wait queue is at its maximum length (503 `queue_full`).
    QueueFull {
        /// Suggested wait.
        retry_after: Duration,
    },
    /// This key already has its maximum of waiters (429 `user_queue_full`).
    UserQueueFull {
        /// Suggested wait.
        retry_after: Duration,
    },
    /// The [`crate::QuotaHook`] refused (429 `quota_exhausted`).
    QuotaExhausted {
        /// When the quota renews, if the hook knows.
        retry_after: Option<Duration>,
    },
    /// The [`crate::KeyExtractor`] found no key: the request does not say who it is for
    /// (400 `invalid_request`).
    NoKey,
    /// This replica is shutting down and admits no more requests; another replica will
    /// (503 `service_unavailable`).
    ShuttingDown {
        /// Suggested wait.
        retry_after: Duration,
    },
    /// The limiter could not decide (Redis unreachable with fail-closed, the queue reset)
    /// (503 `service_unavailable`).
    Unavailable {
        /// Suggested wait.
        retry_after: Duration,
    },
}

impl LimitRejection {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            LimitRejection::RateLimited { .. }
            | LimitRejection::UserQueueFull { .. }
            | LimitRejection::QuotaExhausted { .. } => StatusCode::TOO_MANY_REQUESTS,
            LimitRejection::NoKey => StatusCode::BAD_REQUEST,
            LimitRejection::QueueTimeout { .. }
            | LimitRejection::QueueFull { .. }
            | LimitRejection::ShuttingDown { .. }
            | LimitRejection::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            LimitRejection::RateLimited { .. } => "rate_limited",
            LimitRejection::QueueTimeout { .. } => "queue_timeout",
            LimitRejection::QueueFull { .. } => "queue_full",
            LimitRejection::UserQueueFull { .. } => "user_queue_full",
            LimitRejection::QuotaExhausted { .. } => "quota_exhausted",
            LimitRejection::NoKey => "invalid_request",
            LimitRejection::ShuttingDown { .. } | LimitRejection::Unavailable { .. } => {
                "service_unavailable"
            }
        }
    }

    /// A short human-readable summary.
    pub fn title(&self) -> &'static str {
        match self {
            LimitRejection::RateLimited { .. } => "Too many requests",
            LimitRejection::QueueTimeout { .. } => "No capacity became free in time",
            LimitRejection::QueueFull { .. } => "Too many requests are waiting",
            LimitRejection::UserQueueFull { .. } => "Too many of your requests are waiting",
            LimitRejection::QuotaExhausted { .. } => "Quota exhausted",
            LimitRejection::NoKey => "Request not identifiable",
            LimitRejection::ShuttingDown { .. } => "Server shutting down",
            LimitRejection::Unavailable { .. } => "Service temporarily unavailable",
        }
    }

    /// When to retry, where known (the `Retry-After` header).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LimitRejection::RateLimited { retry_after }
            | LimitRejection::QueueTimeout { retry_after }
            | LimitRejection::QueueFull { retry_after }
            | LimitRejection::UserQueueFull { retry_after }
            | LimitRejection::ShuttingDown { retry_after }
            | LimitRejection::Unavailable { retry_after } => Some(*retry_after),
            LimitRejection::QuotaExhausted { retry_after } => *retry_after,
            LimitRejection::NoKey => None,
        }
    }
}

/// Whole seconds, rounded up, at least 1 (`Retry-After: 0` invites a hot retry loop).
pub(crate) fn secs_ceil(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

/// Turns a refusal into a response. Implement it to answer in your own format; the layers add
/// their own headers (`RateLimit`, ...) to what it returns.
///
/// ```
/// use bytes::Bytes;
/// use http::{Response, StatusCode};
/// use limiter_tower::{LimitRejection, RejectionRenderer};
///
/// #[derive(Debug)]
/// struct Plain;
///
/// impl RejectionRenderer for Plain {
///     fn render(&self, r: &LimitRejection) -> Response<Bytes> {
///         let mut resp = Response::new(Bytes::from(r.code()));
///         *resp.status_mut() = r.status();
///         resp
///     }
/// }
///
/// let resp = Plain.render(&LimitRejection::NoKey);
/// assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
/// ```
pub trait RejectionRenderer: Send + Sync + std::fmt::Debug + 'static {
    /// The response for `rejection`.
    fn render(&self, rejection: &LimitRejection) -> Response<Bytes>;
}

/// The default renderer: RFC 9457 problem details with a stable `code` member, and
/// `Retry-After` (whole seconds, at least 1) when the refusal knows when to retry.
///
/// ```
/// use std::time::Duration;
/// use limiter_tower::{LimitRejection, ProblemJson, RejectionRenderer};
///
/// let resp = ProblemJson::default().render(&LimitRejection::RateLimited {
///     retry_after: Duration::from_millis(1500),
/// });
/// assert_eq!(resp.status(), 429);
/// assert_eq!(resp.headers()["retry-after"], "2");
/// assert_eq!(resp.headers()["content-type"], "application/problem+json");
/// let doc: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
/// assert_eq!(doc["code"], "rate_limited");
/// assert_eq!(doc["type"], "about:blank");
/// ```
#[derive(Debug, Clone, Default)]
pub struct ProblemJson {
    type_prefix: Option<String>,
}

impl ProblemJson {
    /// Problem `type` URIs made of `prefix` and the code (`urn:example:problem:` gives
    /// `urn:example:problem:rate_limited`) instead of `about:blank`.
    pub fn with_type_prefix(prefix: impl Into<String>) -> Self {
        ProblemJson {
            type_prefix: Some(prefix.into()),
        }
    }
}

impl RejectionRenderer for ProblemJson {
    fn render(&self, r: &LimitRejection) -> Response<Bytes> {
        let kind = match &self.type_prefix {
            Some(p) => format!("{p}{}", r.code()),
            None => "about:blank".to_string(),
        };
        let detail = match r.retry_after() {
            Some(d) => format!("{}; retry in {} s", r.title(), secs_ceil(d)),
            None => r.title().to_string(),
        };
        let doc = serde_json::json!({
            "type": kind,
            "title": r.title(),
            "status": r.status().as_u16(),
            "code": r.code(),
            "detail": detail,
        });
        let mut resp = Response::new(Bytes::from(doc.to_string()));
        *resp.status_mut() = r.status();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(d) = r.retry_after() {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs_ceil(d)));
        }
        resp
    }
}

/// Marks a response as a refusal of one of this crate's layers (in its extensions), so that an
/// outer quota gives back what it spent: the request was not served.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refused;

/// Renders `r` as a [`crate::LimitBody`] response.
pub(crate) fn rendered<B>(
    renderer: &dyn RejectionRenderer,
    r: &LimitRejection,
) -> Response<crate::LimitBody<B>> {
    let mut resp = renderer.render(r).map(crate::LimitBody::full);
    resp.extensions_mut().insert(Refused);
    resp
}
