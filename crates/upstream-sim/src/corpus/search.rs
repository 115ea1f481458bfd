//! Search: the inverted index over titles and abstracts, and term matching ranked by it
//! (title hits weigh more than abstract hits, rarer terms more than common ones).

use std::collections::HashMap;

use super::{Corpus, Paper};

/// Which service a search runs for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Pubmed,
    S2,
}

/// How query terms combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    /// Every term must occur (PubMed's implicit AND).
    All,
    /// Any term may occur; more matched terms rank higher (Semantic Scholar's relevance search).
    Any,
}

/// Term occurrences of one term in one paper.
#[derive(Clone, Copy, Debug)]
pub(super) struct Posting {
    doc: u32,
    title_tf: u16,
    abstract_tf: u16,
}

/// The postings of every term of `papers`; a posting's `doc` is the paper's position.
pub(super) fn index(papers: &[Paper]) -> HashMap<String, Vec<Posting>> {
    let mut index: HashMap<String, Vec<Posting>> = HashMap::new();
    for (doc, p) in papers.iter().enumerate() {
        let mut counts: HashMap<String, (u16, u16)> = HashMap::new();
        for t in tokenize(&p.title) {
            counts.entry(t).or_default().0 += 1;
        }
        for (_, section) in &p.abstract_sections {
            for t in tokenize(section) {
                let e = counts.entry(t).or_default();
                e.1 = e.1.saturating_add(1);
            }
        }
        for (term, (title_tf, abstract_tf)) in counts {
            index.entry(term).or_default().push(Posting {
                doc: u32::try_from(doc).unwrap_or(u32::MAX),
                title_tf,
                abstract_tf,
            });
        }
    }
    index
}

impl Corpus {
    /// Papers of `scope` matching `query`, best first, as (paper, score).
    ///
    /// PubMed syntax is tolerated: field tags like `[tiab]`, quotes and parentheses are ignored,
    /// `AND`/`NOT` are dropped, and an upper-case `OR` switches to any-term matching.
    pub fn search(&self, query: &str, scope: Scope, mode: Match) -> Vec<(&Paper, f64)> {
        let mut mode = mode;
        let mut cleaned = String::with_capacity(query.len());
        let mut depth = 0usize;
        for c in query.chars() {
            match c {
                '[' => depth += 1,
                ']' => depth = depth.saturating_sub(1),
                _ if depth == 0 => cleaned.push(c),
                _ => {}
            }
        }
        if cleaned.split_whitespace().any(|w| w == "OR") {
            mode = Match::Any;
        }
        let mut terms: Vec<String> = tokenize(&cleaned)
            .into_iter()
            .filter(|t| !matches!(t.as_str(), "and" | "or" | "not"))
            .collect();
        terms.sort();
        terms.dedup();
        // Bound the work a hostile query can cause.
        terms.truncate(32);
        if terms.is_empty() {
            return Vec::new();
        }
        let total = self.papers.len() as f64;
        // doc -> (matched terms, score)
        let mut acc: HashMap<u32, (usize, f64)> = HashMap::new();
        for term in &terms {
            let Some(postings) = self.index.get(term) else {
                continue;
            };
            let idf = (1.0 + total / postings.len() as f64).ln();
            for p in postings {
                let tf = 3.0 * f64::from(p.title_tf) + f64::from(p.abstract_tf);
                let e = acc.entry(p.doc).or_default();
                e.0 += 1;
                e.1 += idf * (1.0 + tf.ln());
            }
        }
        let mut hits: Vec<(usize, usize, f64)> = acc
            .into_iter()
            .filter(|(_, (m, _))| mode == Match::Any || *m == terms.len())
            .map(|(d, (m, s))| (d as usize, m, s))
            .filter(|(d, _, _)| {
                let a = self.papers[*d].availability;
                match scope {
                    Scope::Pubmed => a.in_pubmed(),
                    Scope::S2 => a.in_s2(),
                }
            })
            .collect();
        // Ties go to the newer paper, as PubMed's ranking favours recent work.
        hits.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.total_cmp(&a.2)).then(b.0.cmp(&a.0)));
        hits.into_iter()
            .map(|(d, _, s)| (&self.papers[d], s))
            .collect()
    }
}

const STOPWORDS: &[&str] = &[
    "a", "an", "the", "of", "in", "for", "with", "on", "to", "vs", "versus", "by", "at", "from",
    "is", "are", "was", "were", "among", "after", "between", "as", "be", "this", "that", "we",
    "what", "which", "how", "does", "do", "it", "its", "into", "than",
];

/// Lower-cased alphanumeric terms without stop words, plural 's' stripped, used for both
/// documents and queries so they normalise the same way.
pub fn tokenize(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut w = w.to_lowercase();
            if w.len() > 4
                && w.ends_with('s')
                && !w.ends_with("ss")
                && !w.ends_with("us")
                && !w.ends_with("is")
            {
                w.pop();
            }
            w
        })
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .collect()
}
