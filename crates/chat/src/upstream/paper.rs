//! The record both literature sources map to, and their de-duplication.

use serde::Serialize;

/// Where a paper came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// PubMed (id = PMID).
    Pubmed,
    /// Semantic Scholar (id = paperId).
    SemanticScholar,
}

impl Source {
    /// Name used in citations (`"pubmed"`, `"semantic_scholar"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Pubmed => "pubmed",
            Source::SemanticScholar => "semantic_scholar",
        }
    }
}

/// One paper as retrieved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourcePaper {
    /// The source that returned it (the first one, after de-duplication).
    pub source: Source,
    /// The id within that source.
    pub id: String,
    /// PubMed id, if known.
    pub pmid: Option<String>,
    /// DOI, lower-cased, if known.
    pub doi: Option<String>,
    /// Title.
    pub title: String,
    /// Abstract (may be empty).
    #[serde(rename = "abstract")]
    pub abstract_text: String,
    /// Publication year.
    pub year: Option<i32>,
    /// Author names.
    pub authors: Vec<String>,
    /// A link to the paper.
    pub url: String,
    /// Journal or venue.
    pub venue: Option<String>,
}

/// Bounds of a retrieved paper's fields (characters): enough for any real record, small enough that
/// a hostile upstream cannot blow up prompts, stored citations or exports.
pub mod bounds {
    /// Title, venue.
    pub const TITLE: usize = 500;
    /// Abstract (the prompt uses a shorter excerpt).
    pub const ABSTRACT: usize = 10_000;
    /// One author's name.
    pub const AUTHOR: usize = 200;
    /// Authors kept.
    pub const AUTHORS: usize = 50;
    /// Ids and DOIs.
    pub const ID: usize = 200;
}

impl SourcePaper {
    /// The paper with every text field cleaned of control characters (and of character
    /// references to them) and cut to [`bounds`], and its URL kept only if it is http(s).
    pub fn cleaned(self) -> SourcePaper {
        use crate::text::{clean_upstream, http_url};
        let f = |v: &str, max| clean_upstream(v, max);
        SourcePaper {
            source: self.source,
            id: f(&self.id, bounds::ID),
            pmid: self.pmid.as_deref().map(|v| f(v, bounds::ID)),
            doi: self.doi.as_deref().map(|v| f(v, bounds::ID)),
            title: f(&self.title, bounds::TITLE),
            abstract_text: f(&self.abstract_text, bounds::ABSTRACT),
            year: self.year,
            authors: self
                .authors
                .iter()
                .take(bounds::AUTHORS)
                .map(|a| f(a, bounds::AUTHOR))
                .collect(),
            url: http_url(&self.url).map(str::to_string).unwrap_or_default(),
            venue: self.venue.as_deref().map(|v| f(v, bounds::TITLE)),
        }
    }
}

/// Normalises a DOI for comparison: trimmed, lower-case, without a resolver prefix.
pub fn normalize_doi(doi: &str) -> Option<String> {
    let d = doi.trim().to_ascii_lowercase();
    let d = d
        .strip_prefix("https://doi.org/")
        .or_else(|| d.strip_prefix("http://doi.org/"))
        .or_else(|| d.strip_prefix("doi:"))
        .unwrap_or(&d)
        .to_string();
    (d.starts_with("10.") && d.len() <= 200).then_some(d)
}

/// Merges papers that are the same work (same PMID or same DOI), keeping the first one's source
/// and order and filling its gaps (abstract, year, ids, authors) from the duplicates.
pub fn dedupe(papers: Vec<SourcePaper>) -> Vec<SourcePaper> {
    let mut out: Vec<SourcePaper> = Vec::with_capacity(papers.len());
    for p in papers {
        let dup = out.iter_mut().find(|q| {
            (p.pmid.is_some() && p.pmid == q.pmid) || (p.doi.is_some() && p.doi == q.doi)
        });
        match dup {
            Some(q) => {
                if q.abstract_text.len() < p.abstract_text.len() {
                    q.abstract_text = p.abstract_text;
                }
                q.year = q.year.or(p.year);
                q.pmid = q.pmid.take().or(p.pmid);
                q.doi = q.doi.take().or(p.doi);
                q.venue = q.venue.take().or(p.venue);
                if q.authors.is_empty() {
                    q.authors = p.authors;
                }
            }
            None => out.push(p),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn paper(source: Source, id: &str, pmid: Option<&str>, doi: Option<&str>) -> SourcePaper {
        SourcePaper {
            source,
            id: id.into(),
            pmid: pmid.map(Into::into),
            doi: doi.and_then(normalize_doi),
            title: id.into(),
            abstract_text: String::new(),
            year: None,
            authors: vec![],
            url: String::new(),
            venue: None,
        }
    }

    #[test]
    fn duplicates_by_pmid_or_doi_merge() {
        let mut s2 = paper(Source::SemanticScholar, "s2a", Some("1"), Some("10.1/X"));
        s2.abstract_text = "longer abstract".into();
        s2.year = Some(2020);
        let merged = dedupe(vec![
            paper(Source::Pubmed, "1", Some("1"), None),
            s2,
            paper(Source::SemanticScholar, "s2b", None, Some("doi:10.9/y")),
            paper(
                Source::Pubmed,
                "2",
                Some("2"),
                Some("https://doi.org/10.9/Y"),
            ),
        ]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].source, Source::Pubmed);
        assert_eq!(merged[0].abstract_text, "longer abstract");
        assert_eq!(merged[0].doi.as_deref(), Some("10.1/x"));
        assert_eq!(merged[0].year, Some(2020));
        assert_eq!(merged[1].pmid.as_deref(), Some("2"));
    }

    #[test]
    fn doi_normalisation_rejects_non_dois() {
        assert_eq!(normalize_doi(" 10.1000/ABC "), Some("10.1000/abc".into()));
        assert_eq!(normalize_doi("not a doi"), None);
    }
}
