//! `POST /api/chat`: auth → per-IP window (layers, see [`crate::app`]) → quota spend and slot (for
//! a JSON answer the spend runs while the request waits for its slot; a user this replica saw
//! refused, and a stream, spend first) → assistant → refund if the failure is ours
//! and no answer text reached the client (once text was sent, the query was used, whatever fails
//! after). The answer is Markdown neutralised by [`chat::text::MarkdownGuard`] (no raw HTML, no
//! images, only http(s) links), streamed or not.
//!
//! With `Accept: text/event-stream` the reply is a server-sent event stream, opened right after
//! the quota spend: `queued` (position, again whenever it changes), `started`, `delta` (answer text
//! as the LLM produces it), `citations`, `done` (the JSON reply) or `error` (problem+json, plus
//! `retryAfter` in seconds where a response would carry `Retry-After`). The wait and the answer
//! run in a task that ends as soon as the client disconnects, which drops its slot (handed to the
//! next waiter at once) and its upstream call.

use std::convert::Infallible;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chat::text::{MarkdownGuard, neutralise};
use chat::{ChatContext, ChatRequest, Citation};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;
use utoipa::ToSchema;
use uuid::Uuid;

use super::TicketGuard;
use super::parsed::{Checked, Parsed};
use crate::admin::slot_holders::HeldSlot;
use crate::auth::AuthUser;
use crate::error::{ApiError, Problem};
use crate::limits::admission::RouteClass;
use crate::limits::quota::{QuotaError, QuotaStore, Spend};
use crate::limits::render::ApiRenderer;
use crate::state::AppState;

/// Longest accepted message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 4000;

/// A chat question.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ChatBody {
    /// The question.
    #[schema(min_length = 1, max_length = 4000, pattern = r"\S")]
    pub message: String,
    /// Retrieve papers from PubMed and Semantic Scholar first.
    #[serde(rename = "useRAG", default)]
    #[schema(rename = "useRAG")]
    pub use_rag: bool,
    /// Continue this conversation.
    #[serde(rename = "conversationId", default)]
    #[schema(
        rename = "conversationId",
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub conversation_id: Option<Uuid>,
}

/// A chat answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatResponse {
    /// The answer.
    pub answer: String,
    /// Sources cited.
    pub citations: Vec<Citation>,
    /// The conversation.
    pub conversation_id: Uuid,
    /// Queries left today.
    pub queries_remaining: u32,
    /// Time spent waiting for a slot, ms.
    pub queued_ms: u64,
}

/// Checks what the type system cannot: a non-blank message of at most 4000 characters, without
/// control characters other than tab and newline.
pub fn validate(body: &ChatBody) -> Result<(), ApiError> {
    if crate::server::json::is_blank(&body.message) {
        return Err(ApiError::InvalidRequest(
            "`message` must not be empty".into(),
        ));
    }
    // Refused up front, before anything is spent: the database cannot store U+0000, and no
    // question needs escape sequences.
    crate::server::json::no_control_chars("message", &body.message)?;
    let n = body.message.chars().count();
    if n > MAX_MESSAGE_CHARS {
        return Err(ApiError::InvalidRequest(format!(
            "`message` has {n} characters; at most {MAX_MESSAGE_CHARS} are allowed"
        )));
    }
    Ok(())
}

impl Checked for ChatBody {
    fn check(&self) -> Result<(), ApiError> {
        validate(self)
    }
}

/// The limits the chat route applies itself (its stream reports queue positions while it waits,
/// so it takes its slot through the admission layer's own code rather than as a layer). The
/// router sets them ([`crate::server::Limits`]); a route without them applies both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatLimits {
    /// Spend a query of the daily quota.
    pub quota: bool,
    /// Wait for a slot.
    pub admission: bool,
}

impl ChatLimits {
    fn of(ext: Option<axum::Extension<ChatLimits>>) -> ChatLimits {
        ext.map_or(
            ChatLimits {
                quota: true,
                admission: true,
            },
            |e| e.0,
        )
    }
}

