//! Exported BibTeX and RIS parse with independent parsers (PyPI bibtexparser and rispy, installed
//! by scripts/test), also when titles and authors are hostile.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use chat::export::{CitedWork, ExportConversation, ExportMessage, bibtex, markdown, ris};
use chrono::Utc;
use uuid::Uuid;

fn python() -> String {
    std::env::var("FLEETGATE_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn conversation() -> ExportConversation {
    let titles = [
        "Metformin and all-cause mortality in type 2 diabetes",
        "Braces } { unbalanced and 100% \\ backslash & co",
        "Multi\nline\ntitle\nER  - injected",
        "Ünïcödé — α-blockers @home #1 $5 ~tilde ^caret_underscore",
    ];
    let works: Vec<CitedWork> = titles
        .iter()
        .enumerate()
        .map(|(i, t)| CitedWork {
            source: if i % 2 == 0 {
                "pubmed"
            } else {
                "semantic_scholar"
            }
            .into(),
            id: format!("{}", 1000 + i),
            title: (*t).into(),
            url: format!("https://example.org/{i}"),
            year: Some(2000 + i as i32),
            authors: vec!["Ann Smith".into(), format!("Bo {{Li}} {i}")],
            doi: Some(format!("10.1000/x{i}")),
            venue: Some("Journal of Tests & Trials".into()),
            pmid: Some(format!("{}", 1000 + i)),
        })
        .collect();
    ExportConversation {
        id: Uuid::new_v4(),
        title: "Diabetes question".into(),
        created_at: Utc::now(),
        messages: vec![
            ExportMessage {
                role: "user".into(),
                content: "Q".into(),
                citations: vec![],
                created_at: Utc::now(),
            },
            ExportMessage {
                role: "assistant".into(),
                content: "A [1] [2] [3] [4]".into(),
                citations: works,
                created_at: Utc::now(),
            },
        ],
    }
}

/// Runs a Python snippet on `input` (stdin) and returns its stdout.
fn run_python(code: &str, input: &str) -> String {
    let dir = std::env::temp_dir().join(format!("fg-export-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("input");
    std::fs::write(&file, input).unwrap();
    let out = Command::new(python())
        .arg("-c")
        .arg(code)
        .arg(&file)
        .output()
        .expect("python3 must be installed (scripts/test sets up .fleet/pyenv)");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "parser failed (run scripts/test to install bibtexparser and rispy): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn bibtex_parses_with_bibtexparser() {
    let c = conversation();
    let out = run_python(
        r#"
import sys, json, bibtexparser
from bibtexparser.bparser import BibTexParser
db = bibtexparser.loads(open(sys.argv[1], encoding="utf-8").read(), parser=BibTexParser(common_strings=True))
print(json.dumps([{"id": e["ID"], "title": e.get("title"), "year": e.get("year"), "doi": e.get("doi"), "author": e.get("author")} for e in db.entries]))
"#,
        &bibtex(&c),
    );
    let entries: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(entries.len(), 4, "{out}");
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e["year"], format!("{}", 2000 + i));
        assert_eq!(e["doi"], format!("10.1000/x{i}"));
        assert!(e["author"].as_str().unwrap().contains(" and "));
    }
    assert!(
        entries[0]["title"]
            .as_str()
            .unwrap()
            .starts_with("Metformin")
    );
    assert!(
        entries[2]["title"]
            .as_str()
            .unwrap()
            .contains("Multi line title")
    );
}

#[test]
fn ris_parses_with_rispy() {
    let c = conversation();
    let out = run_python(
        r#"
import sys, json, rispy
entries = rispy.load(open(sys.argv[1], encoding="utf-8"))
print(json.dumps([{"title": e.get("title"), "year": e.get("year"), "doi": e.get("doi"), "authors": e.get("authors"), "type": e.get("type_of_reference")} for e in entries]))
"#,
        &ris(&c),
    );
    let entries: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(entries.len(), 4, "{out}");
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e["type"], "JOUR");
        assert_eq!(e["year"], format!("{}", 2000 + i));
        assert_eq!(e["authors"].as_array().unwrap().len(), 2);
    }
    assert_eq!(entries[2]["title"], "Multi line title ER - injected");
}

#[test]
fn markdown_lists_every_citation() {
    let c = conversation();
    let md = markdown(&c);
    for i in 0..4 {
        assert!(md.contains(&format!("https://example.org/{i}")), "{md}");
    }
}
