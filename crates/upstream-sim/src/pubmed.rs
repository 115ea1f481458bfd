//! PubMed E-utilities: `esearch.fcgi`, `esummary.fcgi`, `efetch.fcgi`, as served under
//! `https://eutils.ncbi.nlm.nih.gov/entrez/eutils/`. GET with a query string or POST with a form
//! body, like the real service. JSON and XML follow the real field names; parameters this
//! simulator ignores (`api_key`, `tool`, `email`, `usehistory`, ...) are accepted silently.

// Error paths return ready-made responses in the API's style; their size is irrelevant here.
#![allow(clippy::result_large_err)]

use std::fmt::Write as _;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::corpus::{Match, Paper, Scope};
use crate::errors;
use crate::hostile;
use crate::params::Params;
use crate::state::SimState;

/// Largest `retmax` the real esearch honours.
const MAX_RETMAX: u64 = 10_000;
/// Most ids one esummary/efetch call accepts here (the real limit for GET is in this range).
const MAX_IDS: usize = 500;

fn xml(body: String) -> Response {
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=UTF-8"),
    );
    resp
}

/// XML text/attribute escaping.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

/// Reads parameters and checks `db` (absent means pubmed, as for the real service).
async fn params(req: Request) -> Result<Params, Response> {
    let p = Params::from_request(req)
        .await
        .map_err(|(code, msg)| errors::pubmed(code, &msg))?;
    match p.get("db") {
        None | Some("pubmed") | Some("") => Ok(p),
        Some(other) => Err(errors::pubmed(
            400,
            &format!(
                "Invalid db name specified: {}",
                other.chars().take(64).collect::<String>()
            ),
        )),
    }
}

/// Parses `id=1,2,3` (commas or whitespace), as the real service does.
fn ids(p: &Params) -> Result<Vec<u64>, Response> {
    let raw = p.get("id").unwrap_or("");
    let mut out = Vec::new();
    for (pos, tok) in raw
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .enumerate()
    {
        match tok.parse::<u64>() {
            Ok(id) => out.push(id),
            Err(_) => {
                let shown: String = tok.chars().take(64).collect();
                return Err(errors::pubmed(
                    400,
                    &format!("Invalid uid {shown} at position={pos}"),
                ));
            }
        }
    }
    if out.is_empty() {
        return Err(errors::pubmed(400, "Empty id list - nothing todo"));
    }
    if out.len() > MAX_IDS {
        return Err(errors::pubmed(
            400,
            &format!("Too many UIDs: at most {MAX_IDS} per request"),
        ));
    }
    Ok(out)
}

pub(crate) async fn esearch(State(state): State<SimState>, req: Request) -> Response {
    let p = match params(req).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let term = p.get("term").unwrap_or("").trim().to_string();
    if term.is_empty() {
        return errors::pubmed(400, "Empty term and query_key - nothing todo");
    }
    let (retmax, retstart) = match (p.number("retmax"), p.number("retstart")) {
        (Ok(m), Ok(s)) => (m.unwrap_or(20).min(MAX_RETMAX), s.unwrap_or(0)),
        (Err(e), _) | (_, Err(e)) => return errors::pubmed(400, &e),
    };
    let mut hits: Vec<&Paper> = state
        .corpus()
        .search(&term, Scope::Pubmed, Match::All)
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    if matches!(
        p.get("sort"),
        Some("pub_date" | "pub+date" | "pub date" | "date" | "most+recent" | "most recent")
    ) {
        hits.sort_by_key(|p| std::cmp::Reverse((p.year, p.pmid)));
    }
    let count = hits.len();
    let idlist: Vec<String> = hits
        .iter()
        .skip(usize::try_from(retstart).unwrap_or(usize::MAX))
        .take(usize::try_from(retmax).unwrap_or(usize::MAX))
        .filter_map(|p| p.pmid.map(|id| id.to_string()))
        .collect();
    let translation = term
        .split_whitespace()
        .filter(|w| !matches!(*w, "AND" | "OR" | "NOT"))
        .map(|w| format!("\"{}\"[All Fields]", w.trim_matches('"').to_lowercase()))
        .collect::<Vec<_>>()
        .join(" AND ");

    if p.get("retmode") == Some("json") {
        let mut result = json!({
            "count": count.to_string(),
            "retmax": idlist.len().to_string(),
            "retstart": retstart.to_string(),
            "idlist": idlist,
            "translationset": [],
            "querytranslation": translation,
        });
        if count == 0 {
            result["warninglist"] = json!({
                "phrasesignored": [],
                "quotedphrasesnotfound": [],
                "outputmessages": ["No items found."],
            });
        }
        return Json(
            json!({ "header": { "type": "esearch", "version": "0.3" }, "esearchresult": result }),
        )
        .into_response();
    }
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<!DOCTYPE eSearchResult PUBLIC \"-//NLM//DTD esearch 20060628//EN\" \"https://eutils.ncbi.nlm.nih.gov/eutils/dtd/20060628/esearch.dtd\">\n<eSearchResult>",
    );
    let _ = write!(
        out,
        "<Count>{count}</Count><RetMax>{}</RetMax><RetStart>{retstart}</RetStart><IdList>",
        idlist.len()
    );
    for id in &idlist {
        let _ = write!(out, "<Id>{id}</Id>");
    }
    let _ = writeln!(
        out,
        "</IdList><TranslationSet/><QueryTranslation>{}</QueryTranslation></eSearchResult>",
        esc(&translation)
    );
    xml(out)
}

