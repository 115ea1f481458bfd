//! The LLM requests last received, as the model would have seen them (`GET /stats/prompts`): who
//! asked (`user`), with what `max_tokens`, and every message. The independent observer of what a
//! client puts in its prompts. Bounded: the last [`CAPACITY`] requests, each message cut to
//! [`MAX_CONTENT`] bytes.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Requests kept.
pub const CAPACITY: usize = 50;
/// Bytes kept of each message.
pub const MAX_CONTENT: usize = 64 * 1024;

/// One message of a recorded request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptMessage {
    pub role: String,
    pub content: String,
}

/// One recorded request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedPrompt {
    /// The `user` field, if sent.
    pub user: Option<String>,
    /// The `max_tokens` (or `max_completion_tokens`) field, if sent.
    pub max_tokens: Option<u64>,
    pub stream: bool,
    pub messages: Vec<PromptMessage>,
}

/// The ring of recorded requests.
#[derive(Debug, Default)]
pub struct Prompts {
    ring: Mutex<VecDeque<RecordedPrompt>>,
}

fn cut(s: &str) -> String {
    let mut end = s.len().min(MAX_CONTENT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl Prompts {
    pub fn record(
        &self,
        user: Option<&str>,
        max_tokens: Option<u64>,
        stream: bool,
        messages: &[(String, String)],
    ) {
        let p = RecordedPrompt {
            user: user.map(str::to_string),
            max_tokens,
            stream,
            messages: messages
                .iter()
                .map(|(role, content)| PromptMessage {
                    role: role.clone(),
                    content: cut(content),
                })
                .collect(),
        };
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() >= CAPACITY {
            ring.pop_front();
        }
        ring.push_back(p);
    }

    /// Oldest first.
    pub fn snapshot(&self) -> Vec<RecordedPrompt> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter().cloned().collect()
    }

    pub fn clear(&self) {
        self.ring.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}
