//! The browser pages: `GET /` (the chat page) and `GET /admin` (the fleet console), and their
//! static assets under `/assets/`. Everything is plain HTML, CSS and ES modules from
//! `crates/api/web/`, embedded in the binary: no build step, nothing fetched from elsewhere.
//!
//! Every response of these routes carries a strict Content-Security-Policy (this origin only; no
//! inline script or style, no framing), `nosniff` and `no-referrer`. The pages keep their token in
//! `sessionStorage` and send it as a bearer header: the API behind them is unchanged, and a token
//! never travels in a URL the server sees (the sign-in link carries it in the fragment).

use axum::Router;
use axum::extract::{Path, Request};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::{Next, from_fn};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::error::ApiError;
use crate::state::AppState;

/// The policy of every page and asset.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
#[derive(Debug)]
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($name:literal, $ct:expr) => {
        Asset {
            name: $name,
            content_type: $ct,
            body: include_str!(concat!("../../web/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("session.js", JS),
    asset!("api.js", JS),
    asset!("refusal.js", JS),
    asset!("chat.js", JS),
    asset!("admin.js", JS),
    asset!("favicon.svg", "image/svg+xml"),
];

const CHAT_HTML: &str = include_str!("../../web/chat.html");
const ADMIN_HTML: &str = include_str!("../../web/admin.html");
const HTML: &str = "text/html; charset=utf-8";

/// The pages and assets, with their security headers.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(chat_page))
        .route("/admin", get(admin_page))
        .route("/assets/{name}", get(asset))
        .layer(from_fn(security_headers))
}

async fn chat_page() -> Response {
    ([(header::CONTENT_TYPE, HTML)], CHAT_HTML).into_response()
}

async fn admin_page() -> Response {
    ([(header::CONTENT_TYPE, HTML)], ADMIN_HTML).into_response()
}

async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    let a = ASSETS
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| ApiError::NotFound("no such asset".into()))?;
    Ok(([(header::CONTENT_TYPE, a.content_type)], a.body).into_response())
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("permissions-policy"),
            "camera=(), microphone=(), geolocation=(), payment=()",
        ),
        // Small files, revalidated on each load: a new version is seen at once after a deploy.
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    resp
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Every script, stylesheet and link a page names is an embedded asset or the other page: the
    /// pages name nothing outside this origin (the CSP would block it; this finds it before a
    /// browser does), and nothing inline.
    #[test]
    fn pages_reference_only_embedded_assets() {
        for page in [CHAT_HTML, ADMIN_HTML] {
            for attr in ["src=\"", "href=\""] {
                for part in page.split(attr).skip(1) {
                    let url = part.split('"').next().unwrap();
                    // Links between the two pages.
                    if matches!(url, "/" | "/admin") {
                        continue;
                    }
                    let name = url
                        .strip_prefix("/assets/")
                        .unwrap_or_else(|| panic!("{url}: not an embedded asset"));
                    assert!(
                        ASSETS.iter().any(|a| a.name == name),
                        "{name} is not embedded"
                    );
                }
            }
            assert!(!page.contains("style=\""), "inline style attribute");
            assert!(!page.contains("<script>"), "inline script");
            let handler = page.split(" on").skip(1).any(|rest| {
                let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
                !name.is_empty() && rest[name.len()..].starts_with('=')
            });
            assert!(!handler, "inline event handler");
        }
    }

    /// Modules import only embedded modules, by absolute path.
    #[test]
    fn modules_import_only_embedded_modules() {
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            for line in a.body.lines().filter(|l| l.starts_with("import ")) {
                let from = line.rsplit("from ").next().unwrap();
                let name = from
                    .trim_matches(|c| c == '"' || c == ';' || c == '\'')
                    .strip_prefix("/assets/")
                    .unwrap_or_else(|| panic!("{}: {line}", a.name));
                assert!(ASSETS.iter().any(|b| b.name == name), "{name}");
            }
        }
    }
}