fn summary_json(p: &Paper) -> Value {
    let pmid = p.pmid.unwrap_or_default().to_string();
    let mut articleids = vec![json!({ "idtype": "pubmed", "idtypen": 1, "value": pmid })];
    if let Some(doi) = &p.doi {
        articleids.push(json!({ "idtype": "doi", "idtypen": 3, "value": doi }));
    }
    let authors: Vec<Value> = p
        .authors
        .iter()
        .map(|a| json!({ "name": a.short_name(), "authtype": "Author", "clusterid": "" }))
        .collect();
    json!({
        "uid": pmid,
        "pubdate": p.pubdate(),
        "epubdate": "",
        "source": p.journal_abbrev(),
        "authors": authors,
        "lastauthor": p.authors.last().map(|a| a.short_name()).unwrap_or_default(),
        "title": p.title,
        "sorttitle": p.title.to_lowercase(),
        "volume": p.volume.to_string(),
        "issue": p.issue.to_string(),
        "pages": p.pages,
        "lang": ["eng"],
        "issn": "",
        "essn": p.journal_issn(),
        "pubtype": ["Journal Article", p.publication_type],
        "articleids": articleids,
        "fulljournalname": p.journal_name(),
        "elocationid": p.doi.as_ref().map(|d| format!("doi: {d}")).unwrap_or_default(),
        "doctype": "citation",
        "sortpubdate": format!("{}/{:02}/{:02} 00:00", p.year, p.month, p.day),
        "sortfirstauthor": p.authors.first().map(|a| a.short_name()).unwrap_or_default(),
    })
}

pub(crate) async fn esummary(State(state): State<SimState>, req: Request) -> Response {
    let p = match params(req).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let ids = match ids(&p) {
        Ok(ids) => ids,
        Err(r) => return r,
    };
    let corpus = state.corpus();
    let hostile = state.settings().hostile;
    if p.get("retmode") == Some("json") {
        let mut result = serde_json::Map::new();
        let mut uids = Vec::new();
        for id in ids {
            let key = id.to_string();
            if result.contains_key(&key) {
                continue;
            }
            uids.push(Value::String(key.clone()));
            let entry = match corpus.by_pmid(id) {
                Some(paper) => summary_json(&hostile::view(hostile, paper)),
                None => json!({ "uid": key, "error": "cannot get document summary" }),
            };
            result.insert(key, entry);
        }
        result.insert("uids".to_string(), Value::Array(uids));
        return Json(
            json!({ "header": { "type": "esummary", "version": "0.3" }, "result": result }),
        )
        .into_response();
    }
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<!DOCTYPE eSummaryResult PUBLIC \"-//NLM//DTD esummary v1 20041029//EN\" \"https://eutils.ncbi.nlm.nih.gov/eutils/dtd/20041029/esummary-v1.dtd\">\n<eSummaryResult>\n",
    );
    for id in ids {
        match corpus.by_pmid(id).map(|p| hostile::view(hostile, p)) {
            Some(paper) => {
                let _ = write!(out, "<DocSum>\n\t<Id>{id}</Id>\n");
                let item = |out: &mut String, name: &str, ty: &str, v: &str| {
                    let _ = writeln!(
                        out,
                        "\t<Item Name=\"{name}\" Type=\"{ty}\">{}</Item>",
                        esc(v)
                    );
                };
                item(&mut out, "PubDate", "Date", &paper.pubdate());
                item(&mut out, "Source", "String", paper.journal_abbrev());
                out.push_str("\t<Item Name=\"AuthorList\" Type=\"List\">\n");
                for a in &paper.authors {
                    let _ = writeln!(
                        out,
                        "\t\t<Item Name=\"Author\" Type=\"String\">{}</Item>",
                        esc(&a.short_name())
                    );
                }
                out.push_str("\t</Item>\n");
                item(&mut out, "Title", "String", &paper.title);
                item(&mut out, "Volume", "String", &paper.volume.to_string());
                item(&mut out, "Pages", "String", &paper.pages);
                item(&mut out, "FullJournalName", "String", paper.journal_name());
                if let Some(doi) = &paper.doi {
                    item(&mut out, "DOI", "String", doi);
                }
                out.push_str("</DocSum>\n");
            }
            None => {
                let _ = writeln!(out, "<ERROR>UID={id}: cannot get document summary</ERROR>");
            }
        }
    }
    out.push_str("</eSummaryResult>\n");
    xml(out)
}

