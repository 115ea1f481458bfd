//! The synthetic biomedical corpus both literature APIs serve.
//!
//! Papers are generated from the vocabulary in `vocab.rs` by a fixed-seed SplitMix64 generator
//! (not `rand`, whose streams may change between versions), so the same `(size, seed)` always
//! yields the same PMIDs, DOIs, titles and abstracts. Some papers are indexed by both PubMed and
//! Semantic Scholar (same DOI and PMID, so a client can de-duplicate), the rest by one only.
//!
//! Search is term matching over title and abstract through an inverted index: title hits weigh
//! more than abstract hits, rarer terms more than common ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

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

/// Corpus shape.
#[derive(Clone, Debug, PartialEq)]
pub struct CorpusConfig {
    /// Number of papers in total (both services together).
    pub size: usize,
    /// Generator seed; the same seed gives the same corpus.
    pub seed: u64,
    /// Fraction of papers indexed by both services; the rest is split evenly between them.
    pub shared_fraction: f64,
}

impl Default for CorpusConfig {
    fn default() -> Self {
        CorpusConfig {
            size: 3000,
            seed: 0x5eed_f1ee_7a7e,
            shared_fraction: 0.6,
        }
    }
}

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
struct Posting {
    doc: u32,
    title_tf: u16,
    abstract_tf: u16,
}

/// The generated papers plus their search index and id lookups.
pub struct Corpus {
    papers: Vec<Paper>,
    index: HashMap<String, Vec<Posting>>,
    by_pmid: HashMap<u64, usize>,
    by_s2_id: HashMap<String, usize>,
}

impl std::fmt::Debug for Corpus {
    // Thousands of papers are no use in a debug print: show the sizes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Corpus")
            .field("papers", &self.papers.len())
            .field("terms", &self.index.len())
            .finish()
    }
}

impl Corpus {
    /// Generates the corpus for `cfg`; the same config always gives the same corpus.
    pub fn generate(cfg: &CorpusConfig) -> Corpus {
        let mut rng = SplitMix64(cfg.seed);
        let n = cfg.size.max(1);
        let mut papers = Vec::with_capacity(n);
        let mut next_pmid: u64 = 10_000_000 + rng.below(1_000_000);
        for i in 0..n {
            next_pmid += 1 + rng.below(40);
            papers.push(generate_paper(
                &mut rng,
                i,
                n,
                cfg.shared_fraction,
                next_pmid,
            ));
        }
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
        let by_pmid = papers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((p.pmid?, i)))
            .collect();
        let by_s2_id = papers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.availability.in_s2())
            .map(|(i, p)| (p.s2_id.clone(), i))
            .collect();
        Corpus {
            papers,
            index,
            by_pmid,
            by_s2_id,
        }
    }

    /// A shared, cached corpus for `cfg`: tests start many simulators and generation is not free.
    pub fn cached(cfg: &CorpusConfig) -> Arc<Corpus> {
        type Cache = Mutex<Vec<((usize, u64, u64), Arc<Corpus>)>>;
        static CACHE: OnceLock<Cache> = OnceLock::new();
        let key = (cfg.size, cfg.seed, cfg.shared_fraction.to_bits());
        let cache = CACHE.get_or_init(|| Mutex::new(Vec::new()));
        let mut guard = cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = guard.iter().find(|(k, _)| *k == key) {
            return c.clone();
        }
        let corpus = Arc::new(Corpus::generate(cfg));
        guard.push((key, corpus.clone()));
        corpus
    }

    pub fn papers(&self) -> &[Paper] {
        &self.papers
    }

    pub fn by_pmid(&self, pmid: u64) -> Option<&Paper> {
        self.by_pmid.get(&pmid).map(|&i| &self.papers[i])
    }

    pub fn by_s2_id(&self, id: &str) -> Option<&Paper> {
        self.by_s2_id.get(id).map(|&i| &self.papers[i])
    }

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

