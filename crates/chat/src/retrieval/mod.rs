//! Retrieval: query PubMed and Semantic Scholar concurrently, merge and de-duplicate, and rank by
//! BM25 against the question ([`mod@rank`]). One source failing (breaker open, error) still yields
//! papers from the other, and the result says which source was missing.

pub mod rank;

use self::rank::{rank, terms};
use crate::upstream::{
    PubMedClient, SemanticScholarClient, SourcePaper, UpstreamError, dedupe, service,
};

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
        // Cleaned before anything else sees them: ranking, prompts, citations, storage.
        let merged = dedupe(all.into_iter().map(SourcePaper::cleaned).collect());
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
