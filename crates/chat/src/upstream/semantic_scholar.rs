//! Semantic Scholar Graph API v1: `paper/search` with the fields we rank and cite.

use std::sync::Arc;

use breaker_store::Outbound;

use super::http::{exchange, parsed};
use super::paper::normalize_doi;
use super::{Source, SourcePaper, UpstreamError, service::SEMANTIC_SCHOLAR};

/// Where Semantic Scholar is.
#[derive(Debug, Clone)]
pub struct SemanticScholarConfig {
    /// Graph API base URL (`FLEETGATE_SEMANTIC_SCHOLAR_URL`), e.g.
    /// `https://api.semanticscholar.org/graph/v1`.
    pub base_url: String,
    /// `FLEETGATE_S2_API_KEY` (sent as `x-api-key`).
    pub api_key: Option<String>,
}

const FIELDS: &str = "title,abstract,year,authors,url,externalIds,venue";

/// Semantic Scholar client.
#[derive(Debug, Clone)]
pub struct SemanticScholarClient {
    http: reqwest::Client,
    outbound: Arc<Outbound>,
    cfg: SemanticScholarConfig,
}

impl SemanticScholarClient {
    /// A client calling through `outbound` (paced and guarded as `semantic_scholar`).
    pub fn new(http: reqwest::Client, outbound: Arc<Outbound>, cfg: SemanticScholarConfig) -> Self {
        SemanticScholarClient {
            http,
            outbound,
            cfg,
        }
    }

    /// Papers for a query, in Semantic Scholar's relevance order.
    pub async fn search(
        &self,
        query: &str,
        limit: usize,
    ) -> Result<Vec<SourcePaper>, UpstreamError> {
        let url = format!("{}/paper/search", self.cfg.base_url.trim_end_matches('/'));
        let limit = limit.clamp(1, 100).to_string();
        self.outbound
            .call(SEMANTIC_SCHOLAR, true, |_| {
                let mut req = self.http.get(&url).query(&[
                    ("query", query),
                    ("limit", &limit),
                    ("fields", FIELDS),
                ]);
                if let Some(k) = &self.cfg.api_key {
                    req = req.header("x-api-key", k);
                }
                async move {
                    parsed(
                        SEMANTIC_SCHOLAR,
                        exchange(SEMANTIC_SCHOLAR, req).await,
                        parse_search,
                    )
                }
            })
            .await
            .map_err(|e| UpstreamError::from_call(SEMANTIC_SCHOLAR, e))
    }
}

/// `{"data": [{paperId, title, abstract, year, authors: [{name}], url, externalIds: {DOI, PubMed}}]}`.
/// Entries without an id or title are skipped; a missing `data` array is an error.
pub fn parse_search(body: &[u8]) -> Result<Vec<SourcePaper>, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let data = v
        .get("data")
        .and_then(|d| d.as_array())
        .ok_or("data missing")?;
    let s = |x: Option<&serde_json::Value>| x.and_then(|v| v.as_str()).map(str::to_string);
    Ok(data
        .iter()
        .take(100)
        .filter_map(|p| {
            let id = s(p.get("paperId")).filter(|i| !i.is_empty() && i.len() <= 64)?;
            let title = s(p.get("title")).filter(|t| !t.trim().is_empty())?;
            let ext = p.get("externalIds");
            let pmid = ext
                .and_then(|e| e.get("PubMed"))
                .and_then(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .or_else(|| v.as_u64().map(|n| n.to_string()))
                })
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
            let doi = s(ext.and_then(|e| e.get("DOI"))).and_then(|d| normalize_doi(&d));
            let authors = p
                .get("authors")
                .and_then(|a| a.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|x| s(x.get("name")))
                        .take(100)
                        .collect()
                })
                .unwrap_or_default();
            Some(SourcePaper {
                source: Source::SemanticScholar,
                url: s(p.get("url"))
                    .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
                    .unwrap_or_else(|| format!("https://www.semanticscholar.org/paper/{id}")),
                id,
                pmid,
                doi,
                title: title.split_whitespace().collect::<Vec<_>>().join(" "),
                abstract_text: s(p.get("abstract")).unwrap_or_default(),
                year: p
                    .get("year")
                    .and_then(|y| y.as_i64())
                    .and_then(|y| i32::try_from(y).ok()),
                authors,
                venue: s(p.get("venue")).filter(|v| !v.is_empty()),
            })
        })
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_tolerates_nulls_and_wrong_types() {
        let body = br#"{"total":2,"data":[
            {"paperId":"abc","title":"T","abstract":null,"year":2020,"authors":[{"name":"A"},{"x":1}],
             "url":"https://x","externalIds":{"DOI":"10.5/Q","PubMed":"42"}},
            {"paperId":"def","title":null},
            {"paperId":7,"title":"wrong id type"},
            {"paperId":"ghi","title":"U","year":"2020","authors":"nope","externalIds":{"PubMed":43}}
        ]}"#;
        let p = parse_search(body).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].doi.as_deref(), Some("10.5/q"));
        assert_eq!(p[0].pmid.as_deref(), Some("42"));
        assert_eq!(p[0].authors, ["A"]);
        assert_eq!(p[1].year, None);
        assert_eq!(p[1].pmid.as_deref(), Some("43"));
        assert!(parse_search(b"[]").is_err());
        assert!(parse_search(b"{\"data\":").is_err());
    }
}
