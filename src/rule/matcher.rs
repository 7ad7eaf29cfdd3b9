//! Which requests a rule applies to.

use crate::request::RequestView;

/// Every condition that is set must hold; an empty matcher matches everything.
#[derive(Clone, Debug, Default)]
pub struct Matcher {
    pub path_prefix: Option<String>,
    pub path: Option<String>,
    /// Upper-case method names.
    pub methods: Option<Vec<String>>,
    /// Lower-case host name without port.
    pub host: Option<String>,
}

impl Matcher {
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        if let Some(prefix) = &self.path_prefix {
            if !req.path.starts_with(prefix.as_str()) {
                return false;
            }
        }
        if let Some(path) = &self.path {
            if req.path != path {
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
}
