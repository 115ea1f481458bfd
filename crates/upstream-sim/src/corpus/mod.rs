//! The synthetic biomedical corpus both literature APIs serve.
//!
//! Papers are generated from the vocabulary in `vocab.rs` by a fixed-seed SplitMix64 generator
//! (not `rand`, whose streams may change between versions), so the same `(size, seed)` always
//! yields the same PMIDs, DOIs, titles and abstracts. Some papers are indexed by both PubMed and
//! Semantic Scholar (same DOI and PMID, so a client can de-duplicate), the rest by one only.
//!
//! Search is term matching over title and abstract through an inverted index: title hits weigh
//! more than abstract hits, rarer terms more than common ones.

//!
//! Layout: `paper.rs` (a paper and its authors), `generate.rs` (one paper from the vocabulary),
//! `rng.rs` (the fixed generator), `search.rs` (the index, tokens and ranked search).

mod generate;
mod paper;
mod rng;
mod search;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use generate::generate_paper;
use rng::SplitMix64;
use search::Posting;

pub use paper::{Author, Availability, Paper};
pub use search::{Match, Scope, tokenize};

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
        let index = search::index(&papers);
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
}

#[cfg(test)]
mod tests;
