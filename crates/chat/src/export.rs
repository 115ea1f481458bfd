//! Rendering a conversation for export: Markdown, JSON, BibTeX, RIS.
//!
//! Before any format, [`safe_copy`] makes the conversation safe whatever was stored (older rows
//! predate today's rules): message text through the Markdown guard (no raw HTML, no images, only
//! http(s) links, no numeric character references), every citation field cleaned of control
//! characters and of references that decode to them, every URL http(s) or empty. Then each value
//! is escaped for its format, so a hostile title cannot break a BibTeX entry, inject a RIS tag or
//! become Markdown.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::text::{clean_upstream, escape_inline, http_url, neutralise};

/// A cited work, with what bibliographies need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CitedWork {
    /// `pubmed` or `semantic_scholar`.
    pub source: String,
    /// Id in that source.
    pub id: String,
    /// Title.
    pub title: String,
    /// Link.
    pub url: String,
    /// Year.
    pub year: Option<i32>,
    /// Authors.
    #[serde(default)]
    pub authors: Vec<String>,
    /// DOI.
    #[serde(default)]
    pub doi: Option<String>,
    /// Journal or venue.
    #[serde(default)]
    pub venue: Option<String>,
    /// PubMed id.
    #[serde(default)]
    pub pmid: Option<String>,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportMessage {
    /// `user` or `assistant`.
    pub role: String,
    /// Text.
    pub content: String,
    /// Works the message cites (assistant messages).
    pub citations: Vec<CitedWork>,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

/// A whole conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportConversation {
    /// Its id.
    pub id: Uuid,
    /// Its title (the first question, shortened).
    pub title: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Messages in order.
    pub messages: Vec<ExportMessage>,
}

impl ExportConversation {
    /// Every cited work once, in order of first citation.
    pub fn works(&self) -> Vec<&CitedWork> {
        let mut seen: HashSet<(&str, &str)> = HashSet::new();
        self.messages
            .iter()
            .flat_map(|m| &m.citations)
            .filter(|w| seen.insert((w.source.as_str(), w.id.as_str())))
            .collect()
    }
}

/// Longest citation field kept in an export.
const FIELD_CHARS: usize = 2000;

fn safe_work(w: &CitedWork) -> CitedWork {
    let f = |v: &str| clean_upstream(v, FIELD_CHARS);
    CitedWork {
        source: f(&w.source),
        id: f(&w.id),
        title: f(&w.title),
        url: http_url(&w.url).map(str::to_string).unwrap_or_default(),
        year: w.year,
        authors: w.authors.iter().take(100).map(|a| f(a)).collect(),
        doi: w.doi.as_deref().map(f),
        venue: w.venue.as_deref().map(f),
        pmid: w.pmid.as_deref().map(f),
    }
}

/// The conversation with every value made safe (see the module doc).
pub fn safe_copy(c: &ExportConversation) -> ExportConversation {
    ExportConversation {
        id: c.id,
        title: clean_upstream(&c.title, FIELD_CHARS),
        created_at: c.created_at,
        messages: c
            .messages
            .iter()
            .map(|m| ExportMessage {
                role: m.role.clone(),
                content: neutralise(&clean_upstream(&m.content, usize::MAX)),
                citations: m.citations.iter().map(safe_work).collect(),
                created_at: m.created_at,
            })
            .collect(),
    }
}

/// Markdown: the exchange, each answer followed by its numbered sources.
pub fn markdown(c: &ExportConversation) -> String {
    let c = &safe_copy(c);
    let mut s = format!(
        "# {}\n\n_Conversation {} — started {}_\n\n",
        escape_inline(&c.title),
        c.id,
        c.created_at.format("%Y-%m-%d %H:%M UTC")
    );
    for m in &c.messages {
        if m.role == "user" {
            s.push_str(&format!("## Question\n\n{}\n\n", m.content.trim()));
        } else {
            s.push_str(&format!("## Answer\n\n{}\n\n", m.content.trim()));
            if !m.citations.is_empty() {
                s.push_str("**Sources**\n\n");
                for (i, w) in m.citations.iter().enumerate() {
                    let title = escape_inline(&w.title);
                    // Only an http(s) URL is linked, with the characters that could end a link
                    // destination percent-encoded.
                    let linked = match w.url.as_str() {
                        "" => title,
                        url => format!(
                            "[{title}]({})",
                            url.replace('(', "%28")
                                .replace(')', "%29")
                                .replace('<', "%3C")
                                .replace('>', "%3E")
                        ),
                    };
                    s.push_str(&format!(
                        "{}. {linked}{} — {} {}\n",
                        i + 1,
                        w.year.map(|y| format!(" ({y})")).unwrap_or_default(),
                        escape_inline(&w.source),
                        escape_inline(&w.id)
                    ));
                }
                s.push('\n');
            }
        }
    }
    s
}

/// JSON: the conversation, made safe like every format.
pub fn json(c: &ExportConversation) -> String {
    serde_json::to_string_pretty(&safe_copy(c)).unwrap_or_else(|_| "{}".into())
}

