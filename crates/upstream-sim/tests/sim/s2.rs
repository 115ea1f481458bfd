//! Semantic Scholar shapes, `fields` handling, relevance, and overlap with PubMed.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;
use upstream_sim::SimConfig;

use crate::common::{client, get, sim};

const FIELDS: &str = "title,abstract,year,authors,url,externalIds";

#[tokio::test]
async fn search_has_real_fields_and_relevant_hits() {
    let sim = sim(SimConfig::default()).await;
    let c = client();
    let url = format!(
        "{}/paper/search?query=metformin%20diabetes&limit=5&fields={FIELDS}",
        sim.s2_url()
    );
    let (status, v) = get(&c, &url).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["total"].as_u64().unwrap() >= 5);
    assert_eq!(v["offset"], 0);
    assert_eq!(v["next"], 5);
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 5);
    for p in data {
        assert_eq!(p["paperId"].as_str().unwrap().len(), 40);
        let text = format!(
            "{} {}",
            p["title"].as_str().unwrap(),
            p["abstract"].as_str().unwrap_or("")
        )
        .to_lowercase();
        assert!(
            text.contains("metformin") && text.contains("diabetes"),
            "{text}"
        );
        assert!(p["year"].as_u64().unwrap() >= 1995);
        let authors = p["authors"].as_array().unwrap();
        assert!(!authors.is_empty());
        assert!(
            authors
                .iter()
                .all(|a| a["authorId"].is_string() && a["name"].is_string())
        );
        assert!(
            p["url"]
                .as_str()
                .unwrap()
                .starts_with("https://www.semanticscholar.org/paper/")
        );
        assert!(p["externalIds"].is_object());
    }
    // The real path prefix serves the same.
    let (_, again) = get(&c, &url.replace("/s2/graph/v1/", "/graph/v1/")).await;
    assert_eq!(again["data"], v["data"]);
}

#[tokio::test]
async fn only_requested_fields_come_back() {
    let sim = sim(SimConfig::default()).await;
    let c = client();
    let keys = |v: &Value| -> BTreeSet<String> {
        v["data"][0].as_object().unwrap().keys().cloned().collect()
    };
    let base = format!("{}/paper/search?query=asthma&limit=1", sim.s2_url());
    assert_eq!(
        keys(&get(&c, &base).await.1),
        BTreeSet::from(["paperId".into(), "title".into()])
    );
    assert_eq!(
        keys(&get(&c, &format!("{base}&fields=year")).await.1),
        BTreeSet::from(["paperId".into(), "year".into()])
    );
    assert_eq!(
        keys(
            &get(&c, &format!("{base}&fields=title,authors.name,externalIds"))
                .await
                .1
        ),
        BTreeSet::from([
            "paperId".into(),
            "title".into(),
            "authors".into(),
            "externalIds".into()
        ])
    );
}

#[tokio::test]
async fn bad_parameters_get_s2_errors() {
    let sim = sim(SimConfig::default()).await;
    let c = client();
    let base = sim.s2_url();
    for q in [
        "paper/search",
        "paper/search?query=",
        "paper/search?query=x&fields=title,bogus",
        "paper/search?query=x&limit=0",
        "paper/search?query=x&limit=101",
        "paper/search?query=x&limit=many",
        "paper/search?query=x&offset=990&limit=20",
        "paper/search?query=x&year=19x5",
    ] {
        let (status, v) = get(&c, &format!("{base}/{q}")).await;
        assert_eq!(status, 400, "{q}: {v}");
        assert!(v["error"].is_string(), "{q}: {v}");
    }
    let (status, v) = get(&c, &format!("{base}/paper/PMID:1")).await;
    assert_eq!(status, 404);
    assert!(v["error"].as_str().unwrap().contains("not found"));
}

/// PubMed and Semantic Scholar share papers (same DOI and PMID) and each has its own.
#[tokio::test]
async fn overlaps_with_pubmed_by_doi_and_pmid() {
    let sim = sim(SimConfig::default()).await;
    let c = client();
    let (_, es) = get(
        &c,
        &format!(
            "{}/esearch.fcgi?db=pubmed&term=heart+failure&retmode=json&retmax=100",
            sim.pubmed_url()
        ),
    )
    .await;
    let ids: Vec<&str> = es["esearchresult"]["idlist"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    let (_, sum) = get(
        &c,
        &format!(
            "{}/esummary.fcgi?db=pubmed&id={}&retmode=json",
            sim.pubmed_url(),
            ids.join(",")
        ),
    )
    .await;
    let mut pubmed_doi: HashMap<String, String> = HashMap::new();
    for id in &ids {
        for a in sum["result"][*id]["articleids"].as_array().unwrap() {
            if a["idtype"] == "doi" {
                pubmed_doi.insert(a["value"].as_str().unwrap().to_string(), id.to_string());
            }
        }
    }
    let (_, s2) = get(
        &c,
        &format!(
            "{}/paper/search?query=heart%20failure&limit=100&fields=externalIds",
            sim.s2_url()
        ),
    )
    .await;
    let mut shared = 0;
    let mut s2_only = 0;
    for p in s2["data"].as_array().unwrap() {
        let ext = &p["externalIds"];
        match (ext["DOI"].as_str(), ext["PubMed"].as_str()) {
            (Some(doi), Some(pmid)) if pubmed_doi.contains_key(doi) => {
                assert_eq!(pubmed_doi[doi], pmid, "same paper, same PMID");
                shared += 1;
            }
            (_, None) => s2_only += 1,
            _ => {}
        }
    }
    assert!(shared >= 10, "shared {shared}");
    assert!(s2_only >= 5, "S2-only {s2_only}");
    // Some PubMed hits are unknown to Semantic Scholar.
    let mut pubmed_only = 0;
    for id in ids.iter().take(40) {
        let (status, _) = get(&c, &format!("{}/paper/PMID:{id}", sim.s2_url())).await;
        if status == 404 {
            pubmed_only += 1;
        }
    }
    assert!(pubmed_only >= 3, "PubMed-only {pubmed_only}");
}

#[tokio::test]
async fn paper_lookup_by_doi_pmid_and_id() {
    let sim = sim(SimConfig::default()).await;
    let c = client();
    let paper = sim
        .state()
        .corpus()
        .papers()
        .iter()
        .find(|p| p.availability == upstream_sim::corpus::Availability::Both)
        .unwrap()
        .clone();
    for id in [
        format!("DOI:{}", paper.doi.as_deref().unwrap()),
        format!("PMID:{}", paper.pmid.unwrap()),
        paper.s2_id.clone(),
    ] {
        let (status, v) = get(
            &c,
            &format!("{}/paper/{id}?fields=title,externalIds", sim.s2_url()),
        )
        .await;
        assert_eq!(status, 200, "{id}");
        assert_eq!(v["paperId"], paper.s2_id.as_str());
        assert_eq!(v["title"], paper.title.as_str());
    }
}
