//! An entry's JSON in the `entries` hash, as our writers lay it out:
//! `expires_at` first, as digits (`{"expires_at":1700086400123,"note":…}`),
//! the way `allow_upsert.lua` writes it and a restore stages it through
//! [`entry_json`]. A node reads every field of it at a snapshot: it keeps
//! note, actor and created_at beside its table so that it can put the list
//! back whole if Redis loses it (`recovery`).

use serde::Serialize;

use super::member::Member;
use super::Entry;

/// An entry's JSON as `allow_upsert.lua` writes it: `expires_at` first
/// (serde writes a struct's fields in their order; `json!` would sort them).
#[derive(Serialize)]
struct StoredOut<'a> {
    expires_at: u64,
    note: &'a str,
    created_at: u64,
    actor: &'a str,
    /// Only when true, where `lua/list_upsert.lua` puts it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    exempt: bool,
    ver: u32,
    /// An override's limits; absent for the IP lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<serde_json::Value>,
}

/// The JSON a restore stages for `e`.
pub(super) fn entry_json<M: Member>(e: &Entry<M>) -> String {
    serde_json::to_string(&StoredOut {
        expires_at: e.expires_at,
        note: &e.note,
        created_at: e.created_at,
        actor: &e.actor,
        exempt: e.exempt,
        ver: 1,
        payload: M::payload_json(&e.payload),
    })
    .expect("plain fields always serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restored_entry_is_written_expiry_first_like_upsert_writes_it() {
        let e: Entry = Entry {
            cidr: "203.0.113.7/32".parse().unwrap(),
            expires_at: 1_700_086_400_123,
            note: "alice \"quoted\"".into(),
            created_at: 1_700_000_000_123,
            actor: "cli".into(),
            exempt: false,
            payload: (),
        };
        let json = entry_json(&e);
        assert_eq!(
            json,
            r#"{"expires_at":1700086400123,"note":"alice \"quoted\"","created_at":1700000000123,"actor":"cli","ver":1}"#
        );
    }
}
