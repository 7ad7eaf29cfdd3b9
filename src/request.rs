//! The original request a proxy asks about, as the rules see it.
//! `forwarded` decides which headers describe it and from whom they are believed.

pub mod forwarded;

use std::net::IpAddr;

use axum::http::HeaderMap;

/// Borrowed view of the request being decided; building one allocates nothing.
pub struct RequestView<'a> {
    pub method: &'a str,
    /// Path without the query string, normalised (`path::normalize`): what
    /// rules match and the `path` key part uses.
    pub path: &'a str,
    /// Other readings of an ambiguous path (`;`, encoded slashes); a rule's
    /// path condition holds when `path` or any of these satisfies it.
    pub path_others: &'a [String],
    pub query: Option<&'a str>,
    /// Host without port.
    pub host: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// The resolved client address (see `client_ip`), canonical.
    pub client_ip: Option<IpAddr>,
    /// `client_ip` as the `ip` key part uses it (IPv6 reduced to its network).
    pub client_key_ip: Option<IpAddr>,
}

impl<'a> RequestView<'a> {
    /// Split `/a/b?x=1` into path and query.
    pub fn split_uri(uri: &'a str) -> (&'a str, Option<&'a str>) {
        match uri.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (uri, None),
        }
    }

    /// Strip a port from `example.com:8080` or `[::1]:80`.
    pub fn strip_port(host: &'a str) -> &'a str {
        if let Some(rest) = host.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest);
        }
        match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
            _ => host,
        }
    }

    /// First value of a query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query?.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_and_host_split() {
        assert_eq!(RequestView::split_uri("/a?b=1"), ("/a", Some("b=1")));
        assert_eq!(RequestView::split_uri("/a"), ("/a", None));
        assert_eq!(RequestView::strip_port("Example.com:8080"), "Example.com");
        assert_eq!(RequestView::strip_port("[::1]:80"), "::1");
        assert_eq!(RequestView::strip_port("::1"), "::1");
    }
}