/// A slot for `user` through the chat admission layer (none when the route is built without
/// admission), and how long it took.
async fn admit(
    state: &AppState,
    limits: ChatLimits,
    user: &str,
    positions: Option<watch::Sender<u32>>,
) -> Result<(Option<HeldSlot>, std::time::Duration), ApiError> {
    // Switched off at runtime: no slot, like a route built without admission.
    if !limits.admission
        || state.runtime_limits().admission_mode(RouteClass::Chat) == limiter_tower::Mode::Off
    {
        return Ok((None, std::time::Duration::ZERO));
    }
    state
        .admission(RouteClass::Chat)
        .admit(user, positions)
        .await
        .map(|(slot, admitted)| (Some(slot), admitted.queued()))
        .map_err(|r| ApiRenderer::Admission.api_error(&r))
}

/// Layer 3: one query of today spent for `user` (an unspent guard on a route without the quota).
async fn spend(state: &AppState, limits: ChatLimits, user: &str) -> Result<TicketGuard, ApiError> {
    if !limits.quota {
        return Ok(TicketGuard::unspent(state.quota().clone()));
    }
    let quota = state.quota();
    ticket_of(quota, quota.spend(user).await)
}

fn ticket_of(
    quota: &QuotaStore,
    spend: Result<Spend, QuotaError>,
) -> Result<TicketGuard, ApiError> {
    match spend {
        Ok(Spend::Spent(t)) => Ok(TicketGuard::new(quota.clone(), t)),
        Ok(Spend::Exhausted { limit, retry_after }) => {
            Err(ApiError::QuotaExhausted { retry_after, limit })
        }
        Err(e) => Err(ApiError::unavailable(
            "the quota service is unavailable; no query was counted",
            e,
        )),
    }
}

/// Layers 3 and 2 for a JSON answer: the spend runs while the request waits for its slot, so the
/// request waits for the longer of the two, not their sum. A refused spend takes the request out
/// of the queue (or gives its slot back) at once; a queue refusal gives the query back. A user
/// this replica saw refused spends first, so a user known to have nothing left never occupies a
/// place in the queue.
async fn spend_and_admit(
    state: &AppState,
    limits: ChatLimits,
    user: &str,
) -> Result<(TicketGuard, (Option<HeldSlot>, std::time::Duration)), ApiError> {
    let both = async |ticket: TicketGuard, admitted: Result<_, ApiError>| match admitted {
        Ok(slot) => Ok((ticket, slot)),
        Err(e) => {
            ticket.refund().await;
            Err(e)
        }
    };
    if !limits.quota || state.quota().refused_lately(user) {
        let ticket = spend(state, limits, user).await?;
        return both(ticket, admit(state, limits, user, None).await).await;
    }
    // A request that goes away while its spend runs drops both futures: the store gives back a
    // spend whose caller left while it ran, and skips one whose caller left before it.
    let spending = spend(state, limits, user);
    let admitting = admit(state, limits, user, None);
    tokio::pin!(spending, admitting);
    tokio::select! {
        biased;
        // A refusal drops `admitting`: out of the queue, or the slot released.
        spent = &mut spending => both(spent?, admitting.await).await,
        admitted = &mut admitting => both(spending.await?, admitted).await,
    }
}

