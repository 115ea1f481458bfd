//! OpenAI-compatible `POST /v1/chat/completions` (JSON or SSE stream) and `GET /v1/models`.
//!
//! The request is validated like OpenAI does (400 with `{"error": {...}}`), the bearer token is
//! checked when an API key is configured (401), the `user` field is recorded in the stats, and
//! the answer comes from [`answer::compose`](crate::answer::compose). A stream sends a role
//! chunk, one chunk per word, a finish chunk, optionally a usage chunk, then `data: [DONE]`, with
//! `llm_answer_latency_ms` before the first word and `llm_chunk_delay_ms` (plus `llm_token_ms`)
//! between chunks; a non-streamed answer waits the answer latency plus `llm_token_ms` per word.
//! `llm_answer_pad_words` pads an answer with filler words (a long generation); `max_tokens` (or
//! `max_completion_tokens`) cuts the answer to that many words, with
//! `finish_reason: "length"`. Every request is recorded with its messages (`prompts.rs`).

// Error paths return ready-made responses in the API's style; their size is irrelevant here.
#![allow(clippy::result_large_err)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use rand::Rng;
use serde_json::{Value, json};

use crate::answer;
use crate::errors;
use crate::state::SimState;

const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// One padding word: long, so that a padded answer is megabytes (more than the socket buffers
/// between a client and a server hold, for tests of clients that stop reading).
const FILLER: &str = "lorem-ipsum-dolor-sit-amet-consectetur-adipiscing-elit-sed-do-eiusmod-tempor-\
    incididunt-ut-labore-et-dolore-magna-aliqua-ut-enim-ad-minim-veniam-quis-nostrud-exercitation-\
    ullamco-laboris";

fn invalid(param: Option<&str>, code: Option<&str>, message: &str) -> Response {
    errors::openai(400, "invalid_request_error", code, param, message)
}

/// A validated request.
struct ChatRequest {
    model: String,
    messages: Vec<(String, String)>,
    stream: bool,
    include_usage: bool,
    max_tokens: Option<u64>,
}

/// Text of a message `content`: a string, null, or an array of `{"type": "text", "text": ..}` parts.
fn content_text(v: Option<&Value>, i: usize) -> Result<String, Response> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                if let Some(t) = part.get("text").and_then(Value::as_str) {
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(t);
                }
            }
            Ok(text)
        }
        Some(_) => Err(invalid(
            Some(&format!("messages.[{i}].content")),
            Some("invalid_type"),
            &format!(
                "Invalid type for 'messages[{i}].content': expected a string or an array of content parts."
            ),
        )),
    }
}

fn parse(body: &[u8]) -> Result<(ChatRequest, Option<String>), Response> {
    let v: Value = serde_json::from_slice(body).map_err(|_| {
        invalid(
            None,
            None,
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
        )
    })?;
    let Some(obj) = v.as_object() else {
        return Err(invalid(
            None,
            Some("invalid_type"),
            "Invalid request body: expected a JSON object.",
        ));
    };
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => m.clone(),
        None | Some(Value::Null) => {
            return Err(invalid(None, None, "you must provide a model parameter"));
        }
        Some(_) => {
            return Err(invalid(
                Some("model"),
                Some("invalid_type"),
                "Invalid type for 'model': expected a non-empty string.",
            ));
        }
    };
    let raw_messages = match obj.get("messages") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => {
            return Err(invalid(
                Some("messages"),
                Some("empty_array"),
                "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            ));
        }
        None | Some(Value::Null) => {
            return Err(invalid(
                Some("messages"),
                Some("missing_required_parameter"),
                "Missing required parameter: 'messages'.",
            ));
        }
        Some(_) => {
            return Err(invalid(
                Some("messages"),
                Some("invalid_type"),
                "Invalid type for 'messages': expected an array.",
            ));
        }
    };
    let mut messages = Vec::with_capacity(raw_messages.len());
    for (i, m) in raw_messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        if !ROLES.contains(&role) {
            let shown: String = role.chars().take(40).collect();
            return Err(invalid(
                Some(&format!("messages.[{i}].role")),
                Some("invalid_value"),
                &format!(
                    "Invalid value: '{shown}'. Supported values are: 'system', 'developer', 'user', 'assistant', 'tool', and 'function'."
                ),
            ));
        }
        messages.push((role.to_string(), content_text(m.get("content"), i)?));
    }
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(invalid(
                Some("stream"),
                Some("invalid_type"),
                "Invalid type for 'stream': expected a boolean.",
            ));
        }
    };
    let user = match obj.get("user") {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) => Some(u.chars().take(256).collect()),
        Some(_) => {
            return Err(invalid(
                Some("user"),
                Some("invalid_type"),
                "Invalid type for 'user': expected a string.",
            ));
        }
    };
    let max_tokens = match obj
        .get("max_completion_tokens")
        .or_else(|| obj.get("max_tokens"))
    {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Some(n),
            _ => {
                return Err(invalid(
                    Some("max_tokens"),
                    Some("invalid_value"),
                    "Invalid 'max_tokens': expected an integer of at least 1.",
                ));
            }
        },
    };
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok((
        ChatRequest {
            model,
            messages,
            stream,
            include_usage,
            max_tokens,
        },
        user,
    ))
}

/// Rough token count: OpenAI's rule of thumb of 4 tokens per 3 words.
fn tokens(text: &str) -> u64 {
    (text.split_whitespace().count() as u64 * 4).div_ceil(3)
}

