//! [`ValidJson`]: axum's `Json` with its rejections turned into the contract's problem documents:
//! an over-long body is 413 `payload_too_large`, a body not read by the request's deadline 408
//! `request_timeout`, anything else 400 `invalid_request` with serde's explanation (field,
//! expected type, position) as the detail.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRef, FromRequest, Request};
use axum::http::StatusCode;
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

impl<S, T> FromRequest<S> for ValidJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
    MaxBodyBytes: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = MaxBodyBytes::from_ref(state).0;
        let deadline = req.extensions().get::<BodyDeadline>().map(|d| d.0);
        let read = Json::<T>::from_request(req, state);
        let result = match deadline {
            // A client sending its body a byte at a time holds a connection and a task for as long
            // as it likes unless the whole body has a deadline.
            Some(d) => tokio::time::timeout_at(d, read)
                .await
                .map_err(|_| ApiError::RequestTimeout)?,
            None => read.await,
        };
        match result {
            Ok(Json(v)) => Ok(ValidJson(v)),
            Err(rej) => Err(rejection(rej, limit)),
        }
    }
}

fn rejection(rej: JsonRejection, limit: usize) -> ApiError {
    if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge { limit };
    }
    match rej {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::InvalidRequest("expected `Content-Type: application/json`".into())
        }
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::InvalidRequest(format!("malformed JSON: {}", inner_text(&e.body_text())))
        }
        JsonRejection::JsonDataError(e) => ApiError::InvalidRequest(inner_text(&e.body_text())),
        other => ApiError::InvalidRequest(format!(
            "unreadable body: {}",
            inner_text(&other.body_text())
        )),
    }
}

/// Drops axum's generic prefix, keeping serde's specific message.
fn inner_text(text: &str) -> String {
    text.split_once(": ")
        .map_or(text, |(_, rest)| rest)
        .chars()
        .take(300)
        .collect()
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
