//! A generated paper and its authors, with the renderings both APIs share.

use crate::vocab;

/// Which services index a paper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Availability {
    /// Only PubMed (has a PMID, absent from Semantic Scholar).
    PubmedOnly,
    /// Only Semantic Scholar (no PMID).
    S2Only,
    /// Both, with the same DOI and PMID.
    Both,
}

impl Availability {
    pub fn in_pubmed(self) -> bool {
        matches!(self, Availability::PubmedOnly | Availability::Both)
    }
    pub fn in_s2(self) -> bool {
        matches!(self, Availability::S2Only | Availability::Both)
    }
}

/// One author as PubMed splits the name.
#[derive(Clone, Debug)]
pub struct Author {
    pub last_name: String,
    pub fore_name: String,
    pub initials: String,
    /// Semantic Scholar author id, stable for the same name across papers.
    pub s2_author_id: String,
}

impl Author {
    /// PubMed summary style: "Smith AM".
    pub fn short_name(&self) -> String {
        format!("{} {}", self.last_name, self.initials)
    }
    /// Semantic Scholar style: "Anna M. Smith".
    pub fn full_name(&self) -> String {
        let mut parts = self.fore_name.split(' ');
        let first = parts.next().unwrap_or_default();
        let middle: Vec<String> = parts.map(|m| format!("{m}.")).collect();
        if middle.is_empty() {
            format!("{first} {}", self.last_name)
        } else {
            format!("{first} {} {}", middle.join(" "), self.last_name)
        }
    }
}

/// One generated paper.
#[derive(Clone, Debug)]
pub struct Paper {
    /// Position in the corpus (stable for a given size and seed).
    pub index: usize,
    pub availability: Availability,
    /// PubMed id; `Some` for every paper PubMed indexes, also carried in S2's externalIds.
    pub pmid: Option<u64>,
    /// DOI; always present for shared papers, mostly present otherwise.
    pub doi: Option<String>,
    /// Semantic Scholar paperId (40 hex characters).
    pub s2_id: String,
    /// Semantic Scholar CorpusId.
    pub corpus_id: u64,
    pub title: String,
    /// Structured abstract: (label, text), e.g. ("BACKGROUND", "...").
    pub abstract_sections: Vec<(&'static str, String)>,
    /// Semantic Scholar returns `abstract: null` for this paper (as it does for some real ones).
    pub s2_abstract_missing: bool,
    pub authors: Vec<Author>,
    /// Index into `vocab::JOURNALS`.
    pub journal: usize,
    pub year: u16,
    /// 1..=12
    pub month: u8,
    pub day: u8,
    pub volume: u32,
    pub issue: u32,
    pub pages: String,
    /// PubMed publication type, e.g. "Randomized Controlled Trial".
    pub publication_type: &'static str,
    pub citation_count: u32,
}

impl Paper {
    /// The abstract as one paragraph, sections joined without labels (Semantic Scholar style).
    pub fn abstract_text(&self) -> String {
        let parts: Vec<&str> = self
            .abstract_sections
            .iter()
            .map(|(_, t)| t.as_str())
            .collect();
        parts.join(" ")
    }
    pub fn journal_name(&self) -> &'static str {
        vocab::JOURNALS[self.journal].0
    }
    pub fn journal_abbrev(&self) -> &'static str {
        vocab::JOURNALS[self.journal].1
    }
    pub fn journal_issn(&self) -> &'static str {
        vocab::JOURNALS[self.journal].2
    }
    pub fn month_name(&self) -> &'static str {
        vocab::MONTHS[usize::from(self.month.saturating_sub(1)) % 12]
    }
    /// PubMed summary date: "2019 Mar 12".
    pub fn pubdate(&self) -> String {
        format!("{} {} {}", self.year, self.month_name(), self.day)
    }
}
