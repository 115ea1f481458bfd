//! `POST /api/chat`: auth → per-IP window (layers, see [`crate::app`]) → quota spend (a user whose
//! quota is exhausted is refused before waiting) → slot → pipeline → refund if the failure is ours.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{TicketGuard, admit};
use crate::admission::RouteClass;
use crate::auth::AuthUser;
use crate::error::{ApiError, Problem};
use crate::json::ValidJson;
use crate::pipeline::{ChatContext, ChatRequest, Citation};
use crate::quota::Spend;
use crate::state::AppState;

/// Longest accepted message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 4000;

/// A chat question.
#[derive(Debug, Deserialize, ToSchema)]
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

/// Checks what the type system cannot: a non-blank message of at most 4000 characters.
pub fn validate(body: &ChatBody) -> Result<(), ApiError> {
    if crate::json::is_blank(&body.message) {
        return Err(ApiError::InvalidRequest(
            "`message` must not be empty".into(),
        ));
    }
    let n = body.message.chars().count();
    if n > MAX_MESSAGE_CHARS {
        return Err(ApiError::InvalidRequest(format!(
            "`message` has {n} characters; at most {MAX_MESSAGE_CHARS} are allowed"
        )));
    }
    Ok(())
}

/// Answers a question.
#[utoipa::path(
    post,
    path = "/api/chat",
    tag = "chat",
    request_body = ChatBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The answer", body = ChatResponse),
        (status = 400, description = "`invalid_request`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited` (per-IP window) or `daily_quota_exhausted`", body = Problem, content_type = "application/problem+json",
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
    ValidJson(body): ValidJson<ChatBody>,
) -> Result<Json<ChatResponse>, ApiError> {
    validate(&body)?;
    if state.is_shutting_down() {
        return Err(super::guard::shutting_down());
    }
    // Layer 3 before layer 2: an exhausted user never occupies a place in the queue.
    let spend = state.quota().spend(&user.id).await.map_err(|e| {
        ApiError::unavailable("the quota service is unavailable; no query was counted", e)
    })?;
    let mut ticket = match spend {
        Spend::Spent(t) => TicketGuard::new(state.quota().clone(), t),
        Spend::Exhausted { limit, retry_after } => {
            return Err(ApiError::QuotaExhausted { retry_after, limit });
        }
    };
    let slot = match admit(&state, &user.id, RouteClass::Chat).await {
        Ok(s) => s,
        Err(e) => {
            ticket.refund().await;
            return Err(e);
        }
    };
    let remaining = ticket.ticket().map_or(0, |t| t.remaining);
    let ctx = ChatContext {
        user_id: user.id.clone(),
        user_hash: user.hashed_id(),
        queued: slot.queued(),
        queries_remaining: Some(remaining),
        request_id: super::request_id(&headers),
    };
    let wants_stream = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let req = ChatRequest {
        message: body.message,
        use_rag: body.use_rag,
        conversation_id: body.conversation_id,
        stream: wants_stream,
    };
    let queued = slot.queued();
    ticket.start();
    let result = state.pipeline().answer(req, ctx).await;
    drop(slot);
    match result {
        Ok(a) => {
            ticket.keep();
            Ok(Json(ChatResponse {
                answer: a.answer,
                citations: a.citations,
                conversation_id: a.conversation_id,
                queries_remaining: remaining,
                queued_ms: u64::try_from(queued.as_millis()).unwrap_or(u64::MAX),
            }))
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
