//! JSON request bodies read into derived types (`deny_unknown_fields`), so
//! the fields a body may carry are listed once, in its struct; a 400 names
//! the field it is about (`(body)` for the whole).

use serde::de::DeserializeOwned;

use super::response::ApiError;

/// Read a JSON object into `T`.
pub fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // serde would also read a struct from an array; only an object is a body.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad("(body)", "expected a JSON object"));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
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
    })
}
