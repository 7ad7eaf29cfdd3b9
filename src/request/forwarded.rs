//! Which headers describe the original request, and from whom they are believed.
//!
//! The same trust as the client address (`client_ip`): a peer that is not in
//! `client_ip.trusted_proxies` may not name another request. From a trusted
//! proxy, exactly one header family is read (`server.forwarded_request`):
//!
//! | family                  | URI                | method              | host               |
//! |-------------------------|--------------------|---------------------|--------------------|
//! | `x-forwarded` (default) | `X-Forwarded-Uri`  | `X-Forwarded-Method`| `X-Forwarded-Host`, else `Host` |
//! | `x-original`            | `X-Original-URI`   | `X-Original-Method` | `X-Forwarded-Host`, else `Host` |
//!
//! The other family's headers are the client's own (nginx's `auth_request`,
//! Caddy's `forward_auth` and Traefik's `forwardAuth` copy every client
//! header) and are never read. Refused, because they mean a misconfigured
//! proxy or a spoof and guessing could skip a rule:
//! - the family's headers or `X-Forwarded-Host` from an untrusted peer;
//! - the other family's URI or method from a trusted proxy that did not send
//!   the family's own (the proxy speaks the other family: the config is wrong);
//! - one of them sent twice (a proxy that appended instead of overwriting);
//! - a host holding `,` or white space.

use axum::http::{HeaderMap, HeaderName};

use crate::named::named_enum;

/// `server.forwarded_request`: the header family the proxies set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ForwardedRequest {
    /// `X-Forwarded-Uri`, `X-Forwarded-Method`: what Caddy, Traefik and the
    /// shipped nginx and HAProxy configs send.
    #[default]
    XForwarded,
    /// `X-Original-URI`, `X-Original-Method`: the classic nginx `auth_request` recipe.
    XOriginal,
}

impl ForwardedRequest {
    pub fn uri_header(self) -> &'static str {
        match self {
            ForwardedRequest::XForwarded => "x-forwarded-uri",
            ForwardedRequest::XOriginal => "x-original-uri",
        }
    }

    pub fn method_header(self) -> &'static str {
        match self {
            ForwardedRequest::XForwarded => "x-forwarded-method",
            ForwardedRequest::XOriginal => "x-original-method",
        }
    }

    fn other(self) -> ForwardedRequest {
        match self {
            ForwardedRequest::XForwarded => ForwardedRequest::XOriginal,
            ForwardedRequest::XOriginal => ForwardedRequest::XForwarded,
        }
    }
}

named_enum!(ForwardedRequest, "header family", {
    "x-forwarded" => XForwarded,
    "x-original" => XOriginal,
});

/// What the proxy said about the original request; `None`: not said (the
/// request itself is the original: its own method, and the path of
/// `/check/<path>`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Original<'a> {
    pub uri: Option<&'a str>,
    pub method: Option<&'a str>,
    /// Without port and trailing dot.
    pub host: Option<&'a str>,
}

/// Why the headers cannot be believed; `field` is the header at fault.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub field: &'static str,
    pub reason: RefusalReason,
    pub message: String,
}

/// The label of `tollgate_refused_requests_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalReason {
    UntrustedPeer,
    WrongFamily,
    Duplicate,
    /// A byte outside visible ASCII (>= 0x80, or a control byte).
    NotAscii,
    BadHost,
    BadPath,
}

impl RefusalReason {
    pub fn label(self) -> &'static str {
        match self {
            RefusalReason::UntrustedPeer => "untrusted_peer",
            RefusalReason::WrongFamily => "wrong_header_family",
            RefusalReason::Duplicate => "duplicate_header",
            RefusalReason::NotAscii => "not_ascii",
            RefusalReason::BadHost => "bad_host",
            RefusalReason::BadPath => "bad_path",
        }
    }
}

