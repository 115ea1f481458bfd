//! The real assistant: retrieval from PubMed and Semantic Scholar, an answer from the
//! OpenAI-compatible LLM citing the numbered sources, conversations kept in PostgreSQL, research
//! and export. Every upstream call goes through pacing, the shared breakers and retries
//! (breaker-store's `Outbound`; the LLM's own rules are in [`crate::upstream::llm`]).
//!
//! What is stored is what the user was shown: the answer after the Markdown guard
//! ([`crate::text::neutralise`]), sources after cleaning ([`crate::upstream::SourcePaper::cleaned`]).
//! A failure to store an answer that was made is ours ([`AssistantError::Storage`]), not the
//! upstream's.

use std::sync::Arc;
use std::time::Duration;

use breaker_store::{Breakers, Outbound, OutboundConfig, ServiceOutbound};
use limiter_core::{LimiterError, Pacer, RedisHandle};
use sqlx::PgPool;

use crate::assistant::{
    Assistant, AssistantError, AssistantFuture, ChatAnswer, ChatContext, ChatRequest, Citation,
    ExportDocument, ExportFormat, ExportRequest, Paper, ResearchRequest,
};
use crate::conversations::{ConversationError, Conversations};
use crate::export::{self, CitedWork};
use crate::prompt::build_messages;
use crate::retrieval::Retriever;
use crate::text::{MarkdownGuard, neutralise};
use crate::upstream::{
    ChatMessage, LlmClient, LlmConfig, PubMedClient, PubMedConfig, SemanticScholarClient,
    SemanticScholarConfig, SourcePaper, UpstreamError, http_client, service,
};

/// Earlier messages of a conversation put into the prompt (three exchanges).
const HISTORY_MESSAGES: i64 = 6;
/// Suggested wait when an upstream failed without saying how long to wait.
const DEFAULT_RETRY: Duration = Duration::from_secs(10);

/// What [`RagAssistant::build`] needs to know: where the upstreams are, their keys and rates,
/// and the timeouts. Keys are plain strings here; `Debug` never prints them.
#[derive(Clone, Default)]
pub struct RagSettings {
    /// Base URL of NCBI E-utilities.
    pub pubmed_url: String,
    /// Base URL of the Semantic Scholar Graph API v1.
    pub semantic_scholar_url: String,
    /// Base URL of an OpenAI-compatible `/v1` API.
    pub llm_url: String,
    /// Model name sent to the LLM.
    pub llm_model: String,
    /// Bearer key of the LLM API.
    pub llm_api_key: Option<String>,
    /// NCBI `api_key`.
    pub ncbi_api_key: Option<String>,
    /// The `email` parameter NCBI asks E-utilities clients to send.
    pub ncbi_email: Option<String>,
    /// Semantic Scholar `x-api-key`.
    pub s2_api_key: Option<String>,
    /// PubMed requests per second, fleet-wide.
    pub pubmed_rate_per_sec: u32,
    /// Semantic Scholar requests per second, fleet-wide.
    pub semantic_scholar_rate_per_sec: u32,
    /// One attempt at PubMed or Semantic Scholar; for the LLM, the first token and each gap.
    pub timeout: Duration,
    /// The longest a whole LLM answer may take.
    pub llm_answer_timeout: Duration,
    /// `max_tokens` of every LLM request.
    pub llm_max_tokens: u32,
}

impl std::fmt::Debug for RagSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = |k: &Option<String>| k.as_ref().map(|_| "<redacted>");
        f.debug_struct("RagSettings")
            .field("pubmed_url", &self.pubmed_url)
            .field("semantic_scholar_url", &self.semantic_scholar_url)
            .field("llm_url", &self.llm_url)
            .field("llm_model", &self.llm_model)
            .field("llm_api_key", &key(&self.llm_api_key))
            .field("ncbi_api_key", &key(&self.ncbi_api_key))
            .field("ncbi_email", &self.ncbi_email)
            .field("s2_api_key", &key(&self.s2_api_key))
            .field("pubmed_rate_per_sec", &self.pubmed_rate_per_sec)
            .field(
                "semantic_scholar_rate_per_sec",
                &self.semantic_scholar_rate_per_sec,
            )
            .field("timeout", &self.timeout)
            .field("llm_answer_timeout", &self.llm_answer_timeout)
            .field("llm_max_tokens", &self.llm_max_tokens)
            .finish()
    }
}

/// Retrieval + LLM + conversations.
#[derive(Debug, Clone)]
pub struct RagAssistant {
    retriever: Retriever,
    llm: LlmClient,
    conversations: Conversations,
}

