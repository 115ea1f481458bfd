//! [`ValidJson`]: axum's `Json` with its rejections turned into the contract's problem documents:
//! an over-long body is 413 `payload_too_large`, anything else 400 `invalid_request` with serde's
//! explanation (field, expected type, position) as the detail.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A JSON body, or a problem response.
#[derive(Debug, Clone)]
pub struct ValidJson<T>(pub T);

impl<S, T> FromRequest<S> for ValidJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ValidJson(v)),
            Err(rej) => Err(rejection(rej)),
        }
    }
}

fn rejection(rej: JsonRejection) -> ApiError {
    if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge { limit: BODY_LIMIT };
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
