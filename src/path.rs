//! Request paths as rules see them: normalised, so that no spelling of a path
//! an app would serve as `/admin` escapes a rule written for `/admin`.
//!
//! The canonical form (what `match.path`/`path_prefix` test and the `path`
//! key part holds):
//!
//! - every `%XX` is decoded, then re-encoded one way: unreserved characters
//!   and sub-delimiters (`!$&'()*+,=`, `:`, `@`) literal, everything else as
//!   upper-case `%XX` (`/%61dmin` is `/admin`, `/a%21` is `/a!`, a space is `%20`);
//! - `%2F`, `%5C` and `\` separate segments like `/` does;
//! - `;params` are cut from each segment (`/admin;jsessionid=1` is `/admin`);
//!   an encoded `%3B` is data and stays;
//! - dot segments are removed (RFC 3986 5.2.4, `..` stops at the root),
//!   repeated slashes collapse, a trailing slash is dropped (`/` stays `/`);
//! - an absolute-form target (`http://host/x`) is its path; anything not
//!   starting with `/` gets one.
//!
//! Apps disagree on `;` (Tomcat and Jetty cut path parameters, most others
//! keep them) and on encoded slashes (Go decodes `%2F`, Tomcat refuses it,
//! others keep it inside a segment). So a path holding `;`, `%2F`, `%5C` or
//! `\` also has the *other readings* (parameters kept, encoded slashes as
//! data); a rule's path condition holds when any reading satisfies it, and
//! the key is the canonical one (it merges spellings, never splits them).
//! Matching more readings can only apply more rules: a gate is never skipped.
//!
//! A malformed escape (`%`, `%4`, `%zz`) cannot be read one way: it is an error,
//! and the request is refused (`400`) rather than guessed.

use std::fmt::Write;

/// A request path, normalised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NormalPath {
    /// Canonical form: matched, and used by the `path` key part.
    pub canonical: String,
    /// The other readings an app might give the same path (see the module
    /// doc); empty for the common path without `;` or encoded separators.
    pub others: Vec<String>,
}

/// A path with a malformed percent escape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadPath(pub String);

impl std::error::Error for BadPath {}

impl std::fmt::Display for BadPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How one app might read a path.
#[derive(Clone, Copy)]
struct Reading {
    /// `;params` are cut from each segment.
    cut_params: bool,
    /// `%2F`, `%5C` and `\` separate segments.
    split_escaped: bool,
}

const CANONICAL: Reading = Reading {
    cut_params: true,
    split_escaped: true,
};
const OTHERS: [Reading; 3] = [
    Reading {
        cut_params: false,
        split_escaped: true,
    },
    Reading {
        cut_params: true,
        split_escaped: false,
    },
    Reading {
        cut_params: false,
        split_escaped: false,
    },
];

/// Normalise a path (without its query string).
pub fn normalize(raw: &str) -> Result<NormalPath, BadPath> {
    let raw = strip_origin(raw);
    let canonical = read(raw, CANONICAL)?;
    let mut others = Vec::new();
    if is_ambiguous(raw) {
        for r in OTHERS {
            let other = read(raw, r)?;
            if other != canonical && !others.contains(&other) {
                others.push(other);
            }
        }
    }
    Ok(NormalPath { canonical, others })
}

/// Whether a configured path (`match.path`, `match.path_prefix`) is already
/// written the way requests are normalised (a trailing slash is allowed),
/// so it can match at all; `Err` gives the normalised spelling.
pub fn check_configured(path: &str) -> Result<(), ConfiguredPathError> {
    let n = normalize(path)?;
    let trimmed = match path.strip_suffix('/') {
        Some(t) if !t.is_empty() => t,
        _ => path,
    };
    if n.canonical == trimmed && n.others.is_empty() {
        Ok(())
    } else {
        Err(ConfiguredPathError::NotNormal(n.canonical))
    }
}

/// A configured path that no normalised request path could equal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfiguredPathError {
    #[error(transparent)]
    Bad(#[from] BadPath),
    /// Requests are matched normalised: this is how the path would read.
    #[error("requests are matched as {0:?}")]
    NotNormal(String),
}

/// `http://host/x` is `/x`; a target without a leading `/` is read as if it had one.
fn strip_origin(raw: &str) -> &str {
    if raw.starts_with('/') {
        return raw;
    }
    if let Some((scheme, rest)) = raw.split_once("://") {
        if !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        {
            return rest.find('/').map_or("", |i| &rest[i..]);
        }
    }
    raw
}

/// `;` or an encoded/backslash separator: apps may read the path more than one way.
fn is_ambiguous(raw: &str) -> bool {
    let b = raw.as_bytes();
    b.iter().any(|&c| c == b';' || c == b'\\')
        || b.windows(3).any(|w| {
            w[0] == b'%'
                && (w[1] == b'2' && w[2].eq_ignore_ascii_case(&b'f')
                    || w[1] == b'5' && w[2].eq_ignore_ascii_case(&b'c'))
        })
}

