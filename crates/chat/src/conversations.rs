//! Conversations and their messages in PostgreSQL, always scoped to their owner: a conversation
//! id of another user behaves exactly like an unknown one (no way to probe for ids).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::export::{CitedWork, ExportConversation, ExportMessage};

/// Why a conversation operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ConversationError {
    /// No such conversation for this user.
    #[error("conversation not found")]
    NotFound,
    /// The database failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// More messages than a load may return.
    #[error("conversation too long")]
    TooLong {
        /// Messages it has, at least.
        messages: u64,
        /// The bound.
        limit: u32,
    },
}

/// The store.
#[derive(Debug, Clone)]
pub struct Conversations {
    pool: PgPool,
}

/// Longest title kept (taken from the first question).
const TITLE_CHARS: usize = 120;

impl Conversations {
    /// A store on a pool (migrations applied).
    pub fn new(pool: PgPool) -> Self {
        Conversations { pool }
    }

    /// The conversation to answer in: `id` if it is the user's, or a new one titled by the
    /// question.
    pub async fn open(
        &self,
        user: &str,
        id: Option<Uuid>,
        question: &str,
    ) -> Result<Uuid, ConversationError> {
        match id {
            Some(id) => {
                let owned =
                    sqlx::query("SELECT 1 FROM conversations WHERE id = $1 AND user_id = $2")
                        .bind(id)
                        .bind(user)
                        .fetch_optional(&self.pool)
                        .await?;
                owned.map(|_| id).ok_or(ConversationError::NotFound)
            }
            None => {
                let id = Uuid::new_v4();
                let title: String = question.split_whitespace().collect::<Vec<_>>().join(" ");
                let title: String = title.chars().take(TITLE_CHARS).collect();
                sqlx::query("INSERT INTO conversations (id, user_id, title) VALUES ($1, $2, $3)")
                    .bind(id)
                    .bind(user)
                    .bind(title)
                    .execute(&self.pool)
                    .await?;
                Ok(id)
            }
        }
    }

    /// The last `max_messages` messages, oldest first (the context of the next answer).
    pub async fn recent(
        &self,
        id: Uuid,
        max_messages: i64,
    ) -> Result<Vec<(String, String)>, ConversationError> {
        let rows = sqlx::query(
            "SELECT role, content FROM (
                 SELECT id, role, content FROM messages WHERE conversation_id = $1
                 ORDER BY id DESC LIMIT $2
             ) last ORDER BY id",
        )
        .bind(id)
        .bind(max_messages)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get::<String, _>("role"), r.get::<String, _>("content")))
            .collect())
    }

    /// Stores a question and its answer together (both or neither).
    pub async fn append_turn(
        &self,
        id: Uuid,
        question: &str,
        answer: &str,
        citations: &[CitedWork],
    ) -> Result<(), ConversationError> {
        let cited = serde_json::to_value(citations).unwrap_or(Value::Array(Vec::new()));
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO messages (conversation_id, role, content) VALUES ($1, 'user', $2)",
        )
        .bind(id)
        .bind(question)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO messages (conversation_id, role, content, citations)
             VALUES ($1, 'assistant', $2, $3)",
        )
        .bind(id)
        .bind(answer)
        .bind(cited)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE conversations SET updated_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The whole conversation, if it is the user's and has at most `max_messages` messages (one
    /// more is read to tell; work and memory stay bounded whatever the conversation's length).
    pub async fn load(
        &self,
        user: &str,
        id: Uuid,
        max_messages: u32,
    ) -> Result<ExportConversation, ConversationError> {
        let head = sqlx::query(
            "SELECT title, created_at FROM conversations WHERE id = $1 AND user_id = $2",
        )
        .bind(id)
        .bind(user)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(ConversationError::NotFound)?;
        let rows = sqlx::query(
            "SELECT role, content, citations, created_at FROM messages
             WHERE conversation_id = $1 ORDER BY id LIMIT $2",
        )
        .bind(id)
        .bind(i64::from(max_messages) + 1)
        .fetch_all(&self.pool)
        .await?;
        if rows.len() > max_messages as usize {
            return Err(ConversationError::TooLong {
                messages: rows.len() as u64,
                limit: max_messages,
            });
        }
        let messages = rows
            .into_iter()
            .map(|r| ExportMessage {
                role: r.get("role"),
                content: r.get("content"),
                citations: serde_json::from_value(r.get::<Value, _>("citations"))
                    .unwrap_or_default(),
                created_at: r.get::<DateTime<Utc>, _>("created_at"),
            })
            .collect();
        Ok(ExportConversation {
            id,
            title: head.get("title"),
            created_at: head.get("created_at"),
            messages,
        })
    }
}
