//! One HTTP exchange as the outbound wrapper wants it: a classified [`Attempt`], with the body
//! read under a size cap.

use breaker_store::{Attempt, StatusClass, classify_status, parse_retry_after};
use bytes::{Bytes, BytesMut};
use tokio::time::Instant;
use tracing::Instrument;
use tracing::field::Empty;

use super::UpstreamError;

/// Largest upstream body read (a defence against a misbehaving upstream, not a protocol limit).
pub(crate) const MAX_BODY: usize = 8 << 20;

/// Sends one request as an OpenTelemetry HTTP client span whose context travels in the
/// request's `traceparent`/`tracestate`, and times it per service and outcome.
pub(crate) async fn send(
    service: &'static str,
    req: reqwest::RequestBuilder,
) -> Result<reqwest::Response, reqwest::Error> {
    let (client, req) = req.build_split();
    let mut req = req?;
    let url = req.url();
    // Without the query: it may carry API keys.
    let full = format!(
        "{}://{}{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port().map(|p| format!(":{p}")).unwrap_or_default(),
        url.path()
    );
    let span = tracing::info_span!(
        "upstream.http",
        otel.name = req.method().as_str(),
        otel.kind = "client",
        otel.status_code = Empty,
        http.request.method = req.method().as_str(),
        http.response.status_code = Empty,
        server.address = url.host_str().unwrap_or(""),
        server.port = url.port_or_known_default(),
        url.full = %full,
        fleetgate.upstream = service,
    );
    span.in_scope(|| {
        req.headers_mut()
            .extend(crate::instrumentation::get().trace_headers())
    });
    let start = Instant::now();
    let r = client.execute(req).instrument(span.clone()).await;
    let outcome = match &r {
        Ok(resp) => {
            let status = resp.status().as_u16();
            span.record("http.response.status_code", status);
            match classify_status(status) {
                StatusClass::Success => "success",
                StatusClass::Rejected => "rejected",
                StatusClass::Failure => "failure",
            }
        }
        Err(e) if e.is_timeout() => "timeout",
        Err(_) => "transport",
    };
    if !matches!(outcome, "success" | "rejected") {
        span.record("otel.status_code", "ERROR");
    }
    crate::instrumentation::get().attempt(service, outcome, start.elapsed());
    r
}

/// Sends a request and reads its body, classifying the outcome for breaker and retries.
pub(crate) async fn exchange(
    service: &'static str,
    req: reqwest::RequestBuilder,
) -> Attempt<Bytes, UpstreamError> {
    let resp = match send(service, req).await {
        Ok(r) => r,
        Err(e) => {
            return Attempt::Failure {
                error: transport(service, &e),
                retry_after: None,
            };
        }
    };
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    match classify_status(status) {
        StatusClass::Success => match read_capped(service, resp).await {
            Ok(b) => Attempt::Success(b),
            Err(error) => Attempt::Failure {
                error,
                retry_after: None,
            },
        },
        StatusClass::Failure => Attempt::Failure {
            error: UpstreamError::Unavailable {
                service,
                retry_after,
            },
            retry_after,
        },
        StatusClass::Rejected => Attempt::Rejected(UpstreamError::Rejected { service, status }),
    }
}

/// Maps a transport error (connect, reset, timeout) to our error.
pub(crate) fn transport(service: &'static str, e: &reqwest::Error) -> UpstreamError {
    if e.is_timeout() {
        UpstreamError::Timeout { service }
    } else {
        UpstreamError::Unavailable {
            service,
            retry_after: None,
        }
    }
}

/// Reads a body, refusing more than [`MAX_BODY`] bytes.
pub(crate) async fn read_capped(
    service: &'static str,
    mut resp: reqwest::Response,
) -> Result<Bytes, UpstreamError> {
    let mut buf = BytesMut::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > MAX_BODY {
                    return Err(UpstreamError::Malformed {
                        service,
                        detail: "body too large".into(),
                    });
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf.freeze()),
            Err(e) => return Err(transport(service, &e)),
        }
    }
}

/// Applies a parser to a successful body; a body that does not parse is a failure of the
/// upstream (counted by the breaker, retried like a 5xx).
pub(crate) fn parsed<T>(
    service: &'static str,
    attempt: Attempt<Bytes, UpstreamError>,
    parse: impl FnOnce(&[u8]) -> Result<T, String>,
) -> Attempt<T, UpstreamError> {
    match attempt {
        Attempt::Success(body) => match parse(&body) {
            Ok(v) => Attempt::Success(v),
            Err(detail) => Attempt::Failure {
                error: UpstreamError::Malformed { service, detail },
                retry_after: None,
            },
        },
        Attempt::Failure { error, retry_after } => Attempt::Failure { error, retry_after },
        Attempt::Rejected(e) => Attempt::Rejected(e),
    }
}