fn read(raw: &str, how: Reading) -> Result<String, BadPath> {
    let bytes = raw.as_bytes();
    let mut segments: Vec<String> = Vec::new();
    let mut seg = String::new();
    // Inside `;params` of the current segment (cut when `how.cut_params`).
    let mut in_params = false;
    let mut i = 0;
    while i < bytes.len() {
        let (byte, escaped) = if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(|| bad(raw, i))?;
            let v = std::str::from_utf8(hex)
                .ok()
                .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad(raw, i))?;
            i += 3;
            (v, true)
        } else {
            i += 1;
            (bytes[i - 1], false)
        };
        let separator = match byte {
            b'/' if !escaped => true,
            b'/' | b'\\' => how.split_escaped,
            _ => false,
        };
        if separator {
            end_segment(&mut segments, std::mem::take(&mut seg));
            in_params = false;
            continue;
        }
        if byte == b';' && !escaped {
            in_params = true;
            if how.cut_params {
                continue;
            }
        }
        if in_params && how.cut_params {
            continue;
        }
        push_byte(&mut seg, byte, escaped);
    }
    end_segment(&mut segments, seg);
    let mut out = String::with_capacity(raw.len() + 1);
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Apply one finished segment: `.` and empty segments vanish, `..` removes
/// the previous one (never above the root).
fn end_segment(segments: &mut Vec<String>, seg: String) {
    match seg.as_str() {
        "" | "." => {}
        ".." => {
            segments.pop();
        }
        _ => segments.push(seg),
    }
}

/// Re-encode one byte of a segment the canonical way. A literal `;` only
/// reaches here when parameters are kept; a decoded `%3B` stays encoded, so
/// it is never mistaken for a parameter on a second pass.
fn push_byte(seg: &mut String, byte: u8, escaped: bool) {
    let literal = byte.is_ascii_alphanumeric()
        || b"-._~!$&'()*+,=:@".contains(&byte)
        || (byte == b';' && !escaped);
    if literal {
        seg.push(byte as char);
    } else {
        let _ = write!(seg, "%{byte:02X}");
    }
}

fn bad(raw: &str, at: usize) -> BadPath {
    BadPath(format!(
        "malformed percent escape at byte {at} of {:?} (expected %XX with two hex digits)",
        raw.chars().take(200).collect::<String>()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn canon(raw: &str) -> String {
        normalize(raw).unwrap().canonical
    }

    fn readings(raw: &str) -> Vec<String> {
        let n = normalize(raw).unwrap();
        let mut all = vec![n.canonical];
        all.extend(n.others);
        all
    }

    #[test]
    fn every_spelling_of_admin_is_admin() {
        for raw in [
            "/admin",
            "/admin/",
            "//admin",
            "//admin/",
            "/./admin/",
            "/%61dmin",
            "/%61dmin/",
            "/%61%64%6D%69%6E",
            "/x/../admin",
            "/x/../admin/",
            "/admin/.",
            "/admin/./",
            "/admin;x",
            "/admin;jsessionid=1/",
            "/../admin",
            "/x/%2e%2e/admin",
            "/x/.%2E/admin",
            "/x;p/..;q/admin",
            "/x%2F..%2Fadmin",
            "/x\\..\\admin",
            "http://example.com/admin",
            "admin",
        ] {
            assert_eq!(canon(raw), "/admin", "{raw:?}");
        }
    }

    #[test]
    fn encodings_have_one_spelling() {
        assert_eq!(canon("/a%21b"), "/a!b");
        assert_eq!(canon("/a b"), "/a%20b");
        assert_eq!(canon("/a%20b"), "/a%20b");
        assert_eq!(canon("/caf%c3%a9"), "/caf%C3%A9");
        assert_eq!(canon("/100%25"), "/100%25");
        assert_eq!(canon("/a%3Bb"), "/a%3Bb", "an encoded ';' is data");
        assert_eq!(canon("/a%3fb"), "/a%3Fb");
        assert_eq!(canon("/"), "/");
        assert_eq!(canon(""), "/");
        assert_eq!(canon("/.."), "/");
        assert_eq!(canon("http://h"), "/");
    }

    #[test]
    fn ambiguous_paths_keep_every_reading() {
        // Tomcat cuts the parameter; others keep it.
        assert_eq!(readings("/admin;x"), ["/admin", "/admin;x"]);
        // Go splits on %2F, others keep it in the segment.
        assert_eq!(readings("/x%2F..%2Fadmin"), ["/admin", "/x%2F..%2Fadmin"]);
        assert_eq!(readings("/;x/admin"), ["/admin", "/;x/admin"]);
        assert!(normalize("/plain/path").unwrap().others.is_empty());
    }

    #[test]
    fn malformed_escapes_are_refused() {
        for raw in ["/%", "/%4", "/%zz", "/a%g1", "/%%41"] {
            assert!(normalize(raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn configured_paths_must_be_normalised() {
        use ConfiguredPathError::NotNormal;
        assert_eq!(check_configured("/admin"), Ok(()));
        assert_eq!(check_configured("/admin/"), Ok(()));
        assert_eq!(check_configured("/"), Ok(()));
        assert_eq!(check_configured("/a//b"), Err(NotNormal("/a/b".into())));
        assert_eq!(
            check_configured("/%61dmin"),
            Err(NotNormal("/admin".into()))
        );
        assert_eq!(
            check_configured("/admin;x"),
            Err(NotNormal("/admin".into()))
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn normalising_never_panics_starts_with_a_slash_and_is_idempotent(
            raw in "[/a-zA-Z0-9%;.\\\\:@!~ -]{0,40}"
        ) {
            if let Ok(n) = normalize(&raw) {
                prop_assert!(n.canonical.starts_with('/'));
                prop_assert!(!n.canonical.contains("//"));
                prop_assert_eq!(normalize(&n.canonical).unwrap().canonical, n.canonical.clone());
                for other in &n.others {
                    prop_assert!(other.starts_with('/'));
                }
            }
        }

        #[test]
        fn any_text_never_panics(raw in any::<String>()) {
            if let Ok(n) = normalize(&raw) {
                prop_assert!(n.canonical.starts_with('/'));
                prop_assert_eq!(normalize(&n.canonical).unwrap().canonical, n.canonical.clone());
            }
        }
    }
}
