//! JSON request bodies read into derived types (`deny_unknown_fields`), so
//! the fields a body may carry are listed once, in its struct; a 400 names
//! the field it is about (`(body)` for the whole).

use axum::body::Bytes;
use axum::http::StatusCode;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use super::response::ApiError;

/// Read a request body of at most `max` bytes; a longer one is refused (413)
/// as soon as it passes `max`, before anything parses it.
pub async fn read_limited<B>(body: B, max: usize) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            error: format!("the body is over {max} bytes"),
            field: Some("(body)".into()),
        }),
        Err(e) => Err(ApiError::bad(
            "(body)",
            format!("the body could not be read: {e}"),
        )),
    }
}

/// Read a JSON object into `T`.
pub fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // serde would also read a struct from an array; only an object is a body.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad("(body)", "expected a JSON object"));
    }
    // Read it plainly first; only a body that fails is read again with the
    // path tracked, to name its field (tracking costs on every body).
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let message = e.inner().to_string();
        let path = e.path().to_string();
        // Unknown and missing fields are reported at their parent; name them.
        let named = ["unknown field `", "missing field `"]
            .iter()
            .find_map(|p| message.strip_prefix(p)?.split('`').next());
        let field = match (named, path.as_str()) {
            (Some(f), _) => f.to_string(),
            (None, "." | "" | "?") => "(body)".to_string(),
            (None, p) => p.to_string(),
        };
        ApiError::bad(field, message)
    })?;
    // What the plain read refused and the tracked one took: text after the object.
    de.end()
        .map_err(|e| ApiError::bad("(body)", e.to_string()))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::json_body;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct B {
        key: String,
        cost: Option<u64>,
    }

    #[test]
    fn a_good_body_is_read_and_a_bad_one_names_its_field() {
        let ok: B = json_body(br#"{"key": "k", "cost": 2}"#).unwrap();
        assert_eq!(
            ok,
            B {
                key: "k".into(),
                cost: Some(2)
            }
        );
        for (body, field) in [
            (&br#"{"key": "k", "cost": "x"}"#[..], "cost"),
            (br#"{"key": "k", "extra": 1}"#, "extra"),
            (br#"{"cost": 1}"#, "key"),
            (br#"[1]"#, "(body)"),
            // Cut inside a value: the field being read.
            (br#"{"key": "k"#, "key"),
        ] {
            let err = json_body::<B>(body).unwrap_err();
            assert_eq!(
                err.field.as_deref(),
                Some(field),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn text_after_the_object_is_refused() {
        let err = json_body::<B>(br#"{"key": "k"} {"key": "j"}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("(body)"));
        assert!(err.error.contains("trailing"), "{}", err.error);
    }
}
