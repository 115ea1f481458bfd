//! `POST /api/export`: a conversation with its citations in one of four formats (through the
//! pipeline). Per-IP window and admission layers as for chat (class `export`, see [`crate::app`]);
//! no daily quota.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::parsed::{Checked, Parsed};
use super::queued;
use crate::auth::AuthUser;
use crate::error::{ApiError, Problem};
use crate::state::AppState;
use chat::{ChatContext, ExportFormat, ExportRequest};

/// An export request.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ExportBody {
    /// The conversation.
    #[serde(rename = "conversationId")]
    #[schema(
        rename = "conversationId",
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub conversation_id: Uuid,
    /// The format.
    pub format: ExportFormat,
}

/// Exports a conversation.
#[utoipa::path(
    post,
    path = "/api/export",
    tag = "export",
    request_body = ExportBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The document", content(
            (String = "text/markdown"),
            (Object = "application/json"),
            (String = "application/x-bibtex"),
            (String = "application/x-research-info-systems"),
        )),
        (status = 400, description = "`invalid_request`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such conversation", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "`request_timeout`: the body did not arrive within `FLEETGATE_HTTP_BODY_TIMEOUT_MS`", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`export_too_large`: the conversation has more messages than `FLEETGATE_EXPORT_MAX_MESSAGES`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited` or `user_queue_full`", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "`queue_timeout`, `queue_full` or `service_unavailable`", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
pub async fn export(
    State(state): State<AppState>,
    user: AuthUser,
    headers: axum::http::HeaderMap,
    admitted: Option<axum::Extension<limiter_tower::Admitted>>,
    Parsed(body): Parsed<ExportBody>,
) -> Result<Response, ApiError> {
    let ctx = ChatContext {
        user_id: user.id.clone(),
        user_hash: user.hashed_id(),
        queued: queued(admitted),
        queries_remaining: None,
        request_id: super::request_id(&headers),
    };
    let doc = state
        .assistant()
        .export(
            ExportRequest {
                conversation_id: body.conversation_id,
                format: body.format,
                max_messages: state.config().server.export_max_messages,
            },
            ctx,
        )
        .await?;
    let ct = HeaderValue::from_str(&doc.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    Ok(([(header::CONTENT_TYPE, ct)], doc.body).into_response())
}

impl Checked for ExportBody {
    fn check(&self) -> Result<(), ApiError> {
        Ok(())
    }
}
