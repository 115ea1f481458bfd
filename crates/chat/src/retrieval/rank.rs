//! BM25 ranking of papers against a question, over title and abstract (the title counted twice:
//! it is the densest statement of what a paper is about).

use std::collections::HashMap;

use crate::upstream::SourcePaper;

const K1: f64 = 1.2;
const B: f64 = 0.75;

const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "how",
    "in", "is", "it", "of", "on", "or", "should", "that", "the", "this", "to", "was", "what",
    "when", "which", "who", "why", "will", "with",
];

/// Lower-cased alphanumeric terms, without stopwords and one-letter tokens.
pub fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| t.chars().count() > 1)
        .map(str::to_lowercase)
        .filter(|t| !STOPWORDS.contains(&t.as_str()))
        .collect()
}

/// Scores every paper for `query`; returns indices, best first (ties keep the original order).
pub fn rank(query: &str, papers: &[SourcePaper]) -> Vec<(usize, f64)> {
    let q = terms(query);
    let docs: Vec<Vec<String>> = papers
        .iter()
        .map(|p| {
            let mut t = terms(&p.title);
            t.extend(terms(&p.title));
            t.extend(terms(&p.abstract_text));
            t
        })
        .collect();
    let n = docs.len() as f64;
    let avg = docs.iter().map(Vec::len).sum::<usize>() as f64 / n.max(1.0);
    let mut df: HashMap<&str, f64> = HashMap::new();
    for d in &docs {
        let mut seen: Vec<&str> = d.iter().map(String::as_str).collect();
        seen.sort_unstable();
        seen.dedup();
        for t in seen {
            *df.entry(t).or_default() += 1.0;
        }
    }
    let mut scored: Vec<(usize, f64)> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let len = d.len() as f64;
            let score = q
                .iter()
                .map(|term| {
                    let tf = d.iter().filter(|t| *t == term).count() as f64;
                    if tf == 0.0 {
                        return 0.0;
                    }
                    let dfi = df.get(term.as_str()).copied().unwrap_or(0.0);
                    let idf = ((n - dfi + 0.5) / (dfi + 0.5) + 1.0).ln();
                    idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * len / avg.max(1.0)))
                })
                .sum();
            (i, score)
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::upstream::Source;

    fn p(title: &str, abs: &str) -> SourcePaper {
        SourcePaper {
            source: Source::Pubmed,
            id: title.into(),
            pmid: None,
            doi: None,
            title: title.into(),
            abstract_text: abs.into(),
            year: None,
            authors: vec![],
            url: String::new(),
            venue: None,
        }
    }

    #[test]
    fn relevant_papers_rank_first() {
        let papers = vec![
            p(
                "Statins and cardiovascular outcomes",
                "A cohort of statin users.",
            ),
            p(
                "Metformin in type 2 diabetes",
                "Metformin lowered HbA1c in diabetes.",
            ),
            p("Exercise and sleep", "Sleep quality improved."),
        ];
        let r = rank("Does metformin help diabetes?", &papers);
        assert_eq!(r[0].0, 1);
        assert!(r[0].1 > r[1].1);
        assert_eq!(r[2].1, 0.0);
    }

    #[test]
    fn empty_inputs_do_not_panic() {
        assert!(rank("", &[]).is_empty());
        assert_eq!(rank("x", &[p("", "")]).len(), 1);
        assert_eq!(terms("the a of"), Vec::<String>::new());
    }
}
