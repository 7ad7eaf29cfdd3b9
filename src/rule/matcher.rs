//! Which requests a rule applies to.

use crate::request::RequestView;

/// Every condition that is set must hold; an empty matcher matches everything.
#[derive(Clone, Debug, Default)]
pub struct Matcher {
    /// Whole segments: `/admin` (or `/admin/`) matches `/admin` and
    /// `/admin/…`, never `/administrator`. Written normalised (checked by the
    /// config), stored without a trailing slash (`/` stays `/`).
    pub path_prefix: Option<String>,
    /// A plain string prefix of the normalised path (`/adm` matches
    /// `/administrator`), for the rare rule that wants one.
    pub path_starts_with: Option<String>,
    /// Normalised, without a trailing slash (`/admin/` is stored as `/admin`,
    /// the form request paths take).
    pub path: Option<String>,
    /// Upper-case method names.
    pub methods: Option<Vec<String>>,
    /// Lower-case host name without port.
    pub host: Option<String>,
}

impl Matcher {
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        if self.path_prefix.is_some() || self.path.is_some() || self.path_starts_with.is_some() {
            // Any reading of an ambiguous path may be what the app serves:
            // matching more readings applies more rules, never fewer.
            let mut readings =
                std::iter::once(req.path).chain(req.path_others.iter().map(String::as_str));
            if !readings.any(|p| self.path_holds(p)) {
                return false;
            }
        }
        if let Some(methods) = &self.methods {
            if !methods.iter().any(|m| m.eq_ignore_ascii_case(req.method)) {
                return false;
            }
        }
        if let Some(host) = &self.host {
            match req.host {
                Some(h) if h.eq_ignore_ascii_case(host) => {}
                _ => return false,
            }
        }
        true
    }

    /// The path conditions for one normalised path.
    fn path_holds(&self, path: &str) -> bool {
        if let Some(prefix) = &self.path_prefix {
            let whole_segments = prefix == "/"
                || path
                    .strip_prefix(prefix.as_str())
                    .is_some_and(ends_a_segment);
            if !whole_segments {
                return false;
            }
        }
        if let Some(start) = &self.path_starts_with {
            if !path.starts_with(start.as_str()) {
                return false;
            }
        }
        match &self.path {
            Some(exact) => path == exact,
            None => true,
        }
    }
}

/// Whether what follows a prefix starts a new segment. Besides `/`, the
/// other readings of an ambiguous path keep `;params` and encoded slashes
/// (`%2F`, `%5C`, upper-case once normalised), which some apps read as a
/// boundary: counting them keeps a gate from being skipped.
fn ends_a_segment(rest: &str) -> bool {
    rest.is_empty()
        || rest.starts_with('/')
        || rest.starts_with(';')
        || rest.starts_with("%2F")
        || rest.starts_with("%5C")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn matches(m: &Matcher, raw: &str) -> bool {
        let headers = HeaderMap::new();
        let path = crate::path::normalize(raw).unwrap();
        let req = RequestView {
            method: "GET",
            path: &path.canonical,
            path_others: &path.others,
            query: None,
            host: None,
            headers: &headers,
            client_ip: None,
            client_key_ip: None,
        };
        m.matches(&req)
    }

    /// As the config stores it: without a trailing slash.
    fn prefix(p: &str) -> Matcher {
        let p = match p.strip_suffix('/') {
            Some(bare) if !bare.is_empty() => bare,
            _ => p,
        };
        Matcher {
            path_prefix: Some(p.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_prefix_matches_whole_segments_and_a_string_prefix_any_continuation() {
        for written in ["/admin", "/admin/"] {
            let admin = prefix(written);
            assert!(matches(&admin, "/admin"), "{written}");
            assert!(matches(&admin, "/admin/"), "{written}");
            assert!(matches(&admin, "/admin/users"), "{written}");
            assert!(!matches(&admin, "/administrator"), "{written}");
            assert!(!matches(&admin, "/adminx/y"), "{written}");
        }
        assert!(matches(&prefix("/"), "/anything"));
        let string = Matcher {
            path_starts_with: Some("/adm".into()),
            ..Default::default()
        };
        assert!(matches(&string, "/administrator"));
        assert!(matches(&string, "/adm"));
        assert!(!matches(&string, "/ad"));
    }

    #[test]
    fn prefixes_match_every_spelling_and_a_slash_prefix_matches_the_bare_path() {
        let admin = prefix("/admin");
        for raw in [
            "/admin",
            "//admin/x",
            "/%61dmin",
            "/x/../admin",
            "/;x/admin",
        ] {
            assert!(matches(&admin, raw), "{raw}");
        }
        assert!(!matches(&admin, "/other"));
        let dir = prefix("/admin/");
        assert!(matches(&dir, "/admin"));
        assert!(matches(&dir, "/admin/./"));
        assert!(matches(&dir, "/admin/x"));
        assert!(!matches(&dir, "/administrator"));
    }

    #[test]
    fn an_exact_path_matches_any_reading_of_an_ambiguous_path() {
        let exact = Matcher {
            path: Some("/admin".into()),
            ..Default::default()
        };
        for raw in [
            "/admin",
            "/admin/",
            "/admin/./",
            "/admin;x",
            "/x%2F..%2Fadmin",
        ] {
            assert!(matches(&exact, raw), "{raw}");
        }
        assert!(!matches(&exact, "/admin/x"));
        // The literal reading of `/admin%2F..%2Fx` is under /admin: a prefix still applies.
        assert!(matches(&prefix("/admin"), "/admin%2F..%2Fx"));
    }
}
