//! OpenAI-compatible chat completions: one JSON answer, or a stream of deltas relayed as they
//! arrive (`stream: true`, server-sent `chat.completion.chunk` events ending with `[DONE]`).
//!
//! The `user` field carries a stable, non-reversible id of the end user (hex SHA-256 of the JWT
//! `sub`), as OpenAI recommends for abuse monitoring, never the id itself.

use std::sync::Arc;
use std::time::Duration;

use breaker_store::{BreakerError, Outbound, Outcome};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::http::{exchange, parsed, transport};
use super::{UpstreamError, service::LLM};

/// Where the LLM is and which model to ask.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// Base URL including `/v1` (`FLEETGATE_LLM_URL`).
    pub base_url: String,
    /// `FLEETGATE_LLM_MODEL`.
    pub model: String,
    /// `FLEETGATE_LLM_API_KEY` (bearer token).
    pub api_key: Option<String>,
    /// Wait for the response headers, and for each chunk of a stream.
    pub timeout: Duration,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message with a role.
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.to_string(),
            content: content.into(),
        }
    }
}

/// The `user` value for a JWT subject: hex SHA-256, stable and not reversible.
pub fn hashed_user(sub: &str) -> String {
    hex::encode(Sha256::digest(sub.as_bytes()))
}

#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    stream: bool,
    user: &'a str,
}

/// LLM client.
#[derive(Debug, Clone)]
pub struct LlmClient {
    http: reqwest::Client,
    outbound: Arc<Outbound>,
    cfg: LlmConfig,
}

impl LlmClient {
    /// A client guarded by the breaker `llm` (not paced: the queue bounds its concurrency).
    pub fn new(http: reqwest::Client, outbound: Arc<Outbound>, cfg: LlmConfig) -> Self {
        LlmClient {
            http,
            outbound,
            cfg,
        }
    }

    fn request(
        &self,
        messages: &[ChatMessage],
        user: &str,
        stream: bool,
    ) -> reqwest::RequestBuilder {
        let url = format!(
            "{}/chat/completions",
            self.cfg.base_url.trim_end_matches('/')
        );
        let body = Request {
            model: &self.cfg.model,
            messages,
            stream,
            user,
        };
        let mut req = self.http.post(url).json(&body);
        if let Some(k) = &self.cfg.api_key {
            req = req.bearer_auth(k);
        }
        req
    }

    /// The whole answer at once. Generation has no side effects, so failures are retried.
    pub async fn complete(
        &self,
        messages: &[ChatMessage],
        user: &str,
    ) -> Result<String, UpstreamError> {
        self.outbound
            .call(LLM, true, |_| {
                let req = self.request(messages, user, false);
                async move { parsed(LLM, exchange(LLM, req).await, parse_completion) }
            })
            .await
            .map_err(|e| UpstreamError::from_call(LLM, e))
    }