fn article_xml(out: &mut String, p: &Paper) {
    let pmid = p.pmid.unwrap_or_default();
    let _ = write!(
        out,
        "<PubmedArticle>\n<MedlineCitation Status=\"MEDLINE\" Owner=\"NLM\">\n<PMID Version=\"1\">{pmid}</PMID>\n<Article PubModel=\"Print\">\n<Journal>\n<ISSN IssnType=\"Electronic\">{}</ISSN>\n<JournalIssue CitedMedium=\"Internet\">\n<Volume>{}</Volume>\n<Issue>{}</Issue>\n<PubDate>\n<Year>{}</Year>\n<Month>{}</Month>\n<Day>{}</Day>\n</PubDate>\n</JournalIssue>\n<Title>{}</Title>\n<ISOAbbreviation>{}</ISOAbbreviation>\n</Journal>\n<ArticleTitle>{}</ArticleTitle>\n<Pagination>\n<MedlinePgn>{}</MedlinePgn>\n</Pagination>\n",
        esc(p.journal_issn()),
        p.volume,
        p.issue,
        p.year,
        p.month_name(),
        p.day,
        esc(p.journal_name()),
        esc(p.journal_abbrev()),
        esc(&p.title),
        esc(&p.pages),
    );
    if let Some(doi) = &p.doi {
        let _ = writeln!(
            out,
            "<ELocationID EIdType=\"doi\" ValidYN=\"Y\">{}</ELocationID>",
            esc(doi)
        );
    }
    out.push_str("<Abstract>\n");
    for (label, text) in &p.abstract_sections {
        let _ = writeln!(
            out,
            "<AbstractText Label=\"{label}\" NlmCategory=\"{label}\">{}</AbstractText>",
            esc(text)
        );
    }
    out.push_str("</Abstract>\n<AuthorList CompleteYN=\"Y\">\n");
    for a in &p.authors {
        let _ = writeln!(
            out,
            "<Author ValidYN=\"Y\">\n<LastName>{}</LastName>\n<ForeName>{}</ForeName>\n<Initials>{}</Initials>\n</Author>",
            esc(&a.last_name),
            esc(&a.fore_name),
            esc(&a.initials)
        );
    }
    let _ = write!(
        out,
        "</AuthorList>\n<Language>eng</Language>\n<PublicationTypeList>\n<PublicationType UI=\"D016428\">Journal Article</PublicationType>\n<PublicationType>{}</PublicationType>\n</PublicationTypeList>\n</Article>\n<MedlineJournalInfo>\n<MedlineTA>{}</MedlineTA>\n</MedlineJournalInfo>\n</MedlineCitation>\n<PubmedData>\n<PublicationStatus>ppublish</PublicationStatus>\n<ArticleIdList>\n<ArticleId IdType=\"pubmed\">{pmid}</ArticleId>\n",
        esc(p.publication_type),
        esc(p.journal_abbrev()),
    );
    if let Some(doi) = &p.doi {
        let _ = writeln!(out, "<ArticleId IdType=\"doi\">{}</ArticleId>", esc(doi));
    }
    out.push_str("</ArticleIdList>\n</PubmedData>\n</PubmedArticle>\n");
}

fn article_text(out: &mut String, n: usize, p: &Paper) {
    let _ = write!(
        out,
        "{n}. {}. {} {};{}({}):{}.",
        p.journal_abbrev(),
        p.year,
        p.month_name(),
        p.volume,
        p.issue,
        p.pages
    );
    if let Some(doi) = &p.doi {
        let _ = write!(out, " doi: {doi}.");
    }
    let authors: Vec<String> = p.authors.iter().map(|a| a.short_name()).collect();
    let _ = write!(out, "\n\n{}\n\n{}.\n\n", p.title, authors.join(", "));
    for (label, text) in &p.abstract_sections {
        let _ = write!(out, "{label}: {text}\n\n");
    }
    let _ = write!(out, "PMID: {}\n\n\n", p.pmid.unwrap_or_default());
}

pub(crate) async fn efetch(State(state): State<SimState>, req: Request) -> Response {
    let p = match params(req).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let ids = match ids(&p) {
        Ok(ids) => ids,
        Err(r) => return r,
    };
    let corpus = state.corpus();
    // Unknown ids are left out, as the real service does.
    let hostile = state.settings().hostile;
    let papers: Vec<std::borrow::Cow<'_, Paper>> = ids
        .iter()
        .filter_map(|&id| corpus.by_pmid(id))
        .map(|p| hostile::view(hostile, p))
        .collect();
    if p.get("retmode") == Some("text") {
        let mut out = String::new();
        for (i, paper) in papers.iter().enumerate() {
            article_text(&mut out, i + 1, paper);
        }
        let mut resp = out.into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=UTF-8"),
        );
        return resp;
    }
    let mut out = String::from(
        "<?xml version=\"1.0\" ?>\n<!DOCTYPE PubmedArticleSet PUBLIC \"-//NLM//DTD PubMedArticle, 1st January 2025//EN\" \"https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_250101.dtd\">\n<PubmedArticleSet>\n",
    );
    for paper in &papers {
        article_xml(&mut out, paper);
    }
    out.push_str("</PubmedArticleSet>\n");
    xml(out)
}
