//! Semantic Scholar Graph API v1: `GET /paper/search` (relevance search) and
//! `GET /paper/{paper_id}` (by S2 id, `DOI:`, `PMID:` or `CorpusId:`). Only the fields asked for
//! in `fields` are returned, plus `paperId` which is always present, as the real API does.

// Error paths return ready-made responses in the API's style; their size is irrelevant here.
#![allow(clippy::result_large_err)]

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::corpus::{Match, Paper, Scope};
use crate::errors;
use crate::hostile;
use crate::params::Params;
use crate::state::SimState;

/// Fields this simulator can return (a subset of the real API's, covering what clients use).
const FIELDS: &[&str] = &[
    "paperId",
    "corpusId",
    "externalIds",
    "url",
    "title",
    "abstract",
    "venue",
    "year",
    "referenceCount",
    "citationCount",
    "influentialCitationCount",
    "isOpenAccess",
    "openAccessPdf",
    "fieldsOfStudy",
    "publicationTypes",
    "publicationDate",
    "journal",
    "authors",
];

/// Parses `fields`; `authors.name` style sub-fields count as `authors`.
fn fields(p: &Params) -> Result<Vec<&'static str>, Response> {
    let Some(raw) = p.get("fields") else {
        return Ok(vec!["title"]);
    };
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    for f in raw.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let base = f.split('.').next().unwrap_or(f);
        match FIELDS.iter().find(|k| **k == base) {
            Some(k) => {
                if !out.contains(k) {
                    out.push(*k);
                }
            }
            None => unknown.push(f.chars().take(64).collect::<String>()),
        }
    }
    if !unknown.is_empty() {
        return Err(errors::s2(
            400,
            &format!(
                "Unrecognized or unsupported fields: [{}]",
                unknown.join(", ")
            ),
        ));
    }
    Ok(out)
}

fn publication_types(p: &Paper) -> Vec<&'static str> {
    match p.publication_type {
        "Randomized Controlled Trial" | "Pragmatic Clinical Trial" => {
            vec!["JournalArticle", "ClinicalTrial"]
        }
        "Meta-Analysis" | "Network Meta-Analysis" => {
            vec!["JournalArticle", "Review", "MetaAnalysis"]
        }
        _ => vec!["JournalArticle"],
    }
}

fn paper_json(p: &Paper, fields: &[&str], hostile: bool) -> Value {
    let disguised = hostile::view(hostile, p);
    let p: &Paper = &disguised;
    let mut m = Map::new();
    m.insert("paperId".into(), json!(p.s2_id));
    for &f in fields {
        let v = match f {
            "paperId" => continue,
            "corpusId" => json!(p.corpus_id),
            "externalIds" => {
                let mut ids = Map::new();
                if let Some(doi) = &p.doi {
                    ids.insert("DOI".into(), json!(doi));
                }
                if let Some(pmid) = p.pmid {
                    ids.insert("PubMed".into(), json!(pmid.to_string()));
                }
                ids.insert("CorpusId".into(), json!(p.corpus_id));
                Value::Object(ids)
            }
            "url" => match hostile.then(|| hostile::url(p)).flatten() {
                Some(u) => json!(u),
                None => json!(format!("https://www.semanticscholar.org/paper/{}", p.s2_id)),
            },
            "title" => json!(p.title),
            "abstract" => {
                if p.s2_abstract_missing {
                    Value::Null
                } else {
                    json!(p.abstract_text())
                }
            }
            "venue" => json!(p.journal_name()),
            "year" => json!(p.year),
            "referenceCount" => json!(20 + p.citation_count % 40),
            "citationCount" => json!(p.citation_count),
            "influentialCitationCount" => json!(p.citation_count / 10),
            "isOpenAccess" => json!(p.index.is_multiple_of(3)),
            "openAccessPdf" => {
                if p.index.is_multiple_of(3) {
                    json!({ "url": format!("https://example.org/pdf/{}.pdf", p.s2_id), "status": "GOLD" })
                } else {
                    Value::Null
                }
            }
            "fieldsOfStudy" => json!(["Medicine"]),
            "publicationTypes" => json!(publication_types(p)),
            "publicationDate" => json!(format!("{}-{:02}-{:02}", p.year, p.month, p.day)),
            "journal" => {
                json!({ "name": p.journal_name(), "volume": p.volume.to_string(), "pages": p.pages })
            }
            "authors" => {
                let list: Vec<Value> = p
                    .authors
                    .iter()
                    .map(|a| json!({ "authorId": a.s2_author_id, "name": a.full_name() }))
                    .collect();
                Value::Array(list)
            }
            _ => continue,
        };
        m.insert(f.into(), v);
    }
    Value::Object(m)
}

