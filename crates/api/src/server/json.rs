//! [`ValidJson`]: a JSON body read as axum's `Json` reads it (same media types, serde's errors),
//! refused with the contract's problem documents: an over-long body is 413 `payload_too_large`, a
//! body not read by the request's deadline 408 `request_timeout`, anything else 400
//! `invalid_request` with serde's explanation (field, expected type, position) as the detail.
//! [`ValidJson::read`] takes the request's head by reference, for a middleware that reads the
//! body and passes the head on.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRef, FromRequest, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::server::connection::BodyDeadline;

/// The largest request body (`FLEETGATE_HTTP_MAX_BODY_BYTES`), taken from the router's state (the
/// state implements `FromRef` for it), named in the 413 detail.
#[derive(Debug, Clone, Copy)]
pub struct MaxBodyBytes(pub usize);

/// A JSON body, or a problem response.
#[derive(Debug, Clone)]
pub struct ValidJson<T>(pub T);

impl<T: DeserializeOwned> ValidJson<T> {
    /// The JSON body of the request `head` belongs to, at most `limit` bytes, read by the
    /// request's `BodyDeadline`; refused as the extractor refuses it. The head is only borrowed,
    /// so a middleware can read the body and pass the same head on.
    pub async fn read(head: &Parts, body: Body, limit: usize) -> Result<Self, ApiError> {
        let deadline = head.extensions.get::<BodyDeadline>().map(|d| d.0);
        let read = read_json(&head.headers, body, limit);
        match deadline {
            // A client sending its body a byte at a time holds a connection and a task for as long
            // as it likes unless the whole body has a deadline.
            Some(d) => tokio::time::timeout_at(d, read)
                .await
                .map_err(|_| ApiError::RequestTimeout)?,
            None => read.await,
        }
    }
}

impl<S, T> FromRequest<S> for ValidJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
    MaxBodyBytes: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (head, body) = req.into_parts();
        Self::read(&head, body, MaxBodyBytes::from_ref(state).0).await
    }
}

/// What axum's `Json` extractor does, from the headers alone rather than a whole request.
async fn read_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<ValidJson<T>, ApiError> {
    if !json_content_type(headers) {
        return Err(ApiError::InvalidRequest(
            "expected `Content-Type: application/json`".into(),
        ));
    }
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if is_length_limit(e.as_ref()) => return Err(ApiError::PayloadTooLarge { limit }),
        Err(e) => {
            return Err(ApiError::InvalidRequest(format!(
                "unreadable body: {}",
                clip(&e.to_string())
            )));
        }
    };
    match Json::<T>::from_bytes(&bytes) {
        Ok(Json(v)) => Ok(ValidJson(v)),
        Err(rej) => Err(rejection(rej)),
    }
}

/// `application/json` or any `application/*+json`, parameters allowed (axum's own rule).
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(mime) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
    else {
        return false;
    };
    mime.type_() == "application"
        && (mime.subtype() == "json" || mime.suffix().is_some_and(|s| s == "json"))
}

/// Whether reading failed on the length limit, also when the error comes wrapped in axum's
/// (as from a body another layer limited).
fn is_length_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.is::<LengthLimitError>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// A body that is not the JSON `T` expects: serde's explanation (field, expected type, position).
fn rejection(rej: JsonRejection) -> ApiError {
    match rej {
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::InvalidRequest(format!("malformed JSON: {}", inner_text(&e.body_text())))
        }
        JsonRejection::JsonDataError(e) => ApiError::InvalidRequest(inner_text(&e.body_text())),
        // `Json::from_bytes` refuses with the two above only, but the enum is open.
        other => ApiError::InvalidRequest(format!(
            "unreadable body: {}",
            inner_text(&other.body_text())
        )),
    }
}

/// Drops axum's generic prefix, keeping serde's specific message.
fn inner_text(text: &str) -> String {
    clip(text.split_once(": ").map_or(text, |(_, rest)| rest))
}

