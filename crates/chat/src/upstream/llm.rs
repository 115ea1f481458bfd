//! OpenAI-compatible chat completions, always requested as a stream (`stream: true`, server-sent
//! `chat.completion.chunk` events ending with `[DONE]`) and relayed delta by delta; a caller that
//! wants the whole answer ([`LlmClient::complete`]) collects the same stream.
//!
//! Streaming internally is what makes the timeouts mean something: `FLEETGATE_UPSTREAM_TIMEOUT_MS`
//! bounds the time to the first token of the answer and every gap between two chunks, never the
//! whole answer (a long answer is not a slow upstream), and `FLEETGATE_LLM_ANSWER_TIMEOUT_MS`
//! bounds the whole. `max_tokens` (`FLEETGATE_LLM_MAX_TOKENS`) caps every answer.
//!
//! Only the upstream's faults count against the shared breaker, and they are known by the first
//! token: a connection error, a 5xx, a 429, or no first token in time is a failure; the first
//! token of a 2xx answer (or its end, if it has none) is a success, recorded at once, so a
//! half-open probe is settled without waiting for the answer to end. What happens later (a stall
//! between chunks, a cut-off stream, the answer timeout) ends this answer with an error but does
//! not count: by then the upstream has shown it is up. Failures before the first token other than
//! a timeout (connection refused, a 5xx or 429 without a long `Retry-After`) are retried once:
//! nothing was generated yet.
//!
//! The `user` field carries the caller's pseudonym of the end user (made by the service), as
//! OpenAI recommends for abuse monitoring, never the id itself. Deltas are cleaned of control
//! characters ([`crate::text::clean()`]) before anyone sees them.

use std::sync::Arc;
use std::time::Duration;

use breaker_store::{BreakerError, Breakers, Outbound, Outcome, Permit, parse_retry_after};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;
use tracing::field::Empty;

use super::http::transport;
use super::{UpstreamError, service::LLM};

/// Attempts before the first token (a retry only for refused connections, 5xx and 429).
const ATTEMPTS: u32 = 2;
/// A 429 or 503 asking to wait longer than this is not retried.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(2);

/// Where the LLM is, which model to ask, and the bounds of one answer.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// Base URL including `/v1` (`FLEETGATE_LLM_URL`).
    pub base_url: String,
    /// `FLEETGATE_LLM_MODEL`.
    pub model: String,
    /// `FLEETGATE_LLM_API_KEY` (bearer token).
    pub api_key: Option<String>,
    /// Time to the first byte of the answer, and the longest gap between two chunks.
    pub timeout: Duration,
    /// The longest a whole answer may take.
    pub answer_timeout: Duration,
    /// `max_tokens` of every request.
    pub max_tokens: u32,
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            base_url: String::new(),
            model: String::new(),
            api_key: None,
            timeout: Duration::from_secs(30),
            answer_timeout: Duration::from_secs(300),
            max_tokens: 1024,
        }
    }
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

#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    stream: bool,
    max_tokens: u32,
    user: &'a str,
}

/// LLM client.
#[derive(Debug, Clone)]
pub struct LlmClient {
    http: reqwest::Client,
    outbound: Arc<Outbound>,
    cfg: LlmConfig,
}

/// How one attempt before the first token ended.
enum Start {
    /// Streaming: the reader and the first token (`None`: the answer ended without one).
    Streaming(SseReader, Option<String>),
    /// Worth one more attempt (after the wait).
    Retry(UpstreamError, Duration),
    /// Final.
    Failed(UpstreamError),
}

