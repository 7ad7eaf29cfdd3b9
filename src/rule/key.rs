//! The key a rule counts by: a `+`-joined template such as `ip` or `ip+header:x-user`.

use std::fmt;

use crate::keys::bounded_part;
use crate::request::RequestView;

/// An address as `Display` writes it; IPv4 octet by octet (once per decision).
fn push_ip(out: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push((b'0' + octet / 100) as char);
                }
                if octet >= 10 {
                    out.push((b'0' + octet / 10 % 10) as char);
                }
                out.push((b'0' + octet % 10) as char);
            }
        }
        v6 => {
            use std::fmt::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyPart {
    /// The client address (IPv6 reduced to its `client_ip.ipv6_prefix` network).
    Ip,
    /// A request header, name stored lower-case.
    Header(String),
    Query(String),
    Path,
    Host,
    Method,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyTemplate(pub Vec<KeyPart>);

impl KeyTemplate {
    /// Parse `ip+header:X-User`; the error names the bad part.
    pub fn parse(text: &str) -> Result<Self, UnknownKeyPart> {
        let mut parts = Vec::new();
        for part in text.split('+') {
            let part = part.trim();
            let parsed = match part.split_once(':') {
                None => match part {
                    "ip" => KeyPart::Ip,
                    "path" => KeyPart::Path,
                    "host" => KeyPart::Host,
                    "method" => KeyPart::Method,
                    _ => return Err(unknown(part)),
                },
                Some(("header", name)) if valid_name(name) => {
                    KeyPart::Header(name.to_ascii_lowercase())
                }
                Some(("query", name)) if !name.is_empty() => KeyPart::Query(name.to_string()),
                Some(_) => return Err(unknown(part)),
            };
            parts.push(parsed);
        }
        Ok(KeyTemplate(parts))
    }

    /// The key value for a client address alone: `Some` when the template is
    /// just `ip` (a report names a client, not a request).
    pub fn for_client(&self, ip: std::net::IpAddr) -> Option<String> {
        match self.0.as_slice() {
            [KeyPart::Ip] => {
                let mut out = String::with_capacity(40);
                push_ip(&mut out, ip);
                Some(out)
            }
            _ => None,
        }
    }

    /// The key value for a request, or `None` when a part is missing
    /// (no such header): the rule then does not apply to this request.
    /// Each part is bounded (`keys::bounded_part`): at most 128 bytes verbatim.
    pub fn build(&self, req: &RequestView<'_>) -> Option<String> {
        let mut out = String::with_capacity(48);
        for (i, part) in self.0.iter().enumerate() {
            if i > 0 {
                out.push('+');
            }
            match part {
                KeyPart::Ip => push_ip(&mut out, req.client_key_ip?),
                KeyPart::Header(name) => {
                    let value = req.headers.get(name.as_str())?.to_str().ok()?;
                    out.push_str(&bounded_part(value));
                }
                KeyPart::Query(name) => out.push_str(&bounded_part(&req.query_param(name)?)),
                KeyPart::Path => out.push_str(&bounded_part(req.path)),
                KeyPart::Host => out.push_str(&bounded_part(req.host?)),
                KeyPart::Method => out.push_str(&bounded_part(req.method)),
            }
        }
        Some(out)
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A key template part that names nothing a key can be built from.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown key part {0:?} (expected ip, path, host, method, header:NAME or query:NAME, joined with '+')")]
pub struct UnknownKeyPart(pub String);

fn unknown(part: &str) -> UnknownKeyPart {
    UnknownKeyPart(part.to_string())
}

impl fmt::Display for KeyTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, part) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            match part {
                KeyPart::Ip => f.write_str("ip")?,
                KeyPart::Header(n) => write!(f, "header:{n}")?,
                KeyPart::Query(n) => write!(f, "query:{n}")?,
                KeyPart::Path => f.write_str("path")?,
                KeyPart::Host => f.write_str("host")?,
                KeyPart::Method => f.write_str("method")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_parts_are_written_as_display_writes_them() {
        for text in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.100.9",
            "198.18.39.16",
            "2001:db8::1",
        ] {
            let ip: std::net::IpAddr = text.parse().unwrap();
            let mut out = String::new();
            push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string());
        }
    }

    #[test]
    fn templates_parse_and_print() {
        let t = KeyTemplate::parse("ip+header:X-User+query:id+path+host+method").unwrap();
        assert_eq!(t.to_string(), "ip+header:x-user+query:id+path+host+method");
        assert!(KeyTemplate::parse("ip+cookie:sid")
            .unwrap_err()
            .to_string()
            .contains("cookie:sid"));
        assert!(KeyTemplate::parse("").is_err());
        assert!(KeyTemplate::parse("header:").is_err());
    }
}
