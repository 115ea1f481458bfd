//! The seam between the gate and the product: the service's routes run every limit (auth, per-IP
//! window, quota, admission) and then call an [`Assistant`] with plain values; its errors say
//! whose fault a failure was ([`AssistantError::refunds_quota`]), which the service maps to its
//! HTTP codes.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// A boxed future (object-safe trait without `async_trait`).
pub type AssistantFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, AssistantError>> + Send + 'a>>;

/// A validated chat question.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The question (1..=4000 characters, trimmed).
    pub message: String,
    /// Whether to retrieve papers first.
    pub use_rag: bool,
    /// The conversation to continue, if any.
    pub conversation_id: Option<Uuid>,
    /// The client asked for an SSE stream (`Accept: text/event-stream`).
    pub stream: bool,
}

/// Who asks and what the gate decided, for every assistant call.
#[derive(Debug, Clone)]
pub struct ChatContext {
    /// The JWT `sub`.
    pub user_id: String,
    /// The user's pseudonym (a keyed hash of `user_id`, made by the service): the `user` field
    /// sent to the LLM.
    pub user_hash: String,
    /// How long the request waited for its slot.
    pub queued: Duration,
    /// Queries left today after this one (chat only).
    pub queries_remaining: Option<u32>,
    /// The request id (`x-request-id`), for logs and traces.
    pub request_id: Option<String>,
}

/// One citation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Citation {
    /// `pubmed` or `semantic_scholar`.
    pub source: String,
    /// The id in that source (PMID, paper id).
    pub id: String,
    /// Title.
    pub title: String,
    /// Link.
    pub url: String,
    /// Publication year.
    pub year: Option<i32>,
}

/// A chat answer.
#[derive(Debug, Clone)]
pub struct ChatAnswer {
    /// The answer text.
    pub answer: String,
    /// Its citations.
    pub citations: Vec<Citation>,
    /// The conversation (new or continued).
    pub conversation_id: Uuid,
}

/// A validated research query.
#[derive(Debug, Clone)]
pub struct ResearchRequest {
    /// Search terms.
    pub query: String,
    /// Papers wanted (1..=50).
    pub limit: u32,
}

/// One paper of a research answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Paper {
    /// `pubmed` or `semantic_scholar`.
    pub source: String,
    /// Id in that source.
    pub id: String,
    /// Title.
    pub title: String,
    /// Abstract, if known.
    #[serde(rename = "abstract")]
    pub abstract_text: Option<String>,
    /// Publication year.
    pub year: Option<i32>,
    /// Authors.
    pub authors: Vec<String>,
    /// Link.
    pub url: String,
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// Markdown.
    Markdown,
    /// JSON.
    Json,
    /// BibTeX.
    Bibtex,
    /// RIS.
    Ris,
}

/// A validated export request.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// The conversation.
    pub conversation_id: Uuid,
    /// The format.
    pub format: ExportFormat,
    /// Longest conversation exported (`FLEETGATE_EXPORT_MAX_MESSAGES`); longer is
    /// [`AssistantError::ExportTooLarge`].
    pub max_messages: u32,
}

/// An exported document.
#[derive(Debug, Clone)]
pub struct ExportDocument {
    /// Its media type (`text/markdown`, `application/json`, `application/x-bibtex`, ...).
    pub content_type: String,
    /// Its body.
    pub body: String,
}

/// How an assistant call failed.
#[derive(Debug, thiserror::Error)]
pub enum AssistantError {
    /// An upstream failed or its breaker is open (503 `upstream_unavailable`).
    #[error("upstream unavailable: {cause}")]
    UpstreamUnavailable {
        /// Suggested wait (the breaker's remaining open time, say).
        retry_after: Duration,
        /// Logged only.
        cause: String,
    },
    /// An upstream did not answer in time (504 `upstream_timeout`).
    #[error("upstream timeout")]
    UpstreamTimeout,
    /// Something the assistant needs is down or not configured (503 `service_unavailable`).
    #[error("assistant unavailable: {0}")]
    Unavailable(String),
    /// The referenced conversation does not exist for this user (404).
    #[error("not found")]
    NotFound,
    /// The input is valid JSON but unusable (400 `invalid_request`, detail shown).
    #[error("invalid: {0}")]
    Invalid(String),
    /// The answer was made but could not be stored (503 `service_unavailable`): our failure,
    /// never reported as the upstream's.
    #[error("storage: {0}")]
    Storage(String),
    /// The conversation is longer than an export may be (422 `export_too_large`).
    #[error("export too large")]
    ExportTooLarge {
        /// Messages it has, at least.
        messages: u64,
        /// The bound.
        limit: u32,
    },
}

impl AssistantError {
    /// Whether a spent query may be given back: failures that are not the user's doing. The
    /// route gives it back only if no answer text reached the client.
    pub fn refunds_quota(&self) -> bool {
        matches!(
            self,
            AssistantError::UpstreamUnavailable { .. }
                | AssistantError::UpstreamTimeout
                | AssistantError::Unavailable(_)
                | AssistantError::Storage(_)
        )
    }
}

/// What the service's routes call once a request has passed every limit.
pub trait Assistant: Send + Sync + 'static {
    /// Answers a chat question.
    fn answer(&self, req: ChatRequest, ctx: ChatContext) -> AssistantFuture<'_, ChatAnswer>;

    /// Answers while relaying the text as it is produced: each piece goes to `deltas` as soon as
    /// the upstream sends it (SSE `delta` events). The default answers whole and sends the answer
    /// as one piece.
    fn answer_stream(
        &self,
        req: ChatRequest,
        ctx: ChatContext,
        deltas: tokio::sync::mpsc::Sender<String>,
    ) -> AssistantFuture<'_, ChatAnswer> {
        Box::pin(async move {
            let answer = self.answer(req, ctx).await?;
            let _ = deltas.send(answer.answer.clone()).await;
            Ok(answer)
        })
    }

    /// Searches papers. The default says the assistant does not offer it.
    fn research(
        &self,
        _req: ResearchRequest,
        _ctx: ChatContext,
    ) -> AssistantFuture<'_, Vec<Paper>> {
        Box::pin(async { Err(AssistantError::Unavailable("research is not wired".into())) })
    }

    /// Exports a conversation. The default says the assistant does not offer it.
    fn export(
        &self,
        _req: ExportRequest,
        _ctx: ChatContext,
    ) -> AssistantFuture<'_, ExportDocument> {
        Box::pin(async { Err(AssistantError::Unavailable("export is not wired".into())) })
    }
}
