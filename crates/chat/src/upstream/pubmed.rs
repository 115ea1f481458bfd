//! PubMed E-utilities: `esearch` (ids for a query, JSON) then `efetch` (records, XML), with the
//! NCBI `tool`, `email` and `api_key` parameters NCBI asks clients to send.

use std::sync::Arc;

use breaker_store::Outbound;
use quick_xml::Reader;
use quick_xml::events::Event;

use super::http::{exchange, parsed};
use super::paper::normalize_doi;
use super::{Source, SourcePaper, UpstreamError, service::PUBMED};

/// Where PubMed is and how to identify ourselves to NCBI.
#[derive(Debug, Clone)]
pub struct PubMedConfig {
    /// E-utilities base URL (`FLEETGATE_PUBMED_URL`), e.g.
    /// `https://eutils.ncbi.nlm.nih.gov/entrez/eutils`.
    pub base_url: String,
    /// `FLEETGATE_NCBI_API_KEY`.
    pub api_key: Option<String>,
    /// NCBI `tool` parameter.
    pub tool: String,
    /// NCBI `email` parameter.
    pub email: Option<String>,
}

/// Largest number of records asked for in one search.
pub const MAX_RESULTS: usize = 50;
/// Deepest XML nesting accepted (PubMed records nest about 8 levels).
const MAX_DEPTH: usize = 64;

/// PubMed client.
#[derive(Debug, Clone)]
pub struct PubMedClient {
    http: reqwest::Client,
    outbound: Arc<Outbound>,
    cfg: PubMedConfig,
}

impl PubMedClient {
    /// A client calling through `outbound` (paced and guarded under the name `pubmed`).
    pub fn new(http: reqwest::Client, outbound: Arc<Outbound>, cfg: PubMedConfig) -> Self {
        PubMedClient {
            http,
            outbound,
            cfg,
        }
    }

    fn common(&self) -> Vec<(&'static str, String)> {
        let mut q = vec![
            ("db", "pubmed".to_string()),
            ("tool", self.cfg.tool.clone()),
        ];
        if let Some(e) = &self.cfg.email {
            q.push(("email", e.clone()));
        }
        if let Some(k) = &self.cfg.api_key {
            q.push(("api_key", k.clone()));
        }
        q
    }

    fn url(&self, endpoint: &str) -> String {
        format!("{}/{endpoint}", self.cfg.base_url.trim_end_matches('/'))
    }

    /// Papers for a query, best matches first as PubMed orders them.
    pub async fn search(
        &self,
        query: &str,
        limit: usize,
    ) -> Result<Vec<SourcePaper>, UpstreamError> {
        let ids = self.esearch(query, limit.clamp(1, MAX_RESULTS)).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.efetch(&ids).await
    }

    /// PMIDs matching a query.
    pub async fn esearch(&self, query: &str, limit: usize) -> Result<Vec<String>, UpstreamError> {
        let mut q = self.common();
        q.push(("term", query.to_string()));
        q.push(("retmode", "json".into()));
        q.push(("retmax", limit.to_string()));
        let url = self.url("esearch.fcgi");
        self.outbound
            .call(PUBMED, true, |_| {
                let req = self.http.get(&url).query(&q);
                async move { parsed(PUBMED, exchange(PUBMED, req).await, parse_esearch) }
            })
            .await
            .map_err(|e| UpstreamError::from_call(PUBMED, e))
    }

    /// Full records for PMIDs.
    pub async fn efetch(&self, ids: &[String]) -> Result<Vec<SourcePaper>, UpstreamError> {
        let mut q = self.common();
        q.push(("id", ids.join(",")));
        q.push(("rettype", "abstract".into()));
        q.push(("retmode", "xml".into()));
        let url = self.url("efetch.fcgi");
        self.outbound
            .call(PUBMED, true, |_| {
                let req = self.http.get(&url).query(&q);
                async move { parsed(PUBMED, exchange(PUBMED, req).await, parse_efetch) }
            })
            .await
            .map_err(|e| UpstreamError::from_call(PUBMED, e))
    }
}

