//! Assistants that call no upstream: one that refuses everything, one that echoes (development and
//! fuzzing only).

use uuid::Uuid;

use crate::assistant::{
    Assistant, AssistantError, AssistantFuture, ChatAnswer, ChatContext, ChatRequest,
    ExportDocument, ExportRequest, Paper, ResearchRequest,
};

/// The assistant of a replica configured without one (`FLEETGATE_PIPELINE=unconfigured`): every
/// call fails as unavailable.
#[derive(Debug, Default)]
pub struct UnconfiguredAssistant;

impl Assistant for UnconfiguredAssistant {
    fn answer(&self, _: ChatRequest, _: ChatContext) -> AssistantFuture<'_, ChatAnswer> {
        Box::pin(async {
            Err(AssistantError::Unavailable(
                "no assistant configured".into(),
            ))
        })
    }
}

/// Development only (`FLEETGATE_PIPELINE=echo`, used by the schemathesis run): answers with the
/// question, research with no papers, export with an empty document. Never an upstream call.
#[derive(Debug, Default)]
pub struct EchoAssistant;

impl Assistant for EchoAssistant {
    fn answer(&self, req: ChatRequest, _: ChatContext) -> AssistantFuture<'_, ChatAnswer> {
        Box::pin(async move {
            Ok(ChatAnswer {
                answer: format!("echo: {}", req.message),
                citations: Vec::new(),
                conversation_id: req.conversation_id.unwrap_or_else(Uuid::new_v4),
            })
        })
    }

    fn research(&self, _: ResearchRequest, _: ChatContext) -> AssistantFuture<'_, Vec<Paper>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn export(&self, req: ExportRequest, _: ChatContext) -> AssistantFuture<'_, ExportDocument> {
        Box::pin(async move {
            Ok(ExportDocument {
                content_type: "application/json".into(),
                body: serde_json::json!({"conversationId": req.conversation_id, "messages": []})
                    .to_string(),
            })
        })
    }
}