impl RagAssistant {
    /// Builds the clients from the configuration: PubMed and Semantic Scholar paced fleet-wide at
    /// their configured rates, every upstream behind the replica's breakers.
    pub fn build(
        up: RagSettings,
        redis: &RedisHandle,
        breakers: Breakers,
        pool: PgPool,
    ) -> Result<Self, LimiterError> {
        let timeout = up.timeout;
        let http = http_client(Duration::from_secs(5));
        // Spacing 10% wider than 1/rate: room for ~100 ms of jitter between a booked slot and the
        // request's arrival, so the upstream never counts more than `rate` in any second.
        let pacer = |name: &str, rate: u32| {
            Pacer::new(redis.clone(), name, f64::from(rate), 1).map(|p| {
                let guard = p.interval() / 10;
                p.with_spacing_guard(guard)
            })
        };
        let outbound = Arc::new(
            Outbound::new(
                breakers,
                OutboundConfig {
                    timeout,
                    ..OutboundConfig::default()
                },
            )
            .with_service(
                service::PUBMED,
                ServiceOutbound {
                    pacer: Some(pacer(service::PUBMED, up.pubmed_rate_per_sec)?),
                    ..ServiceOutbound::default()
                },
            )
            .with_service(
                service::SEMANTIC_SCHOLAR,
                ServiceOutbound {
                    pacer: Some(pacer(
                        service::SEMANTIC_SCHOLAR,
                        up.semantic_scholar_rate_per_sec,
                    )?),
                    ..ServiceOutbound::default()
                },
            ),
        );
        let pubmed = PubMedClient::new(
            http.clone(),
            Arc::clone(&outbound),
            PubMedConfig {
                base_url: up.pubmed_url.clone(),
                api_key: up.ncbi_api_key.clone(),
                tool: "fleetgate".into(),
                email: up.ncbi_email.clone(),
            },
        );
        let s2 = SemanticScholarClient::new(
            http.clone(),
            Arc::clone(&outbound),
            SemanticScholarConfig {
                base_url: up.semantic_scholar_url.clone(),
                api_key: up.s2_api_key.clone(),
            },
        );
        let llm = LlmClient::new(
            http,
            outbound,
            LlmConfig {
                base_url: up.llm_url.clone(),
                model: up.llm_model.clone(),
                api_key: up.llm_api_key.clone(),
                timeout,
                answer_timeout: up.llm_answer_timeout,
                max_tokens: up.llm_max_tokens,
            },
        );
        Ok(RagAssistant {
            retriever: Retriever::new(pubmed, s2),
            llm,
            conversations: Conversations::new(pool),
        })
    }

    /// Everything before the LLM call: the conversation, its recent turns, the sources.
    async fn prepare(
        &self,
        req: &ChatRequest,
        ctx: &ChatContext,
    ) -> Result<Prepared, AssistantError> {
        let conv = self
            .conversations
            .open(&ctx.user_id, req.conversation_id, &req.message)
            .await
            .map_err(conversation_error)?;
        let history: Vec<ChatMessage> = self
            .conversations
            .recent(conv, HISTORY_MESSAGES)
            .await
            .map_err(conversation_error)?
            .into_iter()
            .map(|(role, content)| ChatMessage::new(&role, content))
            .collect();
        let (sources, unavailable) = if req.use_rag {
            match self.retriever.retrieve(&req.message).await {
                Ok(r) => (r.papers, r.unavailable),
                // Both sources down: still answer, and say the answer has no sources.
                Err(_) => (Vec::new(), vec![service::PUBMED, service::SEMANTIC_SCHOLAR]),
            }
        } else {
            (Vec::new(), Vec::new())
        };
        let messages = build_messages(&req.message, &sources, &unavailable, &history);
        let note = match unavailable.as_slice() {
            [] => None,
            missing => Some(format!(
                "Note: {} could not be searched; this answer uses {}.\n\n",
                missing
                    .iter()
                    .map(|s| service::display_name(s))
                    .collect::<Vec<_>>()
                    .join(" and "),
                if sources.is_empty() {
                    "no retrieved sources"
                } else {
                    "the remaining source only"
                }
            )),
        };
        Ok(Prepared {
            conv,
            sources,
            messages,
            note,
        })
    }

    /// Stores the turn and shapes the reply.
    async fn finish(
        &self,
        p: Prepared,
        question: &str,
        answer: String,
    ) -> Result<ChatAnswer, AssistantError> {
        let works: Vec<CitedWork> = p.sources.iter().map(cited_work).collect();
        self.conversations
            .append_turn(p.conv, question, &answer, &works)
            .await
            .map_err(|e| AssistantError::Storage(e.to_string()))?;
        Ok(ChatAnswer {
            answer,
            citations: p.sources.iter().map(citation).collect(),
            conversation_id: p.conv,
        })
    }

    async fn chat(&self, req: ChatRequest, ctx: ChatContext) -> Result<ChatAnswer, AssistantError> {
        let p = self.prepare(&req, &ctx).await?;
        let text = self
            .llm
            .complete(&p.messages, &ctx.user_hash)
            .await
            .map_err(upstream_error)?;
        let answer = neutralise(&format!("{}{text}", p.note.as_deref().unwrap_or("")));
        self.finish(p, &req.message, answer).await
    }

