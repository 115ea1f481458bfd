//! One paper generated from the vocabulary: a trial-style title and structured abstract, its
//! authors, journal, date and ids.

use super::rng::SplitMix64;
use super::{Author, Availability, Paper};
use crate::vocab;

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Paper `i` of `n`, indexed by both services with probability `shared`; `pmid` is used when
/// PubMed indexes it.
pub(super) fn generate_paper(
    rng: &mut SplitMix64,
    i: usize,
    n: usize,
    shared: f64,
    pmid: u64,
) -> Paper {
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
