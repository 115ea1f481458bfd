//! Error bodies in each real API's own style, so clients exercise their real error parsing:
//! E-utilities `{"error": "..."}`, Semantic Scholar `{"error": "..."}` for bad requests and
//! `{"message": "...", "code": "429"}` from its gateway, OpenAI
//! `{"error": {"message", "type", "param", "code"}}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::settings::Group;

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// E-utilities style error.
pub fn pubmed(code: u16, message: &str) -> Response {
    (status(code), Json(json!({ "error": message }))).into_response()
}

/// Semantic Scholar style error for a bad request or unknown paper.
pub fn s2(code: u16, message: &str) -> Response {
    (status(code), Json(json!({ "error": message }))).into_response()
}

/// OpenAI style error.
pub fn openai(
    code: u16,
    kind: &str,
    err_code: Option<&str>,
    param: Option<&str>,
    message: &str,
) -> Response {
    let body = json!({
        "error": { "message": message, "type": kind, "param": param, "code": err_code }
    });
    (status(code), Json(body)).into_response()
}

/// An injected 429 with `Retry-After`, shaped like the group's real throttling answer.
pub fn throttled(group: Group, retry_after_secs: u64) -> Response {
    let mut resp = match group {
        Group::Pubmed => (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({ "error": "API rate limit exceeded", "api-key": "127.0.0.1", "count": "4", "limit": "3" })),
        )
            .into_response(),
        Group::S2 => (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({
                "message": "Too Many Requests. Please wait and try again or apply for a key for higher rate limits.",
                "code": "429"
            })),
        )
            .into_response(),
        Group::Llm => openai(
            429,
            "requests",
            Some("rate_limit_exceeded"),
            None,
            "Rate limit reached for requests. Please try again later.",
        ),
    };
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    resp
}

/// An injected server error (or a hang that ran out), shaped like the group's real one.
pub fn failure(group: Group, code: u16) -> Response {
    let reason = status(code).canonical_reason().unwrap_or("Server Error");
    match group {
        Group::Pubmed => pubmed(code, reason),
        Group::S2 => (status(code), Json(json!({ "message": reason }))).into_response(),
        Group::Llm => openai(
            code,
            if code >= 500 {
                "server_error"
            } else {
                "invalid_request_error"
            },
            None,
            None,
            "The server had an error while processing your request. Sorry about that!",
        ),
    }
}
