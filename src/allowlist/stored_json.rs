//! The expiry of an entry's JSON in the `entries` hash, read fast: a
//! snapshot reads every entry of the list, and the node's table keeps only
//! the network and `expires_at`.
//!
//! Our writers put `expires_at` first, as digits
//! (`{"expires_at":1700086400123,"note":…}`: `allow_upsert.lua`, and a
//! restore's entries through [`entry_json`]), so that prefix is read directly; anything else (another layout from a later version, a
//! hand-edited value) goes through serde, whose error is the one reported.

use serde::{Deserialize, Serialize};

use super::Entry;

const PREFIX: &str = r#"{"expires_at":"#;
/// `u64::MAX` has 20 digits.
const MAX_DIGITS: usize = 20;

/// Just the expiry of an entry's JSON: all a node's table keeps.
#[derive(Deserialize)]
struct ExpiryJson {
    expires_at: u64,
}

/// An entry's JSON as `allow_upsert.lua` writes it: `expires_at` first
/// (serde writes a struct's fields in their order; `json!` would sort them).
#[derive(Serialize)]
struct StoredOut<'a> {
    expires_at: u64,
    note: &'a str,
    created_at: u64,
    actor: &'a str,
    ver: u32,
}

/// The JSON a restore stages for `e`.
pub(super) fn entry_json(e: &Entry) -> String {
    serde_json::to_string(&StoredOut {
        expires_at: e.expires_at,
        note: &e.note,
        created_at: e.created_at,
        actor: &e.actor,
        ver: 1,
    })
    .expect("plain fields always serialise")
}

/// `expires_at` of an entry's JSON (ms, Redis time; 0: never).
pub(super) fn expires_at(json: &str) -> Result<u64, serde_json::Error> {
    if let Some(v) = fast(json) {
        return Ok(v);
    }
    let j: ExpiryJson = serde_json::from_str(json)?;
    Ok(j.expires_at)
}

/// `{"expires_at":<digits>,` with the digits a JSON number that fits a u64.
fn fast(json: &str) -> Option<u64> {
    let rest = json.strip_prefix(PREFIX)?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    // JSON numbers have no leading zeros: "01" is left to serde (which refuses it).
    let leading_zero = digits > 1 && rest.starts_with('0');
    if digits == 0
        || digits > MAX_DIGITS
        || leading_zero
        || rest.as_bytes().get(digits) != Some(&b',')
    {
        return None;
    }
    rest[..digits].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_scripts_layout_is_read_without_serde_and_agrees_with_it() {
        for json in [
            r#"{"expires_at":1700086400123,"note":"login","created_at":1,"actor":"t","ver":1}"#,
            r#"{"expires_at":0,"note":"","created_at":1,"actor":"t","ver":1}"#,
            r#"{"expires_at":18446744073709551615,"note":"max"}"#,
        ] {
            let direct = fast(json).expect(json);
            let j: ExpiryJson = serde_json::from_str(json).unwrap();
            assert_eq!(direct, j.expires_at);
            assert_eq!(expires_at(json).unwrap(), direct);
        }
    }

    #[test]
    fn a_restored_entry_is_written_expiry_first_like_upsert_writes_it() {
        let e = Entry {
            cidr: "203.0.113.7/32".parse().unwrap(),
            expires_at: 1_700_086_400_123,
            note: "alice \"quoted\"".into(),
            created_at: 1_700_000_000_123,
            actor: "cli".into(),
        };
        let json = entry_json(&e);
        assert_eq!(
            json,
            r#"{"expires_at":1700086400123,"note":"alice \"quoted\"","created_at":1700000000123,"actor":"cli","ver":1}"#
        );
        assert_eq!(fast(&json), Some(e.expires_at));
    }

    #[test]
    fn another_layout_falls_back_to_serde() {
        for (json, want) in [
            (r#"{"note":"x","expires_at":42,"ver":2}"#, 42),
            (r#"{ "expires_at": 42, "note": "x" }"#, 42),
            (r#"{"expires_at":42}"#, 42),
            (r#"{"expires_at":4.2e1,"note":"x"}"#, 0),
        ] {
            assert_eq!(fast(json), None, "{json}");
            match expires_at(json) {
                Ok(v) => assert_eq!(v, want, "{json}"),
                Err(_) => assert!(json.contains("e1"), "{json}: a float is not a u64"),
            }
        }
    }

    #[test]
    fn a_malformed_value_gets_serdes_error_as_before() {
        for json in [
            "not json",
            r#"{"expires_at":"soon","note":"x"}"#,
            r#"{"expires_at":-1,"note":"x"}"#,
            r#"{"expires_at":01,"note":"x"}"#,
            r#"{"expires_at":18446744073709551616,"note":"x"}"#,
            r#"{"note":"x"}"#,
            "",
        ] {
            assert_eq!(fast(json), None, "{json}");
            let ours = expires_at(json).unwrap_err().to_string();
            let serde = serde_json::from_str::<ExpiryJson>(json)
                .err()
                .expect(json)
                .to_string();
            assert_eq!(ours, serde, "{json}");
        }
    }
}
