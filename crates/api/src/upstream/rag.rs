//! Retrieval-augmented prompts: query PubMed and Semantic Scholar concurrently, merge and
//! de-duplicate, rank by BM25 against the question, and number the best as sources in the prompt.
//! One source failing (breaker open, error) still yields an answer from the other, and the
//! response says which source was missing.

use super::llm::ChatMessage;
use super::rank::{rank, terms};
use super::{PubMedClient, SemanticScholarClient, SourcePaper, UpstreamError, dedupe, service};

/// What retrieval found.
#[derive(Debug, Clone, Default)]
pub struct Retrieval {
    /// Ranked, de-duplicated papers (best first).
    pub papers: Vec<SourcePaper>,
    /// Sources that could not be queried (service names).
    pub unavailable: Vec<&'static str>,
}

/// Both literature clients and the retrieval policy.
#[derive(Debug, Clone)]
pub struct Retriever {
    pubmed: PubMedClient,
    s2: SemanticScholarClient,
    /// Papers asked of each source.
    pub per_source: usize,
    /// Sources put in a prompt.
    pub top_k: usize,
}

/// Longest abstract excerpt put in a prompt, per source.
const ABSTRACT_CHARS: usize = 1200;

impl Retriever {
    /// A retriever over both sources.
    pub fn new(pubmed: PubMedClient, s2: SemanticScholarClient) -> Self {
        Retriever {
            pubmed,
            s2,
            per_source: 10,
            top_k: 5,
        }
    }

    /// Searches both sources concurrently and ranks the merged results. Fails only if both fail
    /// (with the PubMed error, or the first one's retry hint).
    pub async fn search(&self, text: &str, limit: usize) -> Result<Retrieval, UpstreamError> {
        let keywords = terms(text);
        let keywords: Vec<&str> = keywords.iter().map(String::as_str).take(8).collect();
        if keywords.is_empty() {
            return Ok(Retrieval::default());
        }
        // PubMed ANDs plain terms; OR lets partial matches through and BM25 sorts them.
        let pubmed_query = keywords.join(" OR ");
        let s2_query = keywords.join(" ");
        let (pm, s2) = tokio::join!(
            self.pubmed.search(&pubmed_query, self.per_source),
            self.s2.search(&s2_query, self.per_source)
        );
        let mut unavailable = Vec::new();
        let mut all = Vec::new();
        let mut first_error = None;
        for (name, result) in [(service::PUBMED, pm), (service::SEMANTIC_SCHOLAR, s2)] {
            match result {
                Ok(p) => all.extend(p),
                Err(e) => {
                    tracing::warn!(source = name, error = %e, "retrieval source failed");
                    unavailable.push(name);
                    first_error.get_or_insert(e);
                }
            }
        }
        if unavailable.len() == 2 {
            return Err(first_error.unwrap_or(UpstreamError::Unavailable {
                service: service::PUBMED,
                retry_after: None,
            }));
        }
        let merged = dedupe(all);
        let order = rank(text, &merged);
        let mut slots: Vec<Option<SourcePaper>> = merged.into_iter().map(Some).collect();
        let papers = order
            .into_iter()
            .take(limit)
            .filter_map(|(i, _)| slots.get_mut(i).and_then(Option::take))
            .collect();
        Ok(Retrieval {
            papers,
            unavailable,
        })
    }

    /// The sources for a chat question (`top_k` of them).
    pub async fn retrieve(&self, question: &str) -> Result<Retrieval, UpstreamError> {
        self.search(question, self.top_k).await
    }
}

/// The messages sent to the LLM: instructions with numbered sources (one per line, `[n] ...`),
/// earlier turns, then the question.
pub fn build_messages(
    question: &str,
    sources: &[SourcePaper],
    unavailable: &[&str],
    history: &[ChatMessage],
) -> Vec<ChatMessage> {
    let mut system = String::from(
        "You are a clinical research assistant for health professionals. Answer concisely and \
         accurately. ",
    );
    if sources.is_empty() {
        system.push_str(
            "No literature sources were retrieved for this question; say so if evidence is needed.",
        );
    } else {
        system.push_str(
            "Base the answer on the numbered sources below and cite them as [n]. If they do not \
             answer the question, say so.\nSources:\n",
        );
        for (i, p) in sources.iter().enumerate() {
            let mut abs: String = p.abstract_text.chars().take(ABSTRACT_CHARS).collect();
            if abs.len() < p.abstract_text.len() {
                abs.push('…');
            }
            let line = format!(
                "[{}] {}{}{} {}\n",
                i + 1,
                p.title,
                p.year.map(|y| format!(" ({y})")).unwrap_or_default(),
                p.venue
                    .as_deref()
                    .map(|v| format!(". {v}."))
                    .unwrap_or_else(|| ".".into()),
                abs
            );
            // One source per line: a newline inside a title or abstract would break numbering.
            system.push_str(line.replace(['\r', '\n'], " ").trim_end());
            system.push('\n');
        }
    }
    if !unavailable.is_empty() {
        system.push_str(&format!(
            "Note: {} could not be searched; the sources above are incomplete.\n",
            unavailable
                .iter()
                .map(|s| service::display_name(s))
                .collect::<Vec<_>>()
                .join(" and ")
        ));
    }
    let mut messages = vec![ChatMessage::new("system", system)];
    messages.extend(history.iter().cloned());
    messages.push(ChatMessage::new("user", question));
    messages
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::upstream::Source;

    #[test]
    fn sources_are_numbered_one_per_line() {
        let p = SourcePaper {
            source: Source::Pubmed,
            id: "1".into(),
            pmid: Some("1".into()),
            doi: None,
            title: "Title\nwith newline".into(),
            abstract_text: "Abstract".into(),
            year: Some(2020),
            authors: vec![],
            url: String::new(),
            venue: Some("BMJ".into()),
        };
        let m = build_messages("Q?", &[p.clone(), p], &["semantic_scholar"], &[]);
        assert_eq!(m.len(), 2);
        let sys = &m[0].content;
        assert!(sys.contains("[1] Title with newline (2020). BMJ. Abstract\n[2] "));
        assert!(sys.contains("Semantic Scholar could not be searched"));
        assert_eq!(m[1].content, "Q?");
    }
}
