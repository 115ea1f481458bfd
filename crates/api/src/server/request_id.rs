//! Middleware run before the request-id layer: a caller's `x-request-id` is kept only if it is a
//! plausible id (1 to [`MAX_LEN`] characters of `A-Z a-z 0-9 . _ : -`, one header); anything else
//! is dropped, so the layer mints a UUID instead. The id goes into every log line of the request,
//! onto its trace and back to the caller: an unchecked one would let a client write kilobytes, or
//! characters that forge log structure, into each of them.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

/// Longest id kept (a UUID is 36, a W3C trace id 32).
pub const MAX_LEN: usize = 64;

/// Whether a caller's id is kept.
pub fn acceptable(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_LEN
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
}

/// Drops an `x-request-id` that is not [`acceptable`] (or sent more than once).
pub async fn sanitize_request_id(mut req: Request, next: Next) -> Response {
    let headers = req.headers_mut();
    let mut ids = headers.get_all("x-request-id").iter();
    let keep = match (ids.next(), ids.next()) {
        (Some(v), None) => acceptable(v),
        (None, _) => true,
        (Some(_), Some(_)) => false,
    };
    if !keep {
        headers.remove("x-request-id");
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plausible_ids_are_kept() {
        for ok in [
            "0b9c1c7e-0f5e-4c62-9a8e-0d6c1f3c8f11",
            "a",
            "req_01HZX:3.4-5",
            &"x".repeat(MAX_LEN),
        ] {
            assert!(
                acceptable(&HeaderValue::from_str(ok).unwrap_or_else(|_| unreachable!())),
                "{ok}"
            );
        }
        for bad in [
            &b""[..],
            &[b'x'; MAX_LEN + 1],
            b"has space",
            b"quote\"",
            b"brace{}",
            b"\xff\xfe",
            b"tab\there",
        ] {
            let v = HeaderValue::from_bytes(bad).unwrap_or_else(|_| unreachable!());
            assert!(!acceptable(&v), "{bad:?}");
        }
    }
}
