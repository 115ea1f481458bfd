//! Generation is deterministic; tokens normalise; search matches.

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
