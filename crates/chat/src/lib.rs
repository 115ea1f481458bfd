//! chat: the clinical research chat that fleetgate protects. A question is answered by an
//! OpenAI-compatible LLM from sources retrieved in PubMed and Semantic Scholar; conversations are
//! kept in PostgreSQL and exported as Markdown, JSON, BibTeX or RIS. No HTTP server here: the
//! service (crate `api`) runs its limits and then calls an [`Assistant`] with plain values.
//!
//! Use: build a [`RagAssistant`] from [`RagSettings`], a Redis handle (fleet-wide pacing), the
//! replica's breakers and a PostgreSQL pool; call it through the [`Assistant`] trait. Install an
//! [`instrumentation::Instrumentation`] once to receive metrics and pass trace headers on.
//!
//! Layout: `assistant.rs` (the [`Assistant`] trait, its requests, answers and errors),
//! `rag_assistant.rs` (the real one: retrieval, prompt, LLM, storage), `stub.rs` (assistants that
//! call no upstream), `retrieval/` (both sources at once, de-duplication, BM25 ranking),
//! `prompt.rs` (the messages sent to the LLM, sources as delimited data), `upstream/` (the PubMed,
//! Semantic Scholar and LLM clients, each call through breaker-store's `Outbound`),
//! `conversations.rs` (history in PostgreSQL), `export.rs` (the four formats), `text/` (control
//! characters, Markdown neutralisation), `instrumentation.rs` (the metrics and tracing hook).

pub mod assistant;
pub mod conversations;
pub mod export;
pub mod instrumentation;
pub mod prompt;
pub mod rag_assistant;
pub mod retrieval;
pub mod stub;
pub mod text;
pub mod upstream;

pub use assistant::{
    Assistant, AssistantError, AssistantFuture, ChatAnswer, ChatContext, ChatRequest, Citation,
    ExportDocument, ExportFormat, ExportRequest, Paper, ResearchRequest,
};
pub use rag_assistant::{RagAssistant, RagSettings};
pub use stub::{EchoAssistant, UnconfiguredAssistant};