/// Read the original request's URI, method and host from `headers`, sent by
/// a peer that is (`trusted`) or is not in `client_ip.trusted_proxies`.
pub fn read(
    headers: &HeaderMap,
    family: ForwardedRequest,
    trusted: bool,
) -> Result<Original<'_>, Refusal> {
    let own = [
        family.uri_header(),
        family.method_header(),
        "x-forwarded-host",
    ];
    if !trusted {
        if let Some(name) = own.into_iter().find(|n| headers.contains_key(*n)) {
            return Err(Refusal {
                field: name,
                reason: RefusalReason::UntrustedPeer,
                message: format!("{name} from a peer that is not in client_ip.trusted_proxies: only a trusted proxy may describe the original request"),
            });
        }
        let host = one(headers, "host")?.map(bare_host).transpose()?;
        return Ok(Original {
            uri: None,
            method: None,
            host,
        });
    }
    let uri = one(headers, family.uri_header())?;
    let method = one(headers, family.method_header())?;
    let other = family.other();
    for (mine, theirs, said) in [
        (family.uri_header(), other.uri_header(), uri),
        (family.method_header(), other.method_header(), method),
    ] {
        if said.is_none()
            && known(theirs)
                .map_or_else(|| headers.contains_key(theirs), |n| headers.contains_key(n))
        {
            return Err(Refusal {
                field: mine,
                reason: RefusalReason::WrongFamily,
                message: format!("server.forwarded_request is {family:?} but the proxy sent {theirs} and no {mine}: make the proxy set {mine}, or set server.forwarded_request = \"{other}\"", family = family.to_string()),
            });
        }
    }
    let host = match one(headers, "x-forwarded-host")? {
        Some(h) => Some(h),
        None => one(headers, "host")?,
    };
    Ok(Original {
        uri,
        method,
        host: host.map(bare_host).transpose()?,
    })
}

/// The names this module reads, parsed once: a name given as `&str` is
/// validated and lower-cased on every lookup (several per decision).
fn known(name: &str) -> Option<&'static HeaderName> {
    static URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
    static METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
    static ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
    static ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
    static HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    Some(match name {
        "x-forwarded-uri" => &URI,
        "x-forwarded-method" => &METHOD,
        "x-original-uri" => &ORIGINAL_URI,
        "x-original-method" => &ORIGINAL_METHOD,
        "x-forwarded-host" => &HOST,
        "host" => &axum::http::header::HOST,
        _ => return None,
    })
}

/// The value of a header sent at most once; twice is refused: a proxy
/// appended its value to the client's instead of replacing it.
fn one<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<Option<&'a str>, Refusal> {
    let mut values = match known(name) {
        Some(n) => headers.get_all(n).iter(),
        None => headers.get_all(name).iter(),
    };
    let Some(first) = values.next() else {
        return Ok(None);
    };
    let refuse = |reason, what: &str| Refusal {
        field: name,
        reason,
        message: format!("{name} {what}"),
    };
    if values.next().is_some() {
        return Err(refuse(
            RefusalReason::Duplicate,
            "was sent more than once: the proxy must replace the client's copy, not add to it",
        ));
    }
    first.to_str().map(Some).map_err(|_| {
        refuse(
            RefusalReason::NotAscii,
            "is not visible ASCII (a proxy must percent-encode the URI)",
        )
    })
}

