//! E-utilities shapes, relevance, paging and parameter errors.

use serde_json::Value;
use upstream_sim::SimConfig;

use crate::common::{client, efetch_text, get, get_text, sim};

#[tokio::test]
async fn esearch_json_has_real_fields_and_relevant_hits() {
    let sim = sim(SimConfig::default()).await;
    let c = client();
    let url = format!(
        "{}/esearch.fcgi?db=pubmed&term=metformin+diabetes&retmode=json&retmax=5",
        sim.pubmed_url()
    );
    let (status, v) = get(&c, &url).await;
    assert_eq!(status, 200);
    assert_eq!(v["header"]["type"], "esearch");
    let r = &v["esearchresult"];
    let count: usize = r["count"].as_str().unwrap().parse().unwrap();
    let ids = r["idlist"].as_array().unwrap();
    assert!(count >= 5, "count {count}");
    assert_eq!(ids.len(), 5);
    assert_eq!(r["retmax"], "5");
    assert_eq!(r["retstart"], "0");
    for id in ids {
        let id = id.as_str().unwrap();
        assert!(id.parse::<u64>().is_ok());
        let text = efetch_text(&c, &sim, id).await;
        assert!(
            text.contains("metformin") && text.contains("diabetes"),
            "{id}: {text}"
        );
    }

    // Paging: retstart=2 continues the same ranking.
    let url2 = format!(
        "{}/esearch.fcgi?db=pubmed&term=metformin+diabetes&retmode=json&retmax=3&retstart=2",
        sim.pubmed_url()
    );
    let (_, v2) = get(&c, &url2).await;
    assert_eq!(
        v2["esearchresult"]["idlist"].as_array().unwrap()[..],
        ids[2..5]
    );

    // The real path prefix serves the same.
    let real = url.replace("/pubmed/", "/entrez/eutils/");
    assert_eq!(
        get(&c, &real).await.1["esearchresult"]["idlist"],
        r["idlist"]
    );

    // No hits: count 0 and the real warning.
    let none = format!(
        "{}/esearch.fcgi?db=pubmed&term=xyzzyplugh&retmode=json",
        sim.pubmed_url()
    );
    let (status, v) = get(&c, &none).await;
    assert_eq!(status, 200);
    assert_eq!(v["esearchresult"]["count"], "0");
    assert_eq!(v["esearchresult"]["idlist"], Value::Array(vec![]));
    assert_eq!(
        v["esearchresult"]["warninglist"]["outputmessages"][0],
        "No items found."
    );
}

#[tokio::test]
async fn esearch_xml_by_default() {
    let sim = sim(SimConfig::default()).await;
    let (status, body) = get_text(
        &client(),
        &format!(
            "{}/esearch.fcgi?db=pubmed&term=asthma&retmax=2",
            sim.pubmed_url()
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("<eSearchResult><Count>"), "{body}");
    assert_eq!(body.matches("<Id>").count(), 2);
}

#[tokio::test]
async fn esummary_json_has_real_fields() {
    let sim = sim(SimConfig::default()).await;
    let c = client();
    let (_, v) = get(
        &c,
        &format!(
            "{}/esearch.fcgi?db=pubmed&term=hypertension&retmode=json&retmax=3",
            sim.pubmed_url()
        ),
    )
    .await;
    let ids: Vec<String> = v["esearchresult"]["idlist"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    let url = format!(
        "{}/esummary.fcgi?db=pubmed&id={},1&retmode=json",
        sim.pubmed_url(),
        ids.join(",")
    );
    let (status, v) = get(&c, &url).await;
    assert_eq!(status, 200);
    assert_eq!(v["header"]["type"], "esummary");
    let result = &v["result"];
    let uids: Vec<&str> = result["uids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert_eq!(
        uids[..3],
        ids.iter().map(String::as_str).collect::<Vec<_>>()[..]
    );
    for id in &ids {
        let doc = &result[id.as_str()];
        assert_eq!(doc["uid"], id.as_str());
        assert!(
            doc["title"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains("hypertension")
                || doc["title"].is_string()
        );
        assert!(doc["pubdate"].as_str().unwrap().len() >= 4);
        assert!(doc["source"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(
            doc["authors"]
                .as_array()
                .unwrap()
                .iter()
                .all(|a| a["name"].is_string())
        );
        let doi = doc["articleids"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["idtype"] == "doi");
        if let Some(doi) = doi {
            assert!(doi["value"].as_str().unwrap().starts_with("10."));
        }
    }
    // Unknown PMIDs come back with the real error entry.
    assert_eq!(result["1"]["error"], "cannot get document summary");
}

#[tokio::test]
async fn efetch_xml_has_real_elements() {
    let sim = sim(SimConfig::default()).await;
    let c = client();
    let paper = sim
        .state()
        .corpus()
        .papers()
        .iter()
        .find(|p| p.pmid.is_some() && p.doi.is_some())
        .unwrap();
    let pmid = paper.pmid.unwrap();
    let url = format!(
        "{}/efetch.fcgi?db=pubmed&id={pmid},999&rettype=abstract&retmode=xml",
        sim.pubmed_url()
    );
    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/xml")
    );
    let body = resp.text().await.unwrap();
    for needle in [
        "<PubmedArticleSet>",
        "<MedlineCitation",
        &format!("<PMID Version=\"1\">{pmid}</PMID>"),
        "<ArticleTitle>",
        "<AbstractText Label=\"BACKGROUND\"",
        "<AuthorList",
        "<LastName>",
        "<JournalIssue",
        &format!("<Year>{}</Year>", paper.year),
        &format!(
            "<ArticleId IdType=\"doi\">{}</ArticleId>",
            paper.doi.as_deref().unwrap()
        ),
        "</PubmedArticleSet>",
    ] {
        assert!(body.contains(needle), "missing {needle} in {body}");
    }
    assert_eq!(
        body.matches("<PubmedArticle>").count(),
        1,
        "unknown id 999 is left out"
    );
    assert!(!body.contains("p < 0"), "'<' in text must be escaped");

    let text = get_text(&c, &url.replace("retmode=xml", "retmode=text"))
        .await
        .1;
    assert!(text.contains(&format!("PMID: {pmid}")));
}

#[tokio::test]
async fn bad_parameters_get_eutils_errors() {
    let sim = sim(SimConfig::default()).await;
    let c = client();
    let base = sim.pubmed_url();
    for (path, msg) in [
        ("esearch.fcgi?db=pubmed&retmode=json", "Empty term"),
        ("esearch.fcgi?db=pubmed&term=&retmode=json", "Empty term"),
        ("esearch.fcgi?db=nope&term=x", "Invalid db name"),
        ("esearch.fcgi?term=x&retmax=lots", "retmax"),
        (
            "esummary.fcgi?db=pubmed&id=abc&retmode=json",
            "Invalid uid abc",
        ),
        ("esummary.fcgi?db=pubmed&retmode=json", "Empty id list"),
        ("efetch.fcgi?db=pubmed&id=,,,", "Empty id list"),
    ] {
        let (status, v) = get(&c, &format!("{base}/{path}")).await;
        assert_eq!(status, 400, "{path}");
        assert!(v["error"].as_str().unwrap().contains(msg), "{path}: {v}");
    }
}

#[tokio::test]
async fn post_form_works_like_get() {
    let sim = sim(SimConfig::default()).await;
    let c = client();
    let resp = c
        .post(format!("{}/esearch.fcgi", sim.pubmed_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("db=pubmed&term=sepsis&retmode=json&retmax=2")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["esearchresult"]["idlist"].as_array().unwrap().len(), 2);
}
