//! Text that crosses a trust boundary: what users send ([`clean::first_disallowed`] refuses
//! control characters up front), what upstreams send ([`clean::clean_upstream`] strips them and
//! the character references that would decode to them, before anything is stored), and the
//! Markdown answers and exports hand to renderers ([`markdown::MarkdownGuard`] neutralises raw
//! HTML, images and links that are not http(s)).
//!
//! Layout: `clean.rs` (control characters, field bounds), `markdown.rs` (the streaming guard and
//! the escaping of plain values inside Markdown).

pub mod clean;
pub mod markdown;

pub use clean::{clean, clean_upstream, first_disallowed, http_url};
pub use markdown::{MarkdownGuard, escape_inline, neutralise};