/// Answers a question.
#[utoipa::path(
    post,
    path = "/api/chat",
    tag = "chat",
    request_body = ChatBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The answer (JSON); with `Accept: text/event-stream`, a server-sent event stream: `queued`, `started`, `delta`, `citations`, `done` (this object) or `error` (problem+json)", body = ChatResponse),
        (status = 400, description = "`invalid_request`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "`request_timeout`: the body did not arrive within `FLEETGATE_HTTP_BODY_TIMEOUT_MS`", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited` (per-IP window), `daily_quota_exhausted` or `user_queue_full`", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "`queue_timeout`, `queue_full`, `upstream_unavailable` or `service_unavailable`", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 504, description = "`upstream_timeout`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn chat(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    limits: Option<axum::Extension<ChatLimits>>,
    Parsed(body): Parsed<ChatBody>,
) -> Result<Response, ApiError> {
    let limits = ChatLimits::of(limits);
    if state.is_shutting_down() {
        return Err(ApiRenderer::Admission.api_error(
            &limiter_tower::LimitRejection::ShuttingDown {
                retry_after: std::time::Duration::from_secs(1),
            },
        ));
    }
    let wants_stream = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if wants_stream {
        // Layer 3 before layer 2, and before the stream opens: a refusal is an HTTP status.
        let ticket = spend(&state, limits, &user.id).await?;
        let request_id = super::request_id(&headers);
        return Ok(stream(state, limits, user, body, ticket, request_id).into_response());
    }
    let (mut ticket, (slot, queued)) = spend_and_admit(&state, limits, &user.id).await?;
    let remaining = ticket.ticket().map_or(0, |t| t.remaining);
    let ctx = ChatContext {
        user_id: user.id.clone(),
        user_hash: user.hashed_id(),
        queued,
        queries_remaining: Some(remaining),
        request_id: super::request_id(&headers),
    };
    let req = ChatRequest {
        message: body.message,
        use_rag: body.use_rag,
        conversation_id: body.conversation_id,
        stream: false,
    };
    ticket.start();
    let revoked = revocation(slot.as_ref());
    let result = tokio::select! {
        r = state.assistant().answer(req, ctx) => r,
        () = revoked => {
            drop(slot);
            ticket.refund().await;
            return Err(slot_revoked());
        }
    };
    drop(slot);
    match result {
        Ok(a) => {
            ticket.keep();
            Ok(Json(ChatResponse {
                answer: neutralise(&a.answer),
                citations: a.citations,
                conversation_id: a.conversation_id,
                queries_remaining: remaining,
                queued_ms: u64::try_from(queued.as_millis()).unwrap_or(u64::MAX),
            })
            .into_response())
        }
        Err(e) => {
            if e.refunds_quota() {
                ticket.refund().await;
            } else {
                ticket.keep();
            }
            Err(e.into())
        }
    }
}

/// Resolves when the request holding `slot` must stop (never without a slot).
fn revocation(slot: Option<&HeldSlot>) -> futures_util::future::BoxFuture<'static, ()> {
    match slot {
        Some(s) => s.revoked(),
        None => Box::pin(std::future::pending()),
    }
}

/// A request stopped because its replica could not keep its slot counted in Redis.
fn slot_revoked() -> ApiError {
    ApiError::unavailable(
        "the request was stopped: this replica lost contact with the shared limits",
        "admission slot revoked (lease not renewable within its lifetime)",
    )
}

/// One SSE event with a JSON payload.
fn event(name: &str, data: &impl Serialize) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| Event::default().event(name))
}

/// The `error` event: the problem document plus `retryAfter` (seconds), which a stream cannot send
/// as a header once it is open.
fn error_event(err: &ApiError) -> Event {
    let mut doc = serde_json::to_value(err.problem()).unwrap_or_else(|_| json!({}));
    if let (Some(ra), Some(obj)) = (err.retry_after(), doc.as_object_mut()) {
        obj.insert("retryAfter".into(), crate::error::secs_ceil(ra).into());
    }
    event("error", &doc)
}

/// Opens the event stream; the work runs in a task that stops when the client goes away.
fn stream(
    state: AppState,
    limits: ChatLimits,
    user: AuthUser,
    body: ChatBody,
    ticket: TicketGuard,
    request_id: Option<String>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let (tx, mut rx) = mpsc::channel::<Event>(64);
    tokio::spawn(
        async move {
            let work = run_stream(state, limits, user, body, ticket, request_id, tx.clone());
            tokio::select! {
                () = work => {}
                // The client disconnected: dropping `work` drops its slot and its upstream call.
                () = tx.closed() => {}
            }
        }
        // The request's trace goes on in the task (the server span ends with the response head).
        .in_current_span(),
    );
    Sse::new(futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|e| e.map(Ok))
    }))
    .keep_alive(KeepAlive::default())
}