    /// Like `chat`, relaying the LLM's deltas as they arrive.
    async fn chat_stream(
        &self,
        req: ChatRequest,
        ctx: ChatContext,
        deltas: tokio::sync::mpsc::Sender<String>,
    ) -> Result<ChatAnswer, AssistantError> {
        let p = self.prepare(&req, &ctx).await?;
        let mut guard = MarkdownGuard::new();
        let mut answer = String::new();
        // The note goes out with the first piece of the answer: if the LLM fails before that,
        // the client has received no text.
        let mut note = p.note.clone();
        let mut rx = self
            .llm
            .stream(&p.messages, &ctx.user_hash)
            .await
            .map_err(upstream_error)?;
        while let Some(piece) = rx.recv().await {
            let piece = piece.map_err(upstream_error)?;
            let piece = match note.take() {
                Some(n) => n + &piece,
                None => piece,
            };
            let safe = guard.push(&piece);
            answer.push_str(&safe);
            if !safe.is_empty() && deltas.send(safe).await.is_err() {
                // The reader went away: stop, dropping the upstream stream (which cancels it).
                return Err(AssistantError::Unavailable("client went away".into()));
            }
        }
        let rest = guard.finish();
        answer.push_str(&rest);
        if !rest.is_empty() {
            let _ = deltas.send(rest).await;
        }
        self.finish(p, &req.message, answer).await
    }
}

/// The prompt and what the reply will need.
struct Prepared {
    conv: uuid::Uuid,
    sources: Vec<SourcePaper>,
    messages: Vec<ChatMessage>,
    /// Said first when a source could not be searched.
    note: Option<String>,
}

impl Assistant for RagAssistant {
    fn answer(&self, req: ChatRequest, ctx: ChatContext) -> AssistantFuture<'_, ChatAnswer> {
        Box::pin(self.chat(req, ctx))
    }

    fn answer_stream(
        &self,
        req: ChatRequest,
        ctx: ChatContext,
        deltas: tokio::sync::mpsc::Sender<String>,
    ) -> AssistantFuture<'_, ChatAnswer> {
        Box::pin(self.chat_stream(req, ctx, deltas))
    }

    fn research(&self, req: ResearchRequest, _ctx: ChatContext) -> AssistantFuture<'_, Vec<Paper>> {
        Box::pin(async move {
            let r = self
                .retriever
                .search(&req.query, req.limit as usize)
                .await
                .map_err(upstream_error)?;
            Ok(r.papers.into_iter().map(paper).collect())
        })
    }

    fn export(&self, req: ExportRequest, ctx: ChatContext) -> AssistantFuture<'_, ExportDocument> {
        Box::pin(async move {
            let c = self
                .conversations
                .load(&ctx.user_id, req.conversation_id, req.max_messages)
                .await
                .map_err(conversation_error)?;
            let (content_type, body) = match req.format {
                ExportFormat::Markdown => ("text/markdown; charset=utf-8", export::markdown(&c)),
                ExportFormat::Json => ("application/json", export::json(&c)),
                ExportFormat::Bibtex => ("application/x-bibtex; charset=utf-8", export::bibtex(&c)),
                ExportFormat::Ris => ("application/x-research-info-systems", export::ris(&c)),
            };
            Ok(ExportDocument {
                content_type: content_type.into(),
                body,
            })
        })
    }
}

fn citation(p: &SourcePaper) -> Citation {
    Citation {
        source: p.source.as_str().into(),
        id: p.id.clone(),
        title: p.title.clone(),
        url: p.url.clone(),
        year: p.year,
    }
}

fn cited_work(p: &SourcePaper) -> CitedWork {
    CitedWork {
        source: p.source.as_str().into(),
        id: p.id.clone(),
        title: p.title.clone(),
        url: p.url.clone(),
        year: p.year,
        authors: p.authors.clone(),
        doi: p.doi.clone(),
        venue: p.venue.clone(),
        pmid: p.pmid.clone(),
    }
}

fn paper(p: SourcePaper) -> Paper {
    Paper {
        source: p.source.as_str().into(),
        id: p.id,
        title: p.title,
        abstract_text: Some(p.abstract_text).filter(|a| !a.is_empty()),
        year: p.year,
        authors: p.authors,
        url: p.url,
    }
}

fn upstream_error(e: UpstreamError) -> AssistantError {
    match e {
        UpstreamError::Timeout { .. } => AssistantError::UpstreamTimeout,
        other => AssistantError::UpstreamUnavailable {
            retry_after: other.retry_after().unwrap_or(DEFAULT_RETRY),
            cause: other.to_string(),
        },
    }
}

fn conversation_error(e: ConversationError) -> AssistantError {
    match e {
        ConversationError::NotFound => AssistantError::NotFound,
        ConversationError::TooLong { messages, limit } => {
            AssistantError::ExportTooLarge { messages, limit }
        }
        ConversationError::Database(err) => {
            AssistantError::Unavailable(format!("conversation store: {err}"))
        }
    }
}