fn failed(kind: &'static str) {
    crate::instrumentation::get().error(LLM, kind);
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

    fn request(&self, messages: &[ChatMessage], user: &str) -> reqwest::RequestBuilder {
        let url = format!(
            "{}/chat/completions",
            self.cfg.base_url.trim_end_matches('/')
        );
        let body = Request {
            model: &self.cfg.model,
            messages,
            stream: true,
            max_tokens: self.cfg.max_tokens,
            user,
        };
        let mut req = self.http.post(url).json(&body);
        if let Some(k) = &self.cfg.api_key {
            req = req.bearer_auth(k);
        }
        req
    }

    /// The whole answer at once (the same stream, collected).
    pub async fn complete(
        &self,
        messages: &[ChatMessage],
        user: &str,
    ) -> Result<String, UpstreamError> {
        let mut rx = self.stream(messages, user).await?;
        let mut answer = String::new();
        while let Some(piece) = rx.recv().await {
            answer.push_str(&piece?);
        }
        Ok(answer)
    }

    /// One attempt up to the first byte, its breaker outcome recorded.
    async fn start(&self, breakers: &Breakers, messages: &[ChatMessage], user: &str) -> Start {
        let decision = tracing::info_span!(
            "breaker.permit",
            fleetgate.breaker.service = LLM,
            fleetgate.breaker.state = breakers.state(LLM).as_str(),
            fleetgate.breaker.decision = Empty,
        );
        let permit = breakers.acquire(LLM).instrument(decision.clone()).await;
        decision.record(
            "fleetgate.breaker.decision",
            if permit.is_ok() { "allowed" } else { "refused" },
        );
        let permit = match permit {
            Ok(p) => p,
            Err(e) => {
                failed("breaker_open");
                let retry_after = match e {
                    BreakerError::Open { retry_after }
                    | BreakerError::HalfOpenBusy { retry_after } => Some(retry_after),
                    _ => None,
                };
                return Start::Failed(UpstreamError::Unavailable {
                    service: LLM,
                    retry_after,
                });
            }
        };
        let deadline = Instant::now() + self.cfg.timeout;
        let sent = tokio::time::timeout_at(
            deadline,
            super::http::send(LLM, self.request(messages, user)),
        )
        .await;
        let resp = match sent {
            Ok(Ok(r)) if r.status().is_success() => r,
            Ok(Ok(r)) => return self.refused(breakers, permit, &r).await,
            Ok(Err(e)) if e.is_timeout() => return timed_out(breakers, permit).await,
            Ok(Err(e)) => {
                failed("failure");
                breakers.record(permit, Outcome::Failure).await;
                return Start::Retry(transport(LLM, &e), Duration::ZERO);
            }
            Err(_) => return timed_out(breakers, permit).await,
        };
        let mut reader = SseReader {
            resp,
            buf: Vec::new(),
        };
        match reader.next(deadline).await {
            Ok(first) => {
                // The upstream is up and answering: settle the breaker now.
                breakers
                    .record_in_background(permit, Outcome::Success)
                    .await;
                Start::Streaming(reader, first)
            }
            Err(ReadError::Timeout) => timed_out(breakers, permit).await,
            Err(ReadError::Failed(e)) => {
                failed("failure");
                breakers.record(permit, Outcome::Failure).await;
                match e {
                    UpstreamError::Malformed { .. } => Start::Failed(e),
                    other => Start::Retry(other, Duration::ZERO),
                }
            }
        }
    }

    /// A non-2xx answer: 5xx and 429 are the upstream's fault (retried unless it asks for a long
    /// wait), anything else is a refusal of our request (a success for the breaker).
    async fn refused(&self, breakers: &Breakers, permit: Permit, r: &reqwest::Response) -> Start {
        let status = r.status().as_u16();
        if status == 429 || status >= 500 {
            failed("failure");
            breakers.record(permit, Outcome::Failure).await;
            let wait = r
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let err = UpstreamError::Unavailable {
                service: LLM,
                retry_after: wait,
            };
            match wait {
                Some(w) if w > MAX_RETRY_WAIT => Start::Failed(err),
                w => Start::Retry(err, w.unwrap_or(Duration::from_millis(200))),
            }
        } else {
            failed("rejected");
            breakers.record(permit, Outcome::Success).await;
            Start::Failed(UpstreamError::Rejected {
                service: LLM,
                status,
            })
        }
    }

    /// The answer as deltas, relayed as the LLM produces them. Dropping the receiver cancels the
    /// upstream request. A stream that stalls, ends without `[DONE]` or outlasts the answer
    /// timeout ends with an error item.
    pub async fn stream(
        &self,
        messages: &[ChatMessage],
        user: &str,
    ) -> Result<mpsc::Receiver<Result<String, UpstreamError>>, UpstreamError> {
        let breakers = self.outbound.breakers().clone();
        // The same spans as breaker-store's outbound calls: one call, one span per attempt.
        let call = tracing::info_span!(
            "upstream.call",
            otel.name = %format_args!("call {LLM}"),
            otel.status_code = Empty,
            fleetgate.upstream = LLM,
            fleetgate.attempts = Empty,
        );
        let started = async {
            let mut attempt: u32 = 1;
            loop {
                let span = tracing::info_span!(
                    "upstream.attempt",
                    fleetgate.upstream = LLM,
                    http.request.resend_count = (attempt > 1).then(|| attempt - 1),
                );
                match self.start(&breakers, messages, user).instrument(span).await {
                    Start::Streaming(reader, first) => return Ok((reader, first)),
                    Start::Retry(e, wait) if attempt < ATTEMPTS => {
                        tracing::debug!(error = %e, attempt, "LLM failed before answering; retrying");
                        attempt += 1;
                        tokio::time::sleep(wait).await;
                    }
                    Start::Retry(e, _) | Start::Failed(e) => return Err((e, attempt)),
                }
            }
        }
        .instrument(call.clone())
        .await;
        let (reader, first) = match started {
            Ok(s) => s,
            Err((e, attempts)) => {
                call.record("otel.status_code", "ERROR");
                call.record("fleetgate.attempts", attempts);
                return Err(e);
            }
        };
        let (tx, rx) = mpsc::channel(64);
        let gap = self.cfg.timeout;
        let end = Instant::now() + self.cfg.answer_timeout;
        tokio::spawn(async move {
            if let Err(Relay::Failed(e)) = relay(reader, first, &tx, gap, end).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(rx)
    }
}

/// Reads `chat.completion.chunk` events off a streamed response.
struct SseReader {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

enum ReadError {
    /// Nothing by the deadline.
    Timeout,
    Failed(UpstreamError),
}

impl SseReader {
    /// The next piece of answer text (cleaned of control characters, never empty), or `None` at
    /// `[DONE]`.
    async fn next(&mut self, deadline: Instant) -> Result<Option<String>, ReadError> {
        let malformed = |detail: String| {
            ReadError::Failed(UpstreamError::Malformed {
                service: LLM,
                detail,
            })
        };
        loop {
            while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line);
                let Some(data) = line.trim_end().strip_prefix("data:") else {
                    continue;
                };
                let data = data.trim();
                if data == "[DONE]" {
                    return Ok(None);
                }
                match parse_chunk(data.as_bytes()) {
                    Ok(Some(delta)) => {
                        let delta = crate::text::clean(&delta);
                        if !delta.is_empty() {
                            return Ok(Some(delta.into_owned()));
                        }
                    }
                    Ok(None) => {}
                    Err(detail) => return Err(malformed(detail)),
                }
            }
            let chunk = match tokio::time::timeout_at(deadline, self.resp.chunk()).await {
                Err(_) => return Err(ReadError::Timeout),
                Ok(Err(e)) => return Err(ReadError::Failed(transport(LLM, &e))),
                Ok(Ok(None)) => return Err(malformed("stream ended before [DONE]".into())),
                Ok(Ok(Some(c))) => c,
            };
            self.buf.extend_from_slice(&chunk);
            if self.buf.len() > super::http::MAX_BODY {
                return Err(malformed("event too large".into()));
            }
        }
    }
}

/// No first token within the timeout: the upstream's fault, and not retried (a slow upstream
/// asked again is only slower).
async fn timed_out(breakers: &Breakers, permit: Permit) -> Start {
    failed("timeout");
    breakers.record(permit, Outcome::Failure).await;
    Start::Failed(UpstreamError::Timeout { service: LLM })
}

enum Relay {
    /// The reader went away.
    Cancelled,
    Failed(UpstreamError),
}

/// Forwards the first token and every later one until `[DONE]`.
async fn relay(
    mut reader: SseReader,
    first: Option<String>,
    tx: &mpsc::Sender<Result<String, UpstreamError>>,
    gap: Duration,
    end: Instant,
) -> Result<(), Relay> {
    let Some(first) = first else {
        return Ok(());
    };
    if tx.send(Ok(first)).await.is_err() {
        return Err(Relay::Cancelled);
    }
    loop {
        let deadline = (Instant::now() + gap).min(end);
        let next = tokio::select! {
            n = reader.next(deadline) => n,
            () = tx.closed() => return Err(Relay::Cancelled),
        };
        match next {
            Ok(None) => return Ok(()),
            Ok(Some(delta)) => {
                if tx.send(Ok(delta)).await.is_err() {
                    return Err(Relay::Cancelled);
                }
            }
            Err(ReadError::Timeout) => {
                failed(if Instant::now() >= end {
                    "answer_timeout"
                } else {
                    "stalled"
                });
                return Err(Relay::Failed(UpstreamError::Timeout { service: LLM }));
            }
            Err(ReadError::Failed(e)) => return Err(Relay::Failed(e)),
        }
    }
}

/// `{"choices": [{"message": {"content": "..."}}]}` → the content (a non-streamed completion).
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
