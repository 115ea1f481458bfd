//! The simulated LLM's "reasoning": a deterministic answer built only from the prompt, so tests
//! can check it. Numbered sources in the prompt (lines starting `[n] `) are each mentioned and
//! cited as `[n]`; the last user question is echoed as a short summary of its key words.

/// A numbered source found in the prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub number: u32,
    /// The line after `[n] `, shortened.
    pub title: String,
}

/// Most sources cited in one answer.
const MAX_SOURCES: usize = 20;
/// Most words kept in the question summary.
const SUMMARY_WORDS: usize = 10;

const STOPWORDS: &[&str] = &[
    "a", "an", "the", "of", "in", "for", "with", "on", "to", "and", "or", "is", "are", "was",
    "were", "does", "do", "did", "what", "which", "how", "why", "when", "who", "can", "could",
    "should", "would", "it", "its", "be", "by", "at", "as", "about", "please", "tell", "me", "i",
    "you", "my", "there", "any",
];

/// Lines like `[3] Some title...` (leading whitespace allowed), in order, first occurrence wins.
/// A line whose text is a JSON object (`[3] {"title": "...", ...}`, how fleetgate hands sources
/// over as data) contributes its `title`.
pub fn sources(text: &str) -> Vec<Source> {
    let mut out: Vec<Source> = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        let Some(rest) = line.strip_prefix('[') else {
            continue;
        };
        let Some((num, after)) = rest.split_once(']') else {
            continue;
        };
        if num.is_empty() || num.len() > 4 || !num.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Some(title) = after.strip_prefix(' ') else {
            continue;
        };
        let title = source_title(title.trim());
        let title = shorten(&title, 90);
        let Ok(number) = num.parse::<u32>() else {
            continue;
        };
        if title.is_empty() || out.iter().any(|s| s.number == number) {
            continue;
        }
        out.push(Source { number, title });
        if out.len() >= MAX_SOURCES {
            break;
        }
    }
    out
}

/// The title of a source line's text: the `title` of a JSON object, or the text itself.
fn source_title(text: &str) -> String {
    if text.starts_with('{')
        && let Ok(serde_json::Value::Object(o)) = serde_json::from_str(text)
        && let Some(t) = o.get("title").and_then(serde_json::Value::as_str)
    {
        return t.split_whitespace().collect::<Vec<_>>().join(" ");
    }
    text.to_string()
}

fn shorten(s: &str, max_chars: usize) -> String {
    let cut: String = s.chars().take(max_chars).collect();
    let cut = if cut.len() < s.len() {
        // Cut at a word boundary so the title stays readable.
        match cut.rfind(' ') {
            Some(i) if i > 20 => cut[..i].to_string(),
            _ => cut,
        }
    } else {
        cut
    };
    cut.trim_end_matches(|c: char| {
        c == '.' || c == ',' || c == ':' || c == ';' || c.is_whitespace()
    })
    .to_string()
}

/// Key words of a question, lower-cased, stop words and source lines removed, at most 10.
pub fn summarize(question: &str) -> String {
    let words: Vec<String> = question
        .lines()
        .filter(|l| !l.trim_start().starts_with('['))
        .flat_map(|l| l.split(|c: char| !(c.is_alphanumeric() || c == '-')))
        .map(|w| w.trim_matches('-').to_lowercase())
        .filter(|w| !w.is_empty() && !STOPWORDS.contains(&w.as_str()))
        .take(SUMMARY_WORDS)
        .collect();
    words.join(" ")
}

/// The full answer for a conversation given as (role, content) pairs.
pub fn compose(messages: &[(String, String)]) -> String {
    let all: String = messages
        .iter()
        .map(|(_, c)| c.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let found = sources(&all);
    let question = messages
        .iter()
        .rev()
        .find(|(r, _)| r == "user")
        .map(|(_, c)| c.as_str())
        .unwrap_or("");
    let summary = summarize(question);
    let summary = if summary.is_empty() {
        "(no question given)".to_string()
    } else {
        summary
    };

    let mut out = format!("Question summary: {summary}.");
    if found.is_empty() {
        out.push_str(
            " No numbered sources were provided, so this answer relies on general knowledge only. \
             Clinical decisions should follow current guidelines and the judgement of a qualified clinician.",
        );
        return out;
    }
    out.push_str(&format!(" Based on the {} provided sources:", found.len()));
    for (i, s) in found.iter().enumerate() {
        let verb = match i % 3 {
            0 => "reports findings relevant to this question",
            1 => "adds further evidence",
            _ => "offers a complementary perspective",
        };
        out.push_str(&format!(" {} [{}] {verb}.", s.title, s.number));
    }
    let cites: String = found.iter().map(|s| format!("[{}]", s.number)).collect();
    out.push_str(&format!(
        " Taken together, the evidence {cites} should be weighed by study design and population before drawing conclusions."
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cites_every_numbered_source() {
        let sys = "Use these sources:\n[1] Metformin and mortality in type 2 diabetes.\n  [2] Effect of exercise on HbA1c\n[x] not a source\n[3]no space\n".to_string();
        let msgs = vec![
            ("system".into(), sys),
            (
                "user".into(),
                "Does metformin reduce mortality in diabetes?".into(),
            ),
        ];
        let a = compose(&msgs);
        assert!(
            a.contains("Metformin and mortality in type 2 diabetes [1]"),
            "{a}"
        );
        assert!(a.contains("Effect of exercise on HbA1c [2]"), "{a}");
        assert!(!a.contains("[3]"), "{a}");
        assert!(
            a.starts_with("Question summary: metformin reduce mortality diabetes."),
            "{a}"
        );
        assert_eq!(a, compose(&msgs));
    }

    #[test]
    fn json_source_lines_give_their_title() {
        let block = "<sources>\n[1] {\"title\":\"Statins \\u003cb\\u003e and stroke\",\"year\":2020}\n</sources>";
        let found = sources(block);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].title, "Statins <b> and stroke");
    }

    #[test]
    fn no_sources_no_citations() {
        let a = compose(&[("user".into(), "Hi?".into())]);
        assert!(!a.contains('['));
        assert!(a.starts_with("Question summary: hi."));
        assert!(compose(&[]).contains("(no question given)"));
    }
}
