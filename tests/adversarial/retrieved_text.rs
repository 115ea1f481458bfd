//! Retrieved text is written by third parties. With the simulator's hostile literature (titles
//! and abstracts with HTML, Markdown images, `javascript:` links, control characters, `&#0;`,
//! text meant to steer the model, oversized fields), the prompt keeps sources as data outside
//! the instructions, and every answer and export renders harmless. The prompt is read back from
//! the simulator; answers and exports are rendered with `pulldown-cmark` (GitHub extensions on).

use pulldown_cmark::{Options, Parser, html};
use serde_json::{Value, json};

use crate::harness::serial;
use crate::support::{Replica, deltas, token};

/// Fragments of the hostile payloads that must never reach the instructions.
const PAYLOAD_MARKERS: &[&str] = &[
    "onerror",
    "evil.example",
    "javascript:",
    "ignore all previous instructions",
    "developer mode",
    "@misc{evil",
];

fn render(md: &str) -> String {
    let mut out = String::new();
    html::push_html(&mut out, Parser::new_ext(md, Options::all()));
    out
}

/// Rendered, the text holds no tag Markdown did not make itself, no image, no link other than
/// http(s), and no control character (decoded or raw).
fn assert_harmless(what: &str, md: &str) {
    let h = render(md);
    let lower = h.to_ascii_lowercase();
    for tag in ["<img", "<script", "<iframe", "<b>"] {
        assert!(!lower.contains(tag), "{what}: {tag} in\n{h}");
    }
    for (i, _) in lower.match_indices("href=\"") {
        assert!(lower[i + 6..].starts_with("http"), "{what}: link in\n{h}");
    }
    assert_no_controls(what, md);
    assert_no_controls(what, &h);
}

/// No C0/C1 control character other than tab and newline, and no character reference to one.
fn assert_no_controls(what: &str, text: &str) {
    let bad = text
        .chars()
        .find(|c| c.is_control() && *c != '\n' && *c != '\t');
    assert!(bad.is_none(), "{what}: control character {bad:?}");
    let lower = text.to_ascii_lowercase();
    for r in ["&#0;", "&#x1b;", "&#27;"] {
        assert!(!lower.contains(r), "{what}: {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sources_stay_data_and_come_out_harmless() {
    let _s = serial().await;
    let r = Replica::start("hostile", &[("FLEETGATE_LLM_MAX_TOKENS", "4000")]).await;
    r.sim.control(json!({"hostile": true})).await;
    let question = "metformin diabetes mortality";

    // A JSON answer.
    let resp = r
        .chat(
            "quinn",
            "198.51.100.60",
            json!({"message": question, "useRAG": true}),
        )
        .await;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();

    // What the model was given: instructions without any retrieved text; the sources in one
    // delimited block of a user message, one JSON object per line.
    let prompts = r.prompts().await;
    let p = prompts.last().unwrap();
    let messages = p["messages"].as_array().unwrap();
    let system = messages[0]["content"].as_str().unwrap();
    assert_eq!(messages[0]["role"], "system");
    for m in PAYLOAD_MARKERS {
        assert!(
            !system.to_lowercase().contains(m),
            "{m} in the instructions:\n{system}"
        );
    }

    assert_eq!(status, 200, "{body}");
    let citations = body["citations"].as_array().unwrap();
    assert!(citations.len() >= 3, "{body}");
    assert_harmless("answer", body["answer"].as_str().unwrap());
    for c in citations {
        let url = c["url"].as_str().unwrap();
        assert!(url.is_empty() || url.starts_with("https://"), "{c}");
        assert_no_controls("citation title", c["title"].as_str().unwrap());
        assert!(c["title"].as_str().unwrap().chars().count() <= 500);
    }
    for c in citations {
        let title = c["title"].as_str().unwrap();
        let all: Vec<&str> = title.split_whitespace().collect();
        let words = all[all.len().saturating_sub(4)..].join(" ");
        assert!(
            !system.contains(&words),
            "a source title in the instructions: {title}"
        );
    }
    let block = messages
        .iter()
        .skip(1)
        .find(|m| m["content"].as_str().unwrap().contains("<sources>"))
        .expect("a sources block");
    assert_eq!(block["role"], "user");
    let text = block["content"].as_str().unwrap();
    assert_eq!(text.matches("<sources>").count(), 1, "{text}");
    assert_eq!(text.matches("</sources>").count(), 1, "{text}");
    let inner = text
        .split_once("<sources>")
        .unwrap()
        .1
        .split_once("</sources>")
        .unwrap()
        .0;
    let lines: Vec<&str> = inner.trim().lines().collect();
    assert_eq!(lines.len(), citations.len());
    for (i, line) in lines.iter().enumerate() {
        let json_text = line.strip_prefix(&format!("[{}] ", i + 1)).unwrap();
        let v: Value = serde_json::from_str(json_text).unwrap();
        assert!(v["title"].is_string());
        assert!(!json_text.contains('<'), "{json_text}");
    }
    assert_eq!(messages.last().unwrap()["content"], question);

    // A streamed answer: the deltas the client renders as they come, and the final text.
    let (status, events) = r
        .chat_stream("quinn", json!({"message": question, "useRAG": true}))
        .await;
    assert_eq!(status, 200);
    let streamed = deltas(&events);
    assert_harmless("streamed answer", &streamed);
    let done = events.iter().find(|(n, _)| n == "done").unwrap();
    assert_eq!(done.1["answer"], streamed.as_str());

    // Every export format of the conversation.
    let conversation = body["conversationId"].as_str().unwrap();
    let export = |format: &'static str| {
        r.client
            .post(r.url("/api/export"))
            .bearer_auth(token("quinn"))
            .header("x-forwarded-for", "198.51.100.60")
            .json(&json!({"conversationId": conversation, "format": format}))
            .send()
    };
    let md = export("markdown").await.unwrap().text().await.unwrap();
    assert_harmless("markdown export", &md);
    let bib = export("bibtex").await.unwrap().text().await.unwrap();
    assert_no_controls("bibtex export", &bib);
    let depth = bib.chars().try_fold(0i32, |d, c| {
        let d = match c {
            '{' => d + 1,
            '}' => d - 1,
            _ => d,
        };
        (d >= 0).then_some(d)
    });
    assert_eq!(depth, Some(0), "unbalanced BibTeX:\n{bib}");
    assert_eq!(bib.matches("@article{").count(), citations.len(), "{bib}");
    assert!(!bib.contains("@misc"), "an injected entry:\n{bib}");
    let ris = export("ris").await.unwrap().text().await.unwrap();
    assert_no_controls("ris export", &ris);
    for line in ris.lines().filter(|l| !l.is_empty()) {
        let tag_ok = line.len() >= 6
            && line[..2]
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            && &line[2..6] == "  - ";
        assert!(tag_ok, "not a RIS tag line: {line:?}");
    }
    assert_eq!(ris.matches("TY  - JOUR").count(), citations.len());
    let js: Value = export("json").await.unwrap().json().await.unwrap();
    for m in js["messages"].as_array().unwrap() {
        assert_harmless("json export message", m["content"].as_str().unwrap());
    }
}
