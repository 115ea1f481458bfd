//! Markdown that is safe to render: no raw HTML, no images (a remote image is fetched by the
//! reader's client the moment it renders, telling a third party who read what and when), no link
//! to anything but an absolute http(s) URL (`javascript:`, `data:`, `vbscript:`...), and no numeric
//! character reference (`&#0;`, `&#27;`), which renderers would decode to a control character.
//!
//! Answers are streamed, so the guard works on a stream: [`MarkdownGuard::push`] takes the text as
//! it arrives and returns what can be sent now; a few characters are held back while they could
//! still start a dangerous construct (a trailing `!`, `&` or `]`, or a link destination not yet
//! long enough to tell). The output is plain CommonMark with a few escapes added:
//!
//! - every `<` becomes `&lt;` (no HTML block, inline tag or autolink can open);
//! - `![` becomes `!\[` (an image is shown as its text and URL, never fetched);
//! - `](` and `]:` are escaped (`]\(`, `]\:`) unless an http(s) URL follows, so an inline link or
//!   a reference definition with another scheme is shown as text;
//! - `&#` becomes `&amp;#`.
//!
//! Rendered, text reads the same (an escaped character shows as itself), except inside code
//! spans and blocks, where an escape shows literally: the price of deciding on a stream, without
//! the whole document. Applying the guard twice changes nothing, so stored answers are guarded
//! again on export.
//!
//! Hand-written rather than built on a Markdown parser: a parser decides on whole documents (a
//! reference definition at the end can turn earlier text into a link), while an answer must be
//! made safe piece by piece as it streams. The tests render the output with `pulldown-cmark`.

/// Significant characters (after `(` or `:`, spaces and one `<` skipped) needed to tell an
/// http(s) destination: `https://` is 8.
const SCHEME_PROBE: usize = 8;
/// Whitespace skipped before a destination before giving up on it being one.
const MAX_GAP: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// Nothing held back.
    None,
    /// A `!` that may start an image.
    Bang,
    /// A `&` that may start a numeric reference.
    Amp,
    /// A `]` that may end link text.
    Bracket,
    /// After `](` or `]:`: the start of a destination, in `dest`.
    Dest(u8),
}

/// The streaming guard (see the module doc).
#[derive(Debug, Clone)]
pub struct MarkdownGuard {
    held: Held,
    /// The destination seen so far after `](` / `]:`.
    dest: String,
}