    /// The answer as deltas, relayed as the LLM produces them. Dropping the receiver cancels the
    /// upstream request. A stream that ends without `[DONE]` ends with an error item and counts
    /// as a breaker failure.
    pub async fn stream(
        &self,
        messages: &[ChatMessage],
        user: &str,
    ) -> Result<mpsc::Receiver<Result<String, UpstreamError>>, UpstreamError> {
        let breakers = self.outbound.breakers().clone();
        let failed = |kind: &'static str| crate::metrics::get().upstream_error(LLM, kind);
        let permit = breakers
            .acquire(LLM)
            .await
            .inspect_err(|_| failed("breaker_open"));
        let permit = permit.map_err(|e| match e {
            BreakerError::Open { retry_after } | BreakerError::HalfOpenBusy { retry_after } => {
                UpstreamError::Unavailable {
                    service: LLM,
                    retry_after: Some(retry_after),
                }
            }
            _ => UpstreamError::Unavailable {
                service: LLM,
                retry_after: None,
            },
        })?;
        let sent = tokio::time::timeout(
            self.cfg.timeout,
            super::http::send(LLM, self.request(messages, user, true)),
        )
        .await;
        let resp = match sent {
            Ok(Ok(r)) if r.status().is_success() => r,
            Ok(Ok(r)) => {
                let status = r.status().as_u16();
                let err = if status == 429 || status >= 500 {
                    failed("failure");
                    breakers.record(permit, Outcome::Failure).await;
                    UpstreamError::Unavailable {
                        service: LLM,
                        retry_after: None,
                    }
                } else {
                    breakers.record(permit, Outcome::Success).await;
                    UpstreamError::Rejected {
                        service: LLM,
                        status,
                    }
                };
                return Err(err);
            }
            Ok(Err(e)) => {
                failed("failure");
                breakers.record(permit, Outcome::Failure).await;
                return Err(transport(LLM, &e));
            }
            Err(_) => {
                failed("timeout");
                breakers.record(permit, Outcome::Failure).await;
                return Err(UpstreamError::Timeout { service: LLM });
            }
        };
        let (tx, rx) = mpsc::channel(64);
        let idle = self.cfg.timeout;
        tokio::spawn(async move {
            let outcome = relay(resp, &tx, idle).await;
            let counted = match &outcome {
                Ok(()) | Err(Relay::Cancelled) => Outcome::Success,
                Err(_) => Outcome::Failure,
            };
            breakers.record(permit, counted).await;
            if let Err(Relay::Failed(e)) = outcome {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(rx)
    }
}

enum Relay {
    /// The reader went away: not the upstream's fault.
    Cancelled,
    Failed(UpstreamError),
}

/// Reads server-sent events and forwards each delta until `[DONE]`.
async fn relay(
    mut resp: reqwest::Response,
    tx: &mpsc::Sender<Result<String, UpstreamError>>,
    idle: Duration,
) -> Result<(), Relay> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let chunk = tokio::select! {
            c = tokio::time::timeout(idle, resp.chunk()) => c,
            () = tx.closed() => return Err(Relay::Cancelled),
        };
        let chunk = match chunk {
            Err(_) => return Err(Relay::Failed(UpstreamError::Timeout { service: LLM })),
            Ok(Err(e)) => return Err(Relay::Failed(transport(LLM, &e))),
            Ok(Ok(None)) => {
                return Err(Relay::Failed(UpstreamError::Malformed {
                    service: LLM,
                    detail: "stream ended before [DONE]".into(),
                }));
            }
            Ok(Ok(Some(c))) => c,
        };
        buf.extend_from_slice(&chunk);
        if buf.len() > super::http::MAX_BODY {
            return Err(Relay::Failed(UpstreamError::Malformed {
                service: LLM,
                detail: "event too large".into(),
            }));
        }
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            let Some(data) = line.trim_end().strip_prefix("data:") else {
                continue;
            };
            let data = data.trim();
            if data == "[DONE]" {
                return Ok(());
            }
            match parse_chunk(data.as_bytes()) {
                Ok(Some(delta)) if !delta.is_empty() => {
                    if tx.send(Ok(delta)).await.is_err() {
                        return Err(Relay::Cancelled);
                    }
                }
                Ok(_) => {}
                Err(detail) => {
                    return Err(Relay::Failed(UpstreamError::Malformed {
                        service: LLM,
                        detail,
                    }));
                }
            }
        }
    }
}

/// `{"choices": [{"message": {"content": "..."}}]}` → the content.
pub fn parse_completion(body: &[u8]) -> Result<String, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    v.get("choices")
        .and_then(|c| c.get(0))
        .and_then(|c| c.get("message"))
        .and_then(|m| m.get("content"))
        .and_then(|c| c.as_str())
        .map(str::to_string)
        .ok_or_else(|| "choices[0].message.content missing".into())
}

/// One `chat.completion.chunk` → its delta text (`None` for role-only or final chunks).
pub fn parse_chunk(data: &[u8]) -> Result<Option<String>, String> {
    let v: serde_json::Value = serde_json::from_slice(data).map_err(|e| e.to_string())?;
    let choice = v
        .get("choices")
        .and_then(|c| c.as_array())
        .ok_or("choices missing")?;
    Ok(choice
        .first()
        .and_then(|c| c.get("delta"))
        .and_then(|d| d.get("content"))
        .and_then(|c| c.as_str())
        .map(str::to_string))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn user_id_is_hashed() {
        let h = hashed_user("user-42");
        assert_eq!(h.len(), 64);
        assert!(!h.contains("user-42"));
        assert_eq!(h, hashed_user("user-42"));
    }

    #[test]
    fn completion_and_chunk_parsing_reject_garbage() {
        assert_eq!(
            parse_completion(br#"{"choices":[{"message":{"role":"assistant","content":"hi"}}]}"#)
                .unwrap(),
            "hi"
        );
        for bad in [
            &b"{}"[..],
            b"[]",
            b"{\"choices\":[]}",
            b"{\"choices\":[{\"message\":{\"content\":5}}]}",
            b"\xff",
        ] {
            assert!(parse_completion(bad).is_err());
        }
        assert_eq!(
            parse_chunk(br#"{"choices":[{"delta":{"content":"a"}}]}"#)
                .unwrap()
                .as_deref(),
            Some("a")
        );
        assert_eq!(
            parse_chunk(br#"{"choices":[{"delta":{"role":"assistant"}}]}"#).unwrap(),
            None
        );
        assert!(parse_chunk(b"{\"x\":1}").is_err());
    }
}
