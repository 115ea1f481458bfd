//! Real clients of the three upstreams: PubMed E-utilities, Semantic Scholar Graph API v1, an
//! OpenAI-compatible chat completions endpoint.
//!
//! Every call goes through breaker-store's [`breaker_store::Outbound`]: fleet-wide pacing, the shared breaker,
//! a timeout and retries with backoff. Responses are read with a size cap and parsed defensively:
//! a malformed, truncated or unexpected body is an [`UpstreamError::Malformed`], never a panic.
//!
//! Layout: `paper.rs` (the record both sources map to, de-duplication), `http.rs` (capped body
//! reads, outcome classification), `pubmed.rs`, `semantic_scholar.rs`, `llm.rs` (JSON and
//! streamed completions).

mod http;
pub mod llm;
pub mod paper;
pub mod pubmed;
pub mod semantic_scholar;

use std::time::Duration;

pub use llm::{ChatMessage, LlmClient, LlmConfig};
pub use paper::{Source, SourcePaper, dedupe};
pub use pubmed::{PubMedClient, PubMedConfig};
pub use semantic_scholar::{SemanticScholarClient, SemanticScholarConfig};

/// Breaker and pacing names of the upstream services.
pub mod service {
    /// PubMed E-utilities.
    pub const PUBMED: &str = "pubmed";
    /// Semantic Scholar Graph API.
    pub const SEMANTIC_SCHOLAR: &str = "semantic_scholar";
    /// The LLM endpoint.
    pub const LLM: &str = "llm";

    /// The name people know a service by, for messages.
    pub fn display_name(service: &str) -> &str {
        match service {
            PUBMED => "PubMed",
            SEMANTIC_SCHOLAR => "Semantic Scholar",
            LLM => "the language model",
            other => other,
        }
    }
}

/// Why an upstream call produced no usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// Breaker open, pacing budget exceeded, or failures (5xx, 429, connection) after retries.
    #[error("{service} unavailable")]
    Unavailable {
        /// Which upstream.
        service: &'static str,
        /// When it is worth trying again, if known.
        retry_after: Option<Duration>,
    },
    /// The upstream did not answer in time.
    #[error("{service} timed out")]
    Timeout {
        /// Which upstream.
        service: &'static str,
    },
    /// It answered, but not with what its protocol promises.
    #[error("{service} sent a malformed response: {detail}")]
    Malformed {
        /// Which upstream.
        service: &'static str,
        /// What was wrong (for logs only).
        detail: String,
    },
    /// It refused our request (4xx other than 429): a configuration problem on our side.
    #[error("{service} rejected the request with {status}")]
    Rejected {
        /// Which upstream.
        service: &'static str,
        /// HTTP status.
        status: u16,
    },
}

impl UpstreamError {
    /// The upstream concerned.
    pub fn service(&self) -> &'static str {
        match self {
            UpstreamError::Unavailable { service, .. }
            | UpstreamError::Timeout { service }
            | UpstreamError::Malformed { service, .. }
            | UpstreamError::Rejected { service, .. } => service,
        }
    }

    /// Retry hint for the client.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            UpstreamError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Maps the wrapper's final error.
    pub(crate) fn from_call(
        service: &'static str,
        err: breaker_store::CallError<UpstreamError>,
    ) -> Self {
        use breaker_store::CallError;
        let kind = match &err {
            CallError::Unavailable { .. } => "breaker_open",
            CallError::Paced { .. } => "paced",
            CallError::Timeout { .. } => "timeout",
            CallError::Upstream { .. } => "failure",
            CallError::Rejected { .. } => "rejected",
        };
        crate::instrumentation::get().error(service, kind);
        match err {
            CallError::Timeout { .. } => UpstreamError::Timeout { service },
            CallError::Upstream { error, .. } | CallError::Rejected { error, .. } => error,
            other => UpstreamError::Unavailable {
                service,
                retry_after: other.retry_after(),
            },
        }
    }
}

/// Builds the one HTTP client the upstream clients share (rustls with ring; the provider must be
/// installed first, see [`install_crypto_provider`]).
pub fn http_client(connect_timeout: Duration) -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("fleetgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Installs rustls's ring provider once per process (reqwest is built without a default one so
/// that only one TLS stack is compiled).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
