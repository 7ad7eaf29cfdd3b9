//! Query strings of the admin API, read one way. An endpoint names the
//! parameters it knows; each may appear at most once, and anything else is a
//! 400 naming the parameter (a typo such as `?cout=5` would otherwise be
//! silently ignored, and `?count=5&count=500` would depend on which one won).
//! Values are percent-decoded (`form_urlencoded`); checking them is the
//! endpoint's, which names the parameter in its own 400.

use super::response::ApiError;

/// The parameters of one request, each known to its endpoint and given once.
#[derive(Debug)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Read `raw` (the text after `?`, if any) for an endpoint that knows `known`.
    pub fn parse(raw: Option<&str>, known: &[&str]) -> Result<Params, ApiError> {
        let mut seen: Vec<(String, String)> = Vec::new();
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if !known.contains(&&*k) {
                return Err(ApiError::bad(
                    k.into_owned(),
                    format!("unknown parameter (expected: {})", known.join(", ")),
                ));
            }
            if seen.iter().any(|(s, _)| *s == k) {
                return Err(ApiError::bad(k.into_owned(), "given more than once"));
            }
            seen.push((k.into_owned(), v.into_owned()));
        }
        Ok(Params(seen))
    }

    /// The value of `name`, if the request gave it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(e: ApiError) -> (String, String) {
        (e.field.unwrap_or_default(), e.error)
    }

    #[test]
    fn known_parameters_are_read_and_decoded() {
        let p = Params::parse(Some("ip=2001%3Adb8%3A%3A1&x=1+2"), &["ip", "x"]).unwrap();
        assert_eq!(p.get("ip"), Some("2001:db8::1"));
        assert_eq!(p.get("x"), Some("1 2"));
        assert_eq!(p.get("y"), None);
        assert_eq!(Params::parse(None, &["ip"]).unwrap().get("ip"), None);
        assert_eq!(Params::parse(Some(""), &["ip"]).unwrap().get("ip"), None);
    }

    #[test]
    fn an_unknown_parameter_is_named_with_the_known_ones() {
        let e = Params::parse(Some("count=5&cout=5"), &["cursor", "count"]).unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(
            field(e),
            (
                "cout".to_string(),
                "unknown parameter (expected: cursor, count)".to_string()
            )
        );
    }

    #[test]
    fn a_parameter_given_twice_is_refused_whatever_its_values() {
        for q in ["count=5&count=500", "count=5&count=5", "count&count"] {
            let e = Params::parse(Some(q), &["count"]).unwrap_err();
            assert_eq!(field(e).0, "count", "{q}");
        }
    }
}