/// At most 300 characters of `text`: a detail stays short whatever the body held.
fn clip(text: &str) -> String {
    text.chars().take(300).collect()
}

/// Whether `s` has no visible content: only whitespace as the `\s` of the OpenAPI document's
/// `pattern: \S` understands it (ECMAScript's set), so the server and the published schema agree on
/// what a blank string is.
pub fn is_blank(s: &str) -> bool {
    s.chars().all(|c| {
        matches!(
            c,
            '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
                ..='\u{200a}'
                    | '\u{2028}'
                    | '\u{2029}'
                    | '\u{202f}'
                    | '\u{205f}'
                    | '\u{3000}'
                    | '\u{feff}'
        )
    })
}

/// Refuses a text field holding a control character other than tab and newline (see
/// [`chat::text::clean()`]): 400 `invalid_request` naming the field, the character and where it is.
pub fn no_control_chars(field: &str, value: &str) -> Result<(), ApiError> {
    match chat::text::first_disallowed(value) {
        None => Ok(()),
        Some((at, c)) => Err(ApiError::InvalidRequest(format!(
            "`{field}` contains the control character U+{:04X} at position {at}; only tab and \
             newline are allowed",
            u32::from(c)
        ))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn read(content_type: Option<&str>, body: Body, limit: usize) -> Result<u32, ApiError> {
        let mut req = Request::new(());
        if let Some(ct) = content_type {
            req.headers_mut()
                .insert(header::CONTENT_TYPE, ct.parse().unwrap());
        }
        let (head, ()) = req.into_parts();
        ValidJson::<u32>::read(&head, body, limit)
            .await
            .map(|ValidJson(v)| v)
    }

    #[tokio::test]
    async fn media_types_are_axums() {
        for ct in [
            "application/json",
            "application/json; charset=utf-8",
            "application/json;charset=utf-8",
            "application/cloudevents+json",
            "text/json",
            "application/jsonx",
            "application/",
            "json",
            "",
        ] {
            let mut req = Request::new(Body::from("1"));
            req.headers_mut()
                .insert(header::CONTENT_TYPE, ct.parse().unwrap());
            let axum = Json::<u32>::from_request(req, &()).await.is_ok();
            let ours = read(Some(ct), Body::from("1"), 1024).await.is_ok();
            assert_eq!(ours, axum, "{ct:?}");
        }
        let e = read(None, Body::from("1"), 1024).await.unwrap_err();
        assert!(matches!(e, ApiError::InvalidRequest(d) if d.contains("Content-Type")));
    }

    #[tokio::test]
    async fn length_syntax_and_type_are_refused() {
        let json = Some("application/json");
        assert_eq!(read(json, Body::from("1234"), 4).await.unwrap(), 1234);
        let e = read(json, Body::from("12345"), 4).await.unwrap_err();
        assert!(matches!(e, ApiError::PayloadTooLarge { limit: 4 }), "{e:?}");
        let e = read(json, Body::from("1 2"), 64).await.unwrap_err();
        let malformed =
            matches!(&e, ApiError::InvalidRequest(d) if d.starts_with("malformed JSON: "));
        assert!(malformed, "{e:?}");
        let e = read(json, Body::from("\"x\""), 64).await.unwrap_err();
        let wrong_type = matches!(&e, ApiError::InvalidRequest(d) if d.starts_with("invalid type"));
        assert!(wrong_type, "{e:?}");
    }

    #[tokio::test]
    async fn a_body_not_read_by_the_deadline_is_408() {
        let mut req = Request::new(());
        req.headers_mut()
            .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        req.extensions_mut()
            .insert(BodyDeadline(tokio::time::Instant::now()));
        let (head, ()) = req.into_parts();
        let never = futures_util::stream::pending::<Result<bytes::Bytes, std::io::Error>>();
        let e = ValidJson::<u32>::read(&head, Body::from_stream(never), 64)
            .await
            .unwrap_err();
        assert!(matches!(e, ApiError::RequestTimeout), "{e:?}");
    }
}