impl Default for MarkdownGuard {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether `probe` (a destination's start, lower-case, spaces and `<` skipped) is, or could still
/// become, `http://` or `https://`.
fn could_be_http(probe: &str) -> bool {
    "https://".starts_with(probe) || "http://".starts_with(probe)
}

fn is_http(probe: &str) -> bool {
    probe.starts_with("https://") || probe.starts_with("http://")
}

impl MarkdownGuard {
    /// A guard at the start of a document.
    pub fn new() -> Self {
        MarkdownGuard {
            held: Held::None,
            dest: String::new(),
        }
    }

    /// Guards the next piece; returns what may be sent now.
    pub fn push(&mut self, piece: &str) -> String {
        let mut out = String::with_capacity(piece.len() + 8);
        for c in piece.chars() {
            self.feed(c, &mut out);
        }
        out
    }

    /// Ends the document: whatever was held back, guarded.
    pub fn finish(&mut self) -> String {
        let mut out = String::new();
        match std::mem::replace(&mut self.held, Held::None) {
            Held::None => {}
            Held::Bang => out.push('!'),
            Held::Amp => out.push('&'),
            Held::Bracket => out.push(']'),
            Held::Dest(sep) => self.reject_dest(sep, &mut out),
        }
        out
    }

    /// The held destination turned out not to be http(s): the separator is escaped and the
    /// destination text goes through the guard like any other text.
    fn reject_dest(&mut self, sep: u8, out: &mut String) {
        out.push_str(if sep == b'(' { "]\\(" } else { "]\\:" });
        let dest = std::mem::take(&mut self.dest);
        for c in dest.chars() {
            self.feed(c, out);
        }
    }

    fn feed(&mut self, c: char, out: &mut String) {
        match self.held {
            Held::Bang => {
                self.held = Held::None;
                out.push('!');
                if c == '[' {
                    out.push_str("\\[");
                    return;
                }
            }
            Held::Amp => {
                self.held = Held::None;
                if c == '#' {
                    out.push_str("&amp;#");
                    return;
                }
                out.push('&');
            }
            Held::Bracket => {
                self.held = Held::None;
                if c == '(' || c == ':' {
                    self.held = Held::Dest(if c == '(' { b'(' } else { b':' });
                    self.dest.clear();
                    return;
                }
                out.push(']');
            }
            Held::Dest(sep) => {
                self.dest.push(c);
                let gap = self
                    .dest
                    .chars()
                    .take_while(|c| c.is_whitespace() || *c == '<')
                    .count();
                let probe: String = self
                    .dest
                    .chars()
                    .skip(gap)
                    .take(SCHEME_PROBE)
                    .collect::<String>()
                    .to_ascii_lowercase();
                if is_http(&probe) {
                    self.held = Held::None;
                    out.push(']');
                    out.push(char::from(sep));
                    let dest = std::mem::take(&mut self.dest);
                    // `<` may open the destination; it is escaped like everywhere else.
                    out.push_str(&dest.replace('<', "&lt;"));
                } else if gap > MAX_GAP || !could_be_http(&probe) {
                    self.held = Held::None;
                    self.reject_dest(sep, out);
                }
                return;
            }
            Held::None => {}
        }
        match c {
            '<' => out.push_str("&lt;"),
            '!' => self.held = Held::Bang,
            '&' => self.held = Held::Amp,
            ']' => self.held = Held::Bracket,
            c => out.push(c),
        }
    }
}

/// A whole text through a fresh guard.
pub fn neutralise(text: &str) -> String {
    let mut g = MarkdownGuard::new();
    let mut out = g.push(text);
    out.push_str(&g.finish());
    out
}

/// A plain value (a title, an author) inside a Markdown line: whitespace collapsed to single
/// spaces, and every character with a meaning in inline Markdown backslash-escaped, so it renders
/// as exactly its text.
pub fn escape_inline(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 8);
    for (i, word) in v.split_whitespace().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        for c in word.chars() {
            if matches!(
                c,
                '\\' | '`'
                    | '*'
                    | '_'
                    | '['
                    | ']'
                    | '('
                    | ')'
                    | '<'
                    | '>'
                    | '&'
                    | '!'
                    | '|'
                    | '~'
                    | '#'
                    | '$'
            ) {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use pulldown_cmark::{Options, Parser, html};

    /// What a renderer makes of it (GitHub-flavoured extensions on).
    fn render(md: &str) -> String {
        let mut out = String::new();
        html::push_html(&mut out, Parser::new_ext(md, Options::all()));
        out
    }

    const HOSTILE: &[&str] = &[
        "<img src=x onerror=alert(1)>",
        "<script>alert(1)</script>",
        "<div>\n<iframe src=\"https://evil.example\"></iframe>\n</div>",
        "![tracker](https://evil.example/pixel.png)",
        "![ref][p]\n\n[p]: https://evil.example/p.png",
        "[click](javascript:alert(1))",
        "[click]( javascript:alert(1) )",
        "[click](<javascript:alert(1)>)",
        "[click](JaVaScRiPt:alert(1))",
        "[click](data:text/html;base64,PHNjcmlwdD4=)",
        "[click][x]\n\n[x]: javascript:alert(1)",
        "[click][x]\n\n[x]:\n  vbscript:msgbox",
        "<javascript:alert(1)>",
        "<https://fine.example>",
        "a &#0; b &#x1b; c &#27;",
        "[ok](https://pubmed.ncbi.nlm.nih.gov/1/)",
        "[x](http&#58;//evil)",
        "`<b>` and ```\n<b>\n```",
    ];

    /// No tag but the ones Markdown itself makes, no `src`, every link http(s), no control
    /// character decoded.
    fn safe(html: &str) -> bool {
        let lower = html.to_ascii_lowercase();
        ["<img", "<script", "<iframe", "<div"]
            .iter()
            .all(|t| !lower.contains(t))
            && !html.contains('\u{0}')
            && !html.contains('\u{1b}')
            && lower
                .match_indices("href=\"")
                .all(|(i, _)| lower[i + 6..].starts_with("http"))
    }

    #[test]
    fn hostile_markdown_renders_harmless() {
        let raw_unsafe = HOSTILE.iter().filter(|h| !safe(&render(h))).count();
        assert!(
            raw_unsafe >= 12,
            "the inputs are hostile as they stand: {raw_unsafe}"
        );
        for h in HOSTILE {
            let out = neutralise(h);
            let html = render(&out);
            assert!(safe(&html), "{h:?} -> {out:?} -> {html}");
            assert_eq!(neutralise(&out), out, "not idempotent: {h:?}");
        }
        // Allowed links stay links.
        let html = render(&neutralise(
            "[ok](https://pubmed.ncbi.nlm.nih.gov/1/) and [2](http://x.org)",
        ));
        assert!(
            html.contains("href=\"https://pubmed.ncbi.nlm.nih.gov/1/\""),
            "{html}"
        );
        assert!(html.contains("href=\"http://x.org\""), "{html}");
    }

    #[test]
    fn streamed_pieces_give_the_same_text() {
        for h in HOSTILE {
            let whole = neutralise(h);
            // Every split into one-character pieces, the worst case for held-back state.
            let mut g = MarkdownGuard::new();
            let mut out = String::new();
            for c in h.chars() {
                out.push_str(&g.push(&c.to_string()));
            }
            out.push_str(&g.finish());
            assert_eq!(out, whole, "{h:?}");
        }
    }

    #[test]
    fn plain_text_reads_the_same() {
        let t = "Metformin lowers HbA1c [1] (p < 0.05; 95% CI 1-2) in **most** trials [2][3]!";
        let html = render(&neutralise(t));
        assert!(html.contains("[1] (p &lt; 0.05; 95% CI 1-2)"), "{html}");
        assert!(html.contains("<strong>most</strong>"), "{html}");
        assert!(html.contains("[2][3]!"), "{html}");
    }

    #[test]
    fn inline_values_render_as_their_text() {
        for v in [
            "Title with [brackets](javascript:x) and ![img](http://e/p.png)",
            "<b>bold</b> &#0; *em* _u_ `code` | ~~s~~ \\",
        ] {
            let html = render(&escape_inline(v));
            assert!(
                !html.contains("<a") && !html.contains("<img") && !html.contains("<b>"),
                "{html}"
            );
            assert!(!html.contains("<em>") && !html.contains("<code>"), "{html}");
        }
        assert_eq!(escape_inline("a\n  b"), "a b");
    }
}