fn check_key(expected: Option<&str>, headers: &HeaderMap) -> Result<(), Response> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(k) if k == expected => Ok(()),
        Some(_) => Err(errors::openai(
            401,
            "invalid_request_error",
            Some("invalid_api_key"),
            None,
            "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
        )),
        None => Err(errors::openai(
            401,
            "invalid_request_error",
            None,
            None,
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        )),
    }
}

pub(crate) async fn chat_completions(
    State(state): State<SimState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let settings = state.settings();
    if let Err(r) = check_key(settings.llm_api_key.as_deref(), &headers) {
        return r;
    }
    let body = match body {
        Ok(b) => b,
        Err(rej) if rej.status().as_u16() == 413 => {
            return errors::openai(
                413,
                "invalid_request_error",
                Some("request_too_large"),
                None,
                "Request body too large.",
            );
        }
        Err(rej) => return invalid(None, None, &rej.body_text()),
    };
    let (req, user) = match parse(&body) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    // Held until the answer (or the stream) ends: per-user concurrency for the stats.
    let user_in_flight = user.as_deref().map(|u| {
        state.live_stats().record_user(u);
        state.live_stats().begin_user(u)
    });
    state
        .live_prompts()
        .record(user.as_deref(), req.max_tokens, req.stream, &req.messages);
    let mut text = answer::compose(&req.messages);
    let composed = text.split_whitespace().count() as u64;
    for _ in composed..settings.llm_answer_pad_words {
        text.push(' ');
        text.push_str(FILLER);
    }
    let mut finish = "stop";
    if let Some(max) = req.max_tokens {
        let words: Vec<&str> = text.split_inclusive(' ').collect();
        if words.len() as u64 > max {
            text = words[..max as usize].concat().trim_end().to_string();
            finish = "length";
        }
    }
    let token_delay = Duration::from_millis(settings.llm_token_ms);
    let id = format!("chatcmpl-sim{:012x}", state.next_id());
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let prompt_tokens: u64 = req.messages.iter().map(|(_, c)| tokens(c) + 4).sum();
    let completion_tokens = tokens(&text);
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });
    let first_delay = Duration::from_millis(settings.llm_answer_latency_ms);

    if !req.stream {
        let words = u32::try_from(text.split_whitespace().count()).unwrap_or(u32::MAX);
        let generation = first_delay + token_delay * words;
        if !generation.is_zero() {
            tokio::time::sleep(generation).await;
        }
        drop(user_in_flight);
        return Json(json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": req.model,
            "system_fingerprint": "fp_upstream_sim",
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": text, "refusal": null },
                "logprobs": null,
                "finish_reason": finish,
            }],
            "usage": usage,
        }))
        .into_response();
    }

    let chunk = |delta: Value, finish: Value| -> String {
        let v = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": req.model,
            "system_fingerprint": "fp_upstream_sim",
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
        });
        format!("data: {v}\n\n")
    };
    let mut frames = vec![chunk(
        json!({ "role": "assistant", "content": "", "refusal": null }),
        Value::Null,
    )];
    frames.extend(
        text.split_inclusive(' ')
            .map(|piece| chunk(json!({ "content": piece }), Value::Null)),
    );
    frames.push(chunk(json!({}), json!(finish)));
    if req.include_usage {
        let v = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": req.model,
            "choices": [],
            "usage": usage,
        });
        frames.push(format!("data: {v}\n\n"));
    }
    frames.push("data: [DONE]\n\n".to_string());

    let chunk_delay = Duration::from_millis(settings.llm_chunk_delay_ms) + token_delay;
    let rate = settings.llm_stream_abort_rate;
    let abort = rate > 0.0 && state.roll(|rng| rng.random::<f64>() < rate);
    // An aborted stream sends half its frames, then fails the body: hyper drops the
    // connection without the final empty chunk, which the client sees as a broken stream.
    let keep = if abort {
        frames.len() / 2
    } else {
        frames.len()
    };
    let frames: Vec<Option<String>> = frames
        .into_iter()
        .take(keep)
        .map(Some)
        .chain(abort.then_some(None))
        .collect();
    // Frame 0 (role) goes out at once; the first word waits the answer latency; later frames
    // wait the chunk delay.
    let stream = futures_util::stream::unfold(
        (frames.into_iter(), 0usize),
        move |(mut it, i)| async move {
            let frame = it.next()?;
            let wait = match i {
                0 => Duration::ZERO,
                1 => first_delay,
                _ => chunk_delay,
            };
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let item = match frame {
                Some(f) => Ok(Bytes::from(f)),
                None => Err(std::io::Error::other(
                    "simulated upstream failure mid-stream",
                )),
            };
            Some((item, (it, i + 1)))
        },
    )
    .map(move |item| {
        let _keep = &user_in_flight;
        item
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

pub(crate) async fn models(State(state): State<SimState>, headers: HeaderMap) -> Response {
    if let Err(r) = check_key(state.settings().llm_api_key.as_deref(), &headers) {
        return r;
    }
    Json(json!({
        "object": "list",
        "data": [{ "id": "sim-model", "object": "model", "created": 0, "owned_by": "upstream-sim" }],
    }))
    .into_response()
}

/// Unknown `/v1` routes, answered like OpenAI.
pub(crate) async fn not_found(method: Method, uri: Uri) -> Response {
    let path: String = uri.path().chars().take(200).collect();
    errors::openai(
        404,
        "invalid_request_error",
        None,
        None,
        &format!("Invalid URL ({method} {path})"),
    )
}
