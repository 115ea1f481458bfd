//! Control characters and bounded fields.
//!
//! Allowed: every character except the C0 and C1 control characters and DEL, tab and newline
//! excepted. PostgreSQL cannot store U+0000 in `text` or `jsonb`, terminals and log viewers act on
//! escape sequences, and bibliography formats end fields at line breaks they did not expect; none
//! of them belongs in a question, a title or an answer.

use std::borrow::Cow;

/// Whether `c` may appear in stored or returned text.
pub fn allowed(c: char) -> bool {
    !c.is_control() || c == '\t' || c == '\n'
}

/// The first character that is not [`allowed`], with its character index.
pub fn first_disallowed(s: &str) -> Option<(usize, char)> {
    s.chars().enumerate().find(|(_, c)| !allowed(*c))
}

/// `s` without the characters that are not [`allowed`] (a carriage return is dropped, so `\r\n`
/// becomes `\n`).
pub fn clean(s: &str) -> Cow<'_, str> {
    if s.chars().all(allowed) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(s.chars().filter(|c| allowed(*c)).collect())
    }
}

/// The code point of a numeric character reference body (`#65`, `#x41`), if it is one.
fn reference_value(body: &str) -> Option<u32> {
    let digits = body.strip_prefix('#')?;
    let (digits, radix) = match digits.strip_prefix(['x', 'X']) {
        Some(hex) => (hex, 16),
        None => (digits, 10),
    };
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    u32::from_str_radix(digits, radix).ok()
}

/// Text from an upstream, made safe to store and render: [`clean`], and numeric character
/// references that would decode to a character that is not [`allowed`] (`&#0;`, `&#x1b;`) or to
/// no character at all are removed, so no later decoder (an HTML or Markdown renderer, a
/// reference manager) can bring the control character back. Then cut to `max_chars`.
pub fn clean_upstream(s: &str, max_chars: usize) -> String {
    let s = clean(s);
    let mut out = String::with_capacity(s.len().min(max_chars.saturating_mul(4)));
    let mut rest: &str = &s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let end = after.find(';').filter(|e| *e <= 10);
        let bad = end
            .and_then(|e| reference_value(&after[..e]))
            .map(|v| char::from_u32(v).is_none_or(|c| !allowed(c)));
        match (end, bad) {
            (Some(e), Some(true)) => rest = &after[e + 1..],
            _ => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    if out.chars().count() > max_chars {
        out = out.chars().take(max_chars).collect();
    }
    out
}

/// `url` if it is an absolute http(s) URL without spaces or control characters, else `None`.
pub fn http_url(url: &str) -> Option<&str> {
    let u = url.trim();
    let lower = u.get(..8).unwrap_or(u).to_ascii_lowercase();
    let scheme_ok = lower.starts_with("https://") || lower.starts_with("http://");
    (scheme_ok && u.len() <= 2048 && !u.chars().any(|c| c.is_whitespace() || c.is_control()))
        .then_some(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_other_than_tab_and_newline_go() {
        assert_eq!(first_disallowed("a\tb\nc"), None);
        assert_eq!(first_disallowed("ab\u{0}"), Some((2, '\u{0}')));
        assert_eq!(first_disallowed("\u{1b}[31m"), Some((0, '\u{1b}')));
        assert_eq!(first_disallowed("x\u{85}"), Some((1, '\u{85}')));
        assert_eq!(first_disallowed("x\r\n"), Some((1, '\r')));
        assert_eq!(clean("a\u{0}b\r\nc\u{7f}"), "ab\nc");
        assert!(matches!(clean("fine\ttext\n"), Cow::Borrowed(_)));
    }

    #[test]
    fn references_to_controls_are_removed() {
        assert_eq!(clean_upstream("a&#0;b", 100), "ab");
        assert_eq!(clean_upstream("a&#x1B;[31mb", 100), "a[31mb");
        assert_eq!(clean_upstream("&#27;&#X7f;&#1114112;&#xD800;", 100), "");
        assert_eq!(
            clean_upstream("p &lt; 0.05 &amp; &#65; &#10; & ; &#;", 100),
            "p &lt; 0.05 &amp; &#65; &#10; & ; &#;"
        );
        assert_eq!(clean_upstream("a\u{0}&#0;\u{1b}b", 100), "ab");
        assert_eq!(clean_upstream("abcdef", 3), "abc");
    }

    #[test]
    fn only_http_urls() {
        assert_eq!(http_url("https://x.org/a?b=c"), Some("https://x.org/a?b=c"));
        assert_eq!(http_url(" HTTP://x.org "), Some("HTTP://x.org"));
        for bad in [
            "javascript:alert(1)",
            "data:text/html,x",
            "//x.org",
            "/relative",
            "https://x.org/a b",
            "ftp://x.org",
            "",
        ] {
            assert_eq!(http_url(bad), None, "{bad}");
        }
    }
}
