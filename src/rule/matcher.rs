//! Which requests a rule applies to.

use crate::request::RequestView;

/// Every condition that is set must hold; an empty matcher matches everything.
#[derive(Clone, Debug, Default)]
pub struct Matcher {
    /// Written normalised (checked by the config); a prefix ending in `/`
    /// also matches the path without it (`/admin/` matches `/admin`).
    pub path_prefix: Option<String>,
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
        if self.path_prefix.is_some() || self.path.is_some() {
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
            let bare = prefix.strip_suffix('/').unwrap_or(prefix);
            if !path.starts_with(prefix.as_str()) && path != bare {
                return false;
            }
        }
        match &self.path {
            Some(exact) => path == exact,
            None => true,
        }
    }
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

    fn prefix(p: &str) -> Matcher {
        Matcher {
            path_prefix: Some(p.into()),
            ..Default::default()
        }
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