/// BibTeX: one `@article` per cited work.
pub fn bibtex(c: &ExportConversation) -> String {
    let c = &safe_copy(c);
    let mut s = String::new();
    for w in c.works() {
        let key: String = format!("{}{}", w.source, w.id)
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(60)
            .collect();
        s.push_str(&format!("@article{{{key},\n"));
        s.push_str(&format!("  title = {{{}}},\n", bib(&w.title)));
        if !w.authors.is_empty() {
            let authors: Vec<String> = w.authors.iter().map(|a| bib(a)).collect();
            s.push_str(&format!("  author = {{{}}},\n", authors.join(" and ")));
        }
        if let Some(y) = w.year {
            s.push_str(&format!("  year = {{{y}}},\n"));
        }
        if let Some(v) = &w.venue {
            s.push_str(&format!("  journal = {{{}}},\n", bib(v)));
        }
        if let Some(d) = &w.doi {
            s.push_str(&format!("  doi = {{{}}},\n", bib(d)));
        }
        if let Some(p) = &w.pmid {
            s.push_str(&format!("  pmid = {{{}}},\n", bib(p)));
        }
        s.push_str(&format!("  url = {{{}}}\n}}\n\n", bib(&w.url)));
    }
    s
}

/// RIS: one `TY  - JOUR` record per cited work.
pub fn ris(c: &ExportConversation) -> String {
    let c = &safe_copy(c);
    let mut s = String::new();
    for w in c.works() {
        s.push_str("TY  - JOUR\n");
        s.push_str(&format!("TI  - {}\n", one_line(&w.title)));
        for a in &w.authors {
            s.push_str(&format!("AU  - {}\n", one_line(a)));
        }
        if let Some(y) = w.year {
            s.push_str(&format!("PY  - {y}\n"));
        }
        if let Some(v) = &w.venue {
            s.push_str(&format!("JO  - {}\n", one_line(v)));
        }
        if let Some(d) = &w.doi {
            s.push_str(&format!("DO  - {}\n", one_line(d)));
        }
        s.push_str(&format!("UR  - {}\n", one_line(&w.url)));
        s.push_str(&format!("AN  - {}\n", one_line(&w.id)));
        s.push_str(&format!("DB  - {}\n", one_line(&w.source)));
        s.push_str("ER  - \n\n");
    }
    s
}

/// Collapses whitespace (including newlines, which would end a RIS field or a Markdown line).
fn one_line(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A BibTeX braced value: special characters escaped. BibTeX counts every brace, escaped or not,
/// so literal braces become `\textbraceleft{}` / `\textbraceright{}` and the value always balances.
fn bib(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for ch in one_line(v).chars() {
        match ch {
            '\\' => out.push_str("\\textbackslash{}"),
            '{' => out.push_str("\\textbraceleft{}"),
            '}' => out.push_str("\\textbraceright{}"),
            '%' | '&' | '$' | '#' | '_' => {
                out.push('\\');
                out.push(ch);
            }
            '~' => out.push_str("\\textasciitilde{}"),
            '^' => out.push_str("\\textasciicircum{}"),
            '@' => out.push_str("{@}"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> ExportConversation {
        let t = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        let w = |id: &str, title: &str| CitedWork {
            source: "pubmed".into(),
            id: id.into(),
            title: title.into(),
            url: format!("https://pubmed.ncbi.nlm.nih.gov/{id}/"),
            year: Some(2020),
            authors: vec!["Ann Smith".into(), "Bo {Evil} Li".into()],
            doi: Some("10.1/x_y".into()),
            venue: Some("J & Co".into()),
            pmid: Some(id.into()),
        };
        ExportConversation {
            id: Uuid::nil(),
            title: "Metformin?".into(),
            created_at: t,
            messages: vec![
                ExportMessage {
                    role: "user".into(),
                    content: "Does metformin help?".into(),
                    citations: vec![],
                    created_at: t,
                },
                ExportMessage {
                    role: "assistant".into(),
                    content: "Yes [1], see also [2].".into(),
                    citations: vec![
                        w("1", "Plain title"),
                        w("2", "Hostile } title\nER  - with @{braces} 100% \\ done"),
                    ],
                    created_at: t,
                },
            ],
        }
    }

    #[test]
    fn markdown_shows_every_citation() {
        let md = markdown(&sample());
        assert!(md.contains("1. [Plain title](https://pubmed.ncbi.nlm.nih.gov/1/) (2020)"));
        assert!(md.contains("2. [Hostile } title ER - with @{braces} 100% \\\\ done]("));
    }

    #[test]
    fn bibtex_braces_balance_and_ris_fields_stay_on_one_line() {
        let b = bibtex(&sample());
        // Every brace counts in BibTeX: they must nest properly.
        let depth = b.chars().try_fold(0i32, |d, c| {
            let d = match c {
                '{' => d + 1,
                '}' => d - 1,
                _ => d,
            };
            (d >= 0).then_some(d)
        });
        assert_eq!(depth, Some(0), "{b}");
        let r = ris(&sample());
        assert_eq!(r.matches("ER  - ").count(), 2, "{r}");
        assert!(
            r.lines()
                .all(|l| l.is_empty() || l.get(2..6) == Some("  - "))
        );
    }
}