async fn run_stream(
    state: AppState,
    limits: ChatLimits,
    user: AuthUser,
    body: ChatBody,
    mut ticket: TicketGuard,
    request_id: Option<String>,
    tx: mpsc::Sender<Event>,
) {
    let (ptx, mut prx) = watch::channel(0u32);
    let admit = admit(&state, limits, &user.id, Some(ptx));
    tokio::pin!(admit);
    let mut last = 0;
    let slot = loop {
        tokio::select! {
            biased;
            r = &mut admit => break r,
            changed = prx.changed() => {
                if changed.is_err() {
                    // The position sender is gone: the admission is finishing.
                    break (&mut admit).await;
                }
                let p = *prx.borrow_and_update();
                if p > 0 && p != last {
                    last = p;
                    let _ = tx.send(event("queued", &json!({ "position": p }))).await;
                }
            }
        }
    };
    let (slot, queued) = match slot {
        Ok(s) => s,
        Err(e) => {
            ticket.refund().await;
            let _ = tx.send(error_event(&e)).await;
            return;
        }
    };
    let queued_ms = u64::try_from(queued.as_millis()).unwrap_or(u64::MAX);
    let _ = tx
        .send(event("started", &json!({ "queuedMs": queued_ms })))
        .await;
    let remaining = ticket.ticket().map_or(0, |t| t.remaining);
    let ctx = ChatContext {
        user_id: user.id.clone(),
        user_hash: user.hashed_id(),
        queued,
        queries_remaining: Some(remaining),
        request_id,
    };
    let req = ChatRequest {
        message: body.message,
        use_rag: body.use_rag,
        conversation_id: body.conversation_id,
        stream: true,
    };
    ticket.start();
    let (dtx, mut drx) = mpsc::channel::<String>(64);
    let answering = state.assistant().answer_stream(req, ctx, dtx);
    tokio::pin!(answering);
    let revoked = revocation(slot.as_ref());
    tokio::pin!(revoked);
    let mut out = Deltas::new(&tx);
    let result = loop {
        tokio::select! {
            biased;
            () = &mut revoked => {
                // The slot may be another request's by now: the answer stops here (its upstream
                // call with it), and the client is told to retry.
                drop(slot);
                if out.sent.is_empty() {
                    ticket.refund().await;
                } else {
                    ticket.keep();
                }
                let _ = tx.send(error_event(&slot_revoked())).await;
                return;
            }
            Some(text) = drx.recv() => out.send(&text).await,
            r = &mut answering => break r,
        }
    };
    while let Ok(text) = drx.try_recv() {
        out.send(&text).await;
    }
    drop(slot);
    match result {
        Ok(a) => {
            ticket.keep();
            out.finish().await;
            let _ = tx.send(event("citations", &a.citations)).await;
            let done = ChatResponse {
                answer: out.sent,
                citations: a.citations,
                conversation_id: a.conversation_id,
                queries_remaining: remaining,
                queued_ms,
            };
            let _ = tx.send(event("done", &done)).await;
        }
        Err(e) => {
            // Text the client already has is an answer it got: never given back for free.
            if e.refunds_quota() && out.sent.is_empty() {
                ticket.refund().await;
            } else {
                ticket.keep();
            }
            let err: ApiError = e.into();
            let _ = tx.send(error_event(&err)).await;
        }
    }
}

/// The `delta` events of one answer, through the Markdown guard; `sent` is everything sent.
struct Deltas<'a> {
    tx: &'a mpsc::Sender<Event>,
    guard: MarkdownGuard,
    sent: String,
}

impl<'a> Deltas<'a> {
    fn new(tx: &'a mpsc::Sender<Event>) -> Self {
        Deltas {
            tx,
            guard: MarkdownGuard::new(),
            sent: String::new(),
        }
    }

    async fn emit(&mut self, text: String) {
        if text.is_empty() {
            return;
        }
        // Counted as sent once handed to the connection's stream: from here on the client can
        // read it, whatever happens next.
        if self
            .tx
            .send(event("delta", &json!({ "text": text })))
            .await
            .is_ok()
        {
            self.sent.push_str(&text);
        }
    }

    async fn send(&mut self, piece: &str) {
        let safe = self.guard.push(&chat::text::clean(piece));
        self.emit(safe).await;
    }

    async fn finish(&mut self) {
        let rest = self.guard.finish();
        self.emit(rest).await;
    }
}
