//! For benchmarks only (`benches/http_stack.rs`, scenario 5 of `bench/run`): the router of
//! [`crate::app`] with the chat route's limiters taken out, so that the cost of the limiter stack
//! is measured against the same route, same outer layers, without it. Deliberately not a
//! configuration: the service never builds these routers, so no setting can turn limits off.

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::limits::admission::RouteClass;
use crate::routes::chat::{ChatBody, ChatResponse, validate};
use crate::routes::{admit, request_id};
use crate::server::json::ValidJson;
use crate::server::middleware::require_user;
use crate::server::with_common;
use crate::state::AppState;
use chat::{ChatContext, ChatRequest};

/// What the chat route leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Without {
    /// Every limiter: no per-IP window, no quota spend, no admission slot (JWT auth stays).
    Limiters,
    /// Only the quota spend in PostgreSQL: per-IP window and admission slot stay.
    Quota,
}

/// The service's router with `POST /api/chat` served without `without`.
pub fn app_without(state: AppState, without: Without) -> Router {
    let mut chat = Router::new().route("/api/chat", post(chat_without));
    if without == Without::Quota {
        chat = chat.route_layer(state.ip_limit(RouteClass::Chat).clone());
    }
    let chat = chat
        .route_layer(from_fn_with_state(state.clone(), require_user))
        .layer(axum::Extension(without));
    with_common(chat, state)
}

/// `routes::chat::chat` (JSON reply) minus the steps `without` names.
async fn chat_without(
    State(state): State<AppState>,
    axum::Extension(without): axum::Extension<Without>,
    user: AuthUser,
    headers: HeaderMap,
    ValidJson(body): ValidJson<ChatBody>,
) -> Result<Response, ApiError> {
    validate(&body)?;
    let slot = match without {
        Without::Limiters => None,
        Without::Quota => Some(admit(&state, &user.id, RouteClass::Chat).await?),
    };
    let queued = slot.as_ref().map(|s| s.queued()).unwrap_or_default();
    let ctx = ChatContext {
        user_id: user.id.clone(),
        user_hash: user.hashed_id(),
        queued,
        queries_remaining: None,
        request_id: request_id(&headers),
    };
    let req = ChatRequest {
        message: body.message,
        use_rag: body.use_rag,
        conversation_id: body.conversation_id,
        stream: false,
    };
    let a = state.assistant().answer(req, ctx).await?;
    drop(slot);
    Ok(axum::Json(ChatResponse {
        answer: a.answer,
        citations: a.citations,
        conversation_id: a.conversation_id,
        queries_remaining: 0,
        queued_ms: u64::try_from(queued.as_millis()).unwrap_or(u64::MAX),
    })
    .into_response())
}