/// SplitMix64: tiny, fast and its output is fixed forever, unlike `rand`'s generators.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn generate_paper(rng: &mut SplitMix64, i: usize, n: usize, shared: f64, pmid: u64) -> Paper {
    let u = rng.unit();
    let availability = if u < shared {
        Availability::Both
    } else if u < shared + (1.0 - shared) / 2.0 {
        Availability::PubmedOnly
    } else {
        Availability::S2Only
    };
    let disease = &vocab::DISEASES[rng.below(vocab::DISEASES.len() as u64) as usize];
    let drug_paper = rng.chance(0.7);
    let subject: &str = if drug_paper {
        rng.pick(disease.drugs)
    } else {
        rng.pick(vocab::INTERVENTIONS)
    };
    let comparator: &str = if drug_paper && rng.chance(0.3) {
        let other = rng.pick(disease.drugs);
        if other == subject { "placebo" } else { other }
    } else {
        rng.pick(vocab::COMPARATORS)
    };
    let outcome = if rng.chance(0.8) {
        rng.pick(disease.outcomes)
    } else {
        rng.pick(vocab::GENERIC_OUTCOMES)
    };
    let outcome2 = rng.pick(vocab::GENERIC_OUTCOMES);
    let (design, publication_type) = rng.pick(vocab::DESIGNS);
    let population = rng.pick(vocab::POPULATIONS);
    let d = disease.name;

    let title = match rng.below(5) {
        0 => format!(
            "{} versus {comparator} in {population} with {d}: a {design}",
            capitalize(subject)
        ),
        1 => format!("Effect of {subject} on {outcome} in {d}: a {design}"),
        2 => format!(
            "{} and {outcome} among {population} with {d}",
            capitalize(subject)
        ),
        3 => format!("Association of {subject} use with {outcome} in {d}: a {design}"),
        _ => format!("Long-term {outcome} after {subject} therapy for {d}"),
    };

    let enrolled = 40 + rng.below(9000);
    let centres = 1 + rng.below(120);
    let months = 3 + rng.below(60);
    let hr = 0.45 + rng.unit() * 0.9;
    let (lo, hi) = (hr * 0.8, hr * 1.2);
    let (effect, conclusion, p) = if hi < 1.0 {
        (
            "reduced",
            "improved",
            if rng.chance(0.5) {
                "p < 0.001".to_string()
            } else {
                format!("p = 0.0{}", 1 + rng.below(4))
            },
        )
    } else if lo > 1.0 {
        ("increased", "worsened", "p < 0.01".to_string())
    } else {
        (
            "did not significantly change",
            "did not improve",
            format!("p = 0.{}", 10 + rng.below(80)),
        )
    };
    let a = 5 + rng.below(40);
    let b = 5 + rng.below(40);
    let abstract_sections = vec![
        (
            "BACKGROUND",
            format!(
                "{} remains a major cause of morbidity. Whether {subject} improves {outcome} in {population} with {d} is uncertain.",
                capitalize(d)
            ),
        ),
        (
            "METHODS",
            format!(
                "In this {design}, we enrolled {enrolled} {population} with {d} at {centres} centres and compared {subject} with {comparator}. The primary outcome was {outcome}; secondary outcomes included {outcome2}. Median follow-up was {months} months."
            ),
        ),
        (
            "RESULTS",
            format!(
                "{} {effect} {outcome} compared with {comparator} (hazard ratio {hr:.2}; 95% CI {lo:.2} to {hi:.2}; {p}). {} occurred in {a}% versus {b}% of participants.",
                capitalize(subject),
                capitalize(outcome2)
            ),
        ),
        (
            "CONCLUSIONS",
            format!("Among {population} with {d}, {subject} {conclusion} {outcome}."),
        ),
    ];

    let n_authors = 1 + rng.below(8) as usize;
    let authors = (0..n_authors)
        .map(|_| {
            let si = rng.below(vocab::SURNAMES.len() as u64);
            let gi = rng.below(vocab::GIVEN_NAMES.len() as u64);
            let middle = rng.below(6);
            let last = vocab::SURNAMES[si as usize];
            let given = vocab::GIVEN_NAMES[gi as usize];
            let first_initial: String = given.chars().take(1).collect();
            let (fore, initials) = if middle < 4 {
                let m = char::from(b'A' + (middle as u8) * 3);
                (format!("{given} {m}"), format!("{first_initial}{m}"))
            } else {
                (given.to_string(), first_initial)
            };
            Author {
                last_name: last.to_string(),
                fore_name: fore,
                initials,
                s2_author_id: (1_000_000 + si * 1000 + gi * 10 + middle).to_string(),
            }
        })
        .collect();

    let journal = rng.below(vocab::JOURNALS.len() as u64) as usize;
    // PMIDs grow over time, so years grow with the index.
    let year = 1995 + u16::try_from(i * 31 / n.max(1)).unwrap_or(0);
    let month = 1 + rng.below(12) as u8;
    let day = 1 + rng.below(28) as u8;
    let volume = 1 + rng.below(400) as u32;
    let issue = 1 + rng.below(24) as u32;
    let first_page = 1 + rng.below(2000);
    let pages = format!("{first_page}-{}", first_page + 3 + rng.below(12));
    let has_doi = availability == Availability::Both || rng.chance(0.9);
    let doi = has_doi.then(|| {
        let slug: String = vocab::JOURNALS[journal]
            .1
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_lowercase();
        format!("10.{}/{slug}.{year}.{i:05}", 1000 + journal * 17)
    });
    let s2_id = format!(
        "{:016x}{:016x}{:08x}",
        rng.next_u64(),
        rng.next_u64(),
        rng.next_u64() as u32
    );
    let corpus_id = 100_000_000 + i as u64 * 3 + rng.below(3);
    Paper {
        index: i,
        availability,
        pmid: availability.in_pubmed().then_some(pmid),
        doi,
        s2_id,
        corpus_id,
        title,
        abstract_sections,
        s2_abstract_missing: availability == Availability::S2Only && rng.chance(0.05),
        authors,
        journal,
        year,
        month,
        day,
        volume,
        issue,
        pages,
        publication_type,
        citation_count: rng.below(800) as u32,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn generation_is_deterministic() {
        let cfg = CorpusConfig {
            size: 200,
            ..Default::default()
        };
        let a = Corpus::generate(&cfg);
        let b = Corpus::generate(&cfg);
        for (x, y) in a.papers().iter().zip(b.papers()) {
            assert_eq!(x.title, y.title);
            assert_eq!(x.doi, y.doi);
            assert_eq!(x.pmid, y.pmid);
            assert_eq!(x.s2_id, y.s2_id);
        }
    }

    #[test]
    fn tokenize_normalises() {
        assert_eq!(
            tokenize("Metformin, Diabetes & trials"),
            vec!["metformin", "diabete", "trial"]
        );
        assert_eq!(tokenize("glass [tiab]"), vec!["glass", "tiab"]);
    }

    #[test]
    fn pubmed_search_requires_all_terms() {
        let c = Corpus::generate(&CorpusConfig::default());
        let hits = c.search("metformin diabetes", Scope::Pubmed, Match::All);
        assert!(hits.len() > 10, "{}", hits.len());
        for (p, _) in &hits {
            let text = format!("{} {}", p.title, p.abstract_text()).to_lowercase();
            assert!(text.contains("metformin") && text.contains("diabetes"));
            assert!(p.pmid.is_some());
        }
        assert!(c.search("zzzz", Scope::Pubmed, Match::All).is_empty());
        assert!(c.search("", Scope::S2, Match::Any).is_empty());
        assert!(c.search("[[[]]]", Scope::S2, Match::Any).is_empty());
    }
}