/// `{"esearchresult": {"idlist": ["123", ...]}}`; ids must be numeric.
pub fn parse_esearch(body: &[u8]) -> Result<Vec<String>, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let list = v
        .get("esearchresult")
        .and_then(|r| r.get("idlist"))
        .and_then(|l| l.as_array())
        .ok_or("esearchresult.idlist missing")?;
    list.iter()
        .take(MAX_RESULTS)
        .map(|id| match id.as_str() {
            Some(s) if !s.is_empty() && s.len() <= 12 && s.bytes().all(|b| b.is_ascii_digit()) => {
                Ok(s.to_string())
            }
            _ => Err(format!("bad pmid {id}")),
        })
        .collect()
}

#[derive(Default)]
struct Record {
    pmid: String,
    title: String,
    abstract_text: String,
    year: Option<i32>,
    journal: String,
    doi: String,
    authors: Vec<String>,
    author: (String, String, String),
}

/// `PubmedArticleSet` XML → papers. Unknown elements are ignored; a record without a PMID or
/// title is skipped; broken XML is an error.
pub fn parse_efetch(body: &[u8]) -> Result<Vec<SourcePaper>, String> {
    let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
    let mut reader = Reader::from_str(text);
    let mut path: Vec<String> = Vec::new();
    let mut rec: Option<Record> = None;
    let mut id_type = String::new();
    let mut out = Vec::new();
    loop {
        let ev = reader.read_event().map_err(|e| e.to_string())?;
        match ev {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if path.len() >= MAX_DEPTH {
                    return Err("xml nested too deeply".into());
                }
                match name.as_str() {
                    "PubmedArticle" => rec = Some(Record::default()),
                    "ArticleId" => {
                        id_type = e
                            .try_get_attribute("IdType")
                            .ok()
                            .flatten()
                            .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
                            .unwrap_or_default();
                    }
                    "AbstractText" => {
                        if let Some(r) = rec.as_mut()
                            && !r.abstract_text.is_empty()
                        {
                            r.abstract_text.push(' ');
                        }
                    }
                    _ => {}
                }
                path.push(name);
            }
            Event::End(_) => {
                let name = path.pop().unwrap_or_default();
                match name.as_str() {
                    "PubmedArticle" => {
                        if let Some(r) = rec.take()
                            && let Some(p) = finish(r)
                        {
                            out.push(p);
                        }
                    }
                    "Author" => {
                        if let Some(r) = rec.as_mut() {
                            let (last, fore, collective) = std::mem::take(&mut r.author);
                            let name = if !collective.trim().is_empty() {
                                collective.trim().to_string()
                            } else {
                                format!("{} {}", fore.trim(), last.trim())
                                    .trim()
                                    .to_string()
                            };
                            if !name.is_empty() && r.authors.len() < 100 {
                                r.authors.push(name);
                            }
                        }
                    }
                    _ => {}
                }
            }
            Event::Text(t) => {
                let s = t.decode().map_err(|e| e.to_string())?;
                append(&mut rec, &path, &id_type, &s);
            }
            Event::CData(c) => {
                let s = String::from_utf8_lossy(&c).into_owned();
                append(&mut rec, &path, &id_type, &s);
            }
            Event::GeneralRef(r) => {
                let name = r.decode().map_err(|e| e.to_string())?;
                if let Some(c) = resolve_entity(&name) {
                    append(&mut rec, &path, &id_type, c.encode_utf8(&mut [0u8; 4]));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

fn resolve_entity(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => {
            let num = name.strip_prefix('#')?;
            let code = match num.strip_prefix('x').or_else(|| num.strip_prefix('X')) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => num.parse().ok()?,
            };
            char::from_u32(code)
        }
    }
}

fn ends_with(path: &[String], tail: &[&str]) -> bool {
    path.len() >= tail.len()
        && path[path.len() - tail.len()..]
            .iter()
            .zip(tail)
            .all(|(a, b)| a == b)
}

fn append(rec: &mut Option<Record>, path: &[String], id_type: &str, s: &str) {
    let Some(r) = rec.as_mut() else { return };
    let in_path = |n: &str| path.iter().any(|p| p == n);
    if ends_with(path, &["MedlineCitation", "PMID"]) {
        r.pmid.push_str(s.trim());
    } else if in_path("ArticleTitle") {
        r.title.push_str(s);
    } else if in_path("AbstractText") {
        if r.abstract_text.len() < 20_000 {
            r.abstract_text.push_str(s);
        }
    } else if in_path("Author") {
        if ends_with(path, &["LastName"]) {
            r.author.0.push_str(s);
        } else if ends_with(path, &["ForeName"]) {
            r.author.1.push_str(s);
        } else if ends_with(path, &["CollectiveName"]) {
            r.author.2.push_str(s);
        }
    } else if ends_with(path, &["PubDate", "Year"]) {
        r.year = s.trim().parse().ok().or(r.year);
    } else if ends_with(path, &["PubDate", "MedlineDate"]) && r.year.is_none() {
        r.year = s.trim().get(..4).and_then(|y| y.parse().ok());
    } else if ends_with(path, &["Journal", "Title"]) {
        r.journal.push_str(s);
    } else if ends_with(path, &["ArticleIdList", "ArticleId"]) && id_type == "doi" {
        r.doi.push_str(s.trim());
    }
}

fn finish(r: Record) -> Option<SourcePaper> {
    let pmid = r.pmid.trim().to_string();
    let title = r.title.split_whitespace().collect::<Vec<_>>().join(" ");
    if pmid.is_empty() || !pmid.bytes().all(|b| b.is_ascii_digit()) || title.is_empty() {
        return None;
    }
    Some(SourcePaper {
        source: Source::Pubmed,
        url: format!("https://pubmed.ncbi.nlm.nih.gov/{pmid}/"),
        id: pmid.clone(),
        pmid: Some(pmid),
        doi: normalize_doi(&r.doi),
        title,
        abstract_text: r
            .abstract_text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
        year: r.year,
        authors: r.authors,
        venue: Some(r.journal.trim().to_string()).filter(|j| !j.is_empty()),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const XML: &str = r#"<?xml version="1.0"?>
<PubmedArticleSet><PubmedArticle><MedlineCitation Status="MEDLINE"><PMID Version="1">123</PMID>
<Article><Journal><JournalIssue><PubDate><Year>2019</Year></PubDate></JournalIssue><Title>BMJ</Title></Journal>
<ArticleTitle>Metformin &amp; <i>outcomes</i></ArticleTitle>
<Abstract><AbstractText Label="A">First &#x3b1;.</AbstractText><AbstractText>Second.</AbstractText></Abstract>
<AuthorList><Author><LastName>Smith</LastName><ForeName>Ann</ForeName></Author><Author><CollectiveName>Group</CollectiveName></Author></AuthorList>
</Article><CommentsCorrectionsList><CommentsCorrections><PMID>999</PMID></CommentsCorrections></CommentsCorrectionsList></MedlineCitation>
<PubmedData><ArticleIdList><ArticleId IdType="pubmed">123</ArticleId><ArticleId IdType="doi">10.1/ABC</ArticleId></ArticleIdList></PubmedData>
</PubmedArticle></PubmedArticleSet>"#;

    #[test]
    fn parses_a_record() {
        let p = parse_efetch(XML.as_bytes()).unwrap();
        assert_eq!(p.len(), 1);
        let p = &p[0];
        assert_eq!(p.pmid.as_deref(), Some("123"));
        assert_eq!(p.title, "Metformin & outcomes");
        assert_eq!(p.abstract_text, "First α. Second.");
        assert_eq!(p.year, Some(2019));
        assert_eq!(p.doi.as_deref(), Some("10.1/abc"));
        assert_eq!(p.authors, ["Ann Smith", "Group"]);
        assert_eq!(p.venue.as_deref(), Some("BMJ"));
    }

    #[test]
    fn hostile_bodies_are_errors_not_panics() {
        for body in [
            &b"<PubmedArticleSet><PubmedArticle>"[..],
            b"<a><b></a>",
            b"\xff\xfe",
            b"",
            b"<PubmedArticleSet><PubmedArticle><MedlineCitation><PMID>abc</PMID></MedlineCitation></PubmedArticle></PubmedArticleSet>",
        ] {
            if let Ok(p) = parse_efetch(body) {
                assert!(p.is_empty());
            }
        }
        let deep = "<a>".repeat(100);
        assert!(parse_efetch(deep.as_bytes()).is_err());
        assert!(parse_esearch(b"{}").is_err());
        assert!(parse_esearch(br#"{"esearchresult":{"idlist":["1; DROP"]}}"#).is_err());
        assert_eq!(
            parse_esearch(br#"{"esearchresult":{"idlist":["1","2"]}}"#).unwrap(),
            ["1", "2"]
        );
    }
}
