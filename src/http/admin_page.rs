//! The admin page: one HTML file, its script and its style sheet, compiled
//! into the binary (no build step, no external assets) and served on the
//! admin listener only, at `/`.
//!
//! The page holds no secret and no data: it asks the admin API
//! (`/v1/status`, `/v1/rules`, `/v1/allowlist…`, `/v1/overrides…`,
//! `/v1/limits…`) with the
//! bearer token the operator types, kept in the tab's `sessionStorage` and
//! sent as `Authorization` (never a cookie, so no other site can make the
//! browser act with it). Every value from data is put in the page with
//! `textContent`, and the Content-Security-Policy below forbids inline
//! scripts and styles and every other origin, so a note such as
//! `<img src=x onerror=…>` stays text even if a bug tried to render it.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::HeaderName;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("admin_page/index.html");
const APP_JS: &str = include_str!("admin_page/app.js");
const APP_CSS: &str = include_str!("admin_page/app.css");

/// Only this origin's files; scripts and styles from files, never inline;
/// no frames, no forms posting elsewhere, no `<base>`.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { page("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { page("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { page("text/css; charset=utf-8", APP_CSS) }),
        )
}

fn page(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, content_type),
            (HeaderName::from_static("content-security-policy"), CSP),
            (HeaderName::from_static("x-content-type-options"), "nosniff"),
            (HeaderName::from_static("referrer-policy"), "no-referrer"),
            (HeaderName::from_static("x-frame-options"), "DENY"),
            // A new binary's page is read at once, never an old cached script.
            (CACHE_CONTROL, "no-store"),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Data reaches the page only as text: no API in the script parses a
    /// string as markup (the browser tests show a markup note stays text).
    #[test]
    fn the_script_never_parses_strings_as_markup() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "DOMParser",
            "createContextualFragment",
        ] {
            assert!(!APP_JS.contains(sink), "app.js uses {sink}");
        }
    }

    /// The CSP forbids inline code; the HTML has none that would break.
    #[test]
    fn the_page_has_no_inline_script_style_or_handler() {
        let html = INDEX_HTML.to_ascii_lowercase();
        assert_eq!(html.matches("<script").count(), 1);
        assert!(html.contains(r#"<script src="/ui/app.js" defer></script>"#));
        assert!(!html.contains("<style"));
        assert!(!html.contains(" style="));
        // An event handler attribute: ` on` + letters + `=`.
        let handler = html.match_indices(" on").any(|(i, _)| {
            let rest = &html[i + 3..];
            let name_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            name_len > 0 && rest[name_len..].starts_with('=')
        });
        assert!(!handler, "no inline event handler attributes");
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no other origin"
        );
    }
}
