//! The original request as a proxy describes it in its headers, read the
//! one way every proxy-facing route reads it (`/check` and its variants,
//! `POST /report`): the family of `server.forwarded_request`, believed only
//! from a trusted proxy (`request::forwarded`), the path normalised
//! (`path`), the method upper-cased, the client resolved (`client_ip`).

use std::borrow::Cow;
use std::net::SocketAddr;

use axum::http::{HeaderMap, Method};

use crate::app::App;
use crate::path::NormalPath;
use crate::request::forwarded::{self, Refusal, RefusalReason};
use crate::request::RequestView;

/// What `RequestView` borrows, owned where it had to be built.
pub struct Original<'h> {
    method: Cow<'h, str>,
    path: NormalPath,
    query: Option<&'h str>,
    host: Option<&'h str>,
    headers: &'h HeaderMap,
    client: std::net::IpAddr,
}

impl<'h> Original<'h> {
    /// Read the original request from `headers`, sent by `peer` to a route
    /// whose own method is `method`; `fallback_uri` when the proxy names no URI.
    pub fn read(
        app: &App,
        peer: SocketAddr,
        method: &'h Method,
        fallback_uri: &'h str,
        headers: &'h HeaderMap,
    ) -> Result<Original<'h>, Refusal> {
        let trusted = app.resolver.is_trusted(peer.ip());
        let family = app.config.server.forwarded_request;
        let original = forwarded::read(headers, family, trusted)?;
        let (raw_path, query) = RequestView::split_uri(original.uri.unwrap_or(fallback_uri));
        let path = crate::path::normalize(raw_path).map_err(|e| Refusal {
            field: if original.uri.is_some() {
                family.uri_header()
            } else {
                "path"
            },
            reason: RefusalReason::BadPath,
            message: e.to_string(),
        })?;
        let method = original.method.unwrap_or(method.as_str());
        let method = if method.bytes().any(|b| b.is_ascii_lowercase()) {
            Cow::Owned(method.to_ascii_uppercase())
        } else {
            Cow::Borrowed(method)
        };
        Ok(Original {
            method,
            path,
            query,
            host: original.host,
            headers,
            client: app.resolver.resolve(peer.ip(), headers),
        })
    }

    /// The request as the rules see it.
    pub fn view(&self, app: &App) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            path: &self.path.canonical,
            path_others: &self.path.others,
            query: self.query,
            host: self.host,
            headers: self.headers,
            client_ip: Some(self.client),
            client_key_ip: Some(app.resolver.key_ip(self.client)),
        }
    }
}