/// `Example.com.:8080` is `Example.com` (case is ignored by matching).
fn bare_host(host: &str) -> Result<&str, Refusal> {
    if host.is_empty() || host.bytes().any(|b| b == b',' || b.is_ascii_whitespace()) {
        return Err(Refusal {
            field: "x-forwarded-host",
            reason: RefusalReason::BadHost,
            message: format!("{host:?} is not one host name"),
        });
    }
    let h = crate::request::RequestView::strip_port(host);
    Ok(h.strip_suffix('.').filter(|h| !h.is_empty()).unwrap_or(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    const XF: ForwardedRequest = ForwardedRequest::XForwarded;
    const XO: ForwardedRequest = ForwardedRequest::XOriginal;

    #[test]
    fn only_the_configured_family_is_read_and_the_other_is_ignored() {
        let h = headers(&[
            ("x-forwarded-uri", "/login"),
            ("x-forwarded-method", "POST"),
            ("x-original-uri", "/spoof"),
            ("x-original-method", "GET"),
            ("x-forwarded-host", "Example.com:8000"),
            ("host", "tollgate"),
        ]);
        let o = read(&h, XF, true).unwrap();
        assert_eq!(
            o,
            Original {
                uri: Some("/login"),
                method: Some("POST"),
                host: Some("Example.com")
            }
        );
        let o = read(&h, XO, true).unwrap();
        assert_eq!((o.uri, o.method), (Some("/spoof"), Some("GET")));
    }

    #[test]
    fn an_untrusted_peer_cannot_describe_another_request() {
        for name in ["x-forwarded-uri", "x-forwarded-method", "x-forwarded-host"] {
            let e = read(&headers(&[(name, "x")]), XF, false).unwrap_err();
            assert_eq!((e.field, e.reason), (name, RefusalReason::UntrustedPeer));
        }
        // The other family is a client's own header: ignored, not believed.
        let h = headers(&[("x-original-uri", "/x"), ("host", "a.example")]);
        let o = read(&h, XF, false).unwrap();
        assert_eq!(
            o,
            Original {
                uri: None,
                method: None,
                host: Some("a.example")
            }
        );
    }

    #[test]
    fn a_proxy_speaking_the_other_family_is_refused_not_guessed() {
        let e = read(&headers(&[("x-original-uri", "/login")]), XF, true).unwrap_err();
        assert_eq!(
            (e.field, e.reason),
            ("x-forwarded-uri", RefusalReason::WrongFamily)
        );
        assert!(
            e.message.contains("server.forwarded_request"),
            "{}",
            e.message
        );
        let e = read(&headers(&[("x-forwarded-method", "POST")]), XO, true).unwrap_err();
        assert_eq!(e.field, "x-original-method");
        // Neither family: the request itself is the original (Envoy's /check/<path>).
        assert_eq!(read(&headers(&[]), XF, true).unwrap(), Original::default());
    }

    #[test]
    fn a_byte_beyond_ascii_is_refused_as_not_ascii_not_as_a_duplicate() {
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-uri",
            axum::http::HeaderValue::from_bytes(b"/caf\xc3\xa9").unwrap(),
        );
        let e = read(&h, XF, true).unwrap_err();
        assert_eq!(e.reason, RefusalReason::NotAscii);
        assert_eq!(e.reason.label(), "not_ascii");
        assert_eq!(e.field, "x-forwarded-uri");
    }

    #[test]
    fn appended_copies_and_lists_of_hosts_are_refused() {
        let e = read(
            &headers(&[("x-forwarded-uri", "/spoof"), ("x-forwarded-uri", "/login")]),
            XF,
            true,
        )
        .unwrap_err();
        assert_eq!(e.reason, RefusalReason::Duplicate);
        let e = read(
            &headers(&[("x-forwarded-host", "evil.example, a.example")]),
            XF,
            true,
        )
        .unwrap_err();
        assert_eq!(e.reason, RefusalReason::BadHost);
        let h = headers(&[("x-forwarded-host", "a.example.")]);
        let o = read(&h, XF, true).unwrap();
        assert_eq!(o.host, Some("a.example"));
    }

    #[test]
    fn families_parse_and_print() {
        assert_eq!("x-original".parse::<ForwardedRequest>(), Ok(XO));
        assert_eq!(XF.to_string(), "x-forwarded");
        assert!("both"
            .parse::<ForwardedRequest>()
            .unwrap_err()
            .to_string()
            .contains("x-forwarded"));
    }
}
