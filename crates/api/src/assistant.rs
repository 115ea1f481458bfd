//! The service's side of the chat assistant (crate `chat`): which one a replica runs
//! (`FLEETGATE_PIPELINE`), the real one built from the configuration, the metrics and trace
//! headers its upstream clients report through, and how its errors become HTTP problems.

use std::sync::Arc;
use std::time::Duration;

use breaker_store::Breakers;
use chat::instrumentation::{self, Instrumentation};
use chat::{
    Assistant, AssistantError, EchoAssistant, RagAssistant, RagSettings, UnconfiguredAssistant,
};
use limiter_core::{LimiterError, RedisHandle};
use sqlx::PgPool;

use crate::config::{Config, UpstreamSettings};
use crate::error::ApiError;

/// The assistant `FLEETGATE_PIPELINE` names: `echo`, `unconfigured`, or the real one (`rag`).
pub fn from_config(
    config: &Config,
    redis: &RedisHandle,
    breakers: Breakers,
    pool: PgPool,
) -> Result<Arc<dyn Assistant>, LimiterError> {
    Ok(match config.server.pipeline.as_str() {
        "echo" => {
            tracing::warn!("FLEETGATE_PIPELINE=echo: development assistant, no upstream is called");
            Arc::new(EchoAssistant)
        }
        "unconfigured" => Arc::new(UnconfiguredAssistant),
        _ => Arc::new(rag(config, redis, breakers, pool)?),
    })
}

/// The real assistant: PubMed and Semantic Scholar paced fleet-wide, the LLM, all behind the
/// replica's breakers, conversations in `pool`. Its upstream calls report to this service's
/// metrics and carry the current trace.
pub fn rag(
    config: &Config,
    redis: &RedisHandle,
    breakers: Breakers,
    pool: PgPool,
) -> Result<RagAssistant, LimiterError> {
    instrumentation::install(ServiceInstrumentation);
    RagAssistant::build(settings(&config.upstream), redis, breakers, pool)
}

/// The chat crate's settings from the service's configuration (secrets exposed only here, to be
/// sent to their upstream).
pub fn settings(up: &UpstreamSettings) -> RagSettings {
    let key =
        |s: &Option<crate::config::secret::Secret>| s.as_ref().map(|s| s.expose().to_string());
    RagSettings {
        pubmed_url: up.pubmed_url.clone(),
        semantic_scholar_url: up.semantic_scholar_url.clone(),
        llm_url: up.llm_url.clone(),
        llm_model: up.llm_model.clone(),
        llm_api_key: key(&up.llm_api_key),
        ncbi_api_key: key(&up.ncbi_api_key),
        ncbi_email: up.ncbi_email.clone(),
        s2_api_key: key(&up.s2_api_key),
        pubmed_rate_per_sec: up.pubmed_rate_per_sec,
        semantic_scholar_rate_per_sec: up.semantic_scholar_rate_per_sec,
        timeout: Duration::from_millis(up.timeout_ms),
        llm_answer_timeout: Duration::from_millis(up.llm_answer_timeout_ms),
        llm_max_tokens: up.llm_max_tokens,
    }
}

/// Upstream attempts and failures into the Prometheus registry; the current span's trace context
/// onto every outbound request.
struct ServiceInstrumentation;

impl Instrumentation for ServiceInstrumentation {
    fn attempt(&self, service: &'static str, outcome: &'static str, took: Duration) {
        crate::metrics::get().upstream_attempt(service, outcome, took);
    }

    fn error(&self, service: &'static str, kind: &'static str) {
        crate::metrics::get().upstream_error(service, kind);
    }

    fn trace_headers(&self) -> axum::http::HeaderMap {
        crate::telemetry::trace_headers()
    }
}

impl From<AssistantError> for ApiError {
    fn from(e: AssistantError) -> Self {
        match e {
            AssistantError::UpstreamUnavailable { retry_after, cause } => {
                tracing::warn!(%cause, "upstream unavailable");
                ApiError::UpstreamUnavailable { retry_after }
            }
            AssistantError::UpstreamTimeout => ApiError::UpstreamTimeout,
            AssistantError::Unavailable(cause) => {
                ApiError::unavailable("the answering service is unavailable; retry later", cause)
            }
            AssistantError::NotFound => ApiError::NotFound("no such conversation".into()),
            AssistantError::Invalid(d) => ApiError::InvalidRequest(d),
            AssistantError::Storage(cause) => ApiError::unavailable(
                "the answer could not be saved; retry later",
                format!("storage: {cause}"),
            ),
            AssistantError::ExportTooLarge { messages, limit } => {
                ApiError::ExportTooLarge { messages, limit }
            }
        }
    }
}
