//! One HTTP exchange as the outbound wrapper wants it: a classified [`Attempt`], with the body
//! read under a size cap.

use breaker_store::{Attempt, StatusClass, classify_status, parse_retry_after};
use bytes::{Bytes, BytesMut};

use super::UpstreamError;

/// Largest upstream body read (a defence against a misbehaving upstream, not a protocol limit).
pub(crate) const MAX_BODY: usize = 8 << 20;

/// Sends a request and reads its body, classifying the outcome for breaker and retries.
pub(crate) async fn exchange(
    service: &'static str,
    req: reqwest::RequestBuilder,
) -> Attempt<Bytes, UpstreamError> {
    let resp = match req.send().await {
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
