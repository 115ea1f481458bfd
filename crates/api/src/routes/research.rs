//! `POST /api/research`: papers from PubMed and Semantic Scholar (through the chat assistant). Per-IP
//! window and admission layers as for chat (class `research`, see [`crate::app`]); no daily quota
//! (it counts chat queries).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::parsed::{Checked, Parsed};
use super::queued;
use crate::auth::AuthUser;
use crate::error::{ApiError, Problem};
use crate::state::AppState;
use chat::{ChatContext, Paper, ResearchRequest};

/// Longest accepted query, in characters.
pub const MAX_QUERY_CHARS: usize = 1000;
/// Most papers one request may ask for.
pub const MAX_LIMIT: u32 = 50;

/// A research query.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ResearchBody {
    /// Search terms.
    #[schema(min_length = 1, max_length = 1000, pattern = r"\S")]
    pub query: String,
    /// Papers wanted (default 10).
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 50)]
    pub limit: Option<serde_json::Number>,
}

/// Papers found.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResearchResponse {
    /// The papers.
    pub papers: Vec<Paper>,
    /// Time spent waiting for a slot, ms.
    pub queued_ms: u64,
}

/// Searches papers.
#[utoipa::path(
    post,
    path = "/api/research",
    tag = "research",
    request_body = ResearchBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Papers", body = ResearchResponse),
        (status = 400, description = "`invalid_request`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized`", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "`request_timeout`: the body did not arrive within `FLEETGATE_HTTP_BODY_TIMEOUT_MS`", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited` or `user_queue_full`", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "`queue_timeout`, `queue_full`, `upstream_unavailable` or `service_unavailable`", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 504, description = "`upstream_timeout`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn research(
    State(state): State<AppState>,
    user: AuthUser,
    headers: axum::http::HeaderMap,
    admitted: Option<axum::Extension<limiter_tower::Admitted>>,
    Parsed(body): Parsed<ResearchBody>,
) -> Result<Json<ResearchResponse>, ApiError> {
    let limit = body.limit()?;
    let queued = queued(admitted);
    let ctx = ChatContext {
        user_id: user.id.clone(),
        user_hash: user.hashed_id(),
        queued,
        queries_remaining: None,
        request_id: super::request_id(&headers),
    };
    let papers = state
        .assistant()
        .research(
            ResearchRequest {
                query: body.query,
                limit,
            },
            ctx,
        )
        .await?;
    Ok(Json(ResearchResponse {
        papers,
        queued_ms: u64::try_from(queued.as_millis()).unwrap_or(u64::MAX),
    }))
}

impl ResearchBody {
    /// The papers wanted (10 unless given).
    fn limit(&self) -> Result<u32, ApiError> {
        Ok(match &self.limit {
            None => 10,
            // JSON Schema's `integer` includes `34.0`: accept any number with no fractional part.
            Some(n) => n
                .as_u64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                        .map(|f| f as u64)
                })
                .and_then(|v| u32::try_from(v).ok())
                .filter(|v| (1..=MAX_LIMIT).contains(v))
                .ok_or_else(|| {
                    ApiError::InvalidRequest(format!(
                        "`limit` must be an integer between 1 and {MAX_LIMIT}"
                    ))
                })?,
        })
    }
}

impl Checked for ResearchBody {
    fn check(&self) -> Result<(), ApiError> {
        if crate::server::json::is_blank(&self.query) {
            return Err(ApiError::InvalidRequest("`query` must not be empty".into()));
        }
        crate::server::json::no_control_chars("query", &self.query)?;
        let n = self.query.chars().count();
        if n > MAX_QUERY_CHARS {
            return Err(ApiError::InvalidRequest(format!(
                "`query` has {n} characters; at most {MAX_QUERY_CHARS} are allowed"
            )));
        }
        self.limit().map(|_| ())
    }
}