/// `year=2019`, `2016-2020`, `2010-` or `-2015`.
fn year_filter(raw: Option<&str>) -> Result<(u16, u16), Response> {
    let Some(raw) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok((0, u16::MAX));
    };
    let bad = || {
        errors::s2(
            400,
            "Invalid year range: expected YYYY, YYYY-YYYY, YYYY- or -YYYY",
        )
    };
    let parse = |s: &str, dflt: u16| -> Result<u16, Response> {
        if s.is_empty() {
            Ok(dflt)
        } else {
            s.parse().map_err(|_| bad())
        }
    };
    match raw.split_once('-') {
        Some((a, b)) => Ok((parse(a, 0)?, parse(b, u16::MAX)?)),
        None => {
            let y = parse(raw, 0)?;
            Ok((y, y))
        }
    }
}

pub(crate) async fn search(State(state): State<SimState>, req: Request) -> Response {
    let p = match Params::from_request(req).await {
        Ok(p) => p,
        Err((code, msg)) => return errors::s2(code, &msg),
    };
    let query = p.get("query").unwrap_or("").trim();
    if query.is_empty() {
        return errors::s2(400, "Missing required parameter: 'query'");
    }
    let (limit, offset) = match (p.number("limit"), p.number("offset")) {
        (Ok(l), Ok(o)) => (l.unwrap_or(100), o.unwrap_or(0)),
        (Err(e), _) | (_, Err(e)) => return errors::s2(400, &e),
    };
    if limit == 0 || limit > 100 {
        return errors::s2(400, "limit must be between 1 and 100");
    }
    if offset.saturating_add(limit) > 1000 {
        return errors::s2(400, "offset + limit must be <= 1000");
    }
    let fields = match fields(&p) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let (from, to) = match year_filter(p.get("year")) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let hostile = state.settings().hostile;
    let hits: Vec<&Paper> = state
        .corpus()
        .search(query, Scope::S2, Match::Any)
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| (from..=to).contains(&p.year))
        .collect();
    let total = hits.len();
    let (offset, limit) = (offset as usize, limit as usize);
    let data: Vec<Value> = hits
        .iter()
        .skip(offset)
        .take(limit)
        .map(|p| paper_json(p, &fields, hostile))
        .collect();
    let mut body = json!({ "total": total, "offset": offset });
    let end = offset + data.len();
    if end < total && end < 1000 {
        body["next"] = json!(end);
    }
    body["data"] = Value::Array(data);
    Json(body).into_response()
}

pub(crate) async fn paper(
    State(state): State<SimState>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let p = match Params::from_request(req).await {
        Ok(p) => p,
        Err((code, msg)) => return errors::s2(code, &msg),
    };
    let fields = match fields(&p) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let corpus = state.corpus();
    let found = if let Some(doi) = id.strip_prefix("DOI:") {
        corpus.papers().iter().find(|p| {
            p.availability.in_s2()
                && p.doi
                    .as_deref()
                    .is_some_and(|d| d.eq_ignore_ascii_case(doi))
        })
    } else if let Some(pmid) = id.strip_prefix("PMID:") {
        pmid.parse()
            .ok()
            .and_then(|n| corpus.by_pmid(n))
            .filter(|p| p.availability.in_s2())
    } else if let Some(cid) = id.strip_prefix("CorpusId:") {
        cid.parse::<u64>().ok().and_then(|c| {
            corpus
                .papers()
                .iter()
                .find(|p| p.availability.in_s2() && p.corpus_id == c)
        })
    } else {
        corpus.by_s2_id(&id)
    };
    match found {
        Some(paper) => Json(paper_json(paper, &fields, state.settings().hostile)).into_response(),
        None => errors::s2(
            404,
            &format!(
                "Paper with id {} not found",
                id.chars().take(100).collect::<String>()
            ),
        ),
    }
}
