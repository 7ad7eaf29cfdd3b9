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
            let mut readings = std::iter::once(req.path).chain(req.path_others.iter().map(String::as_str));
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
