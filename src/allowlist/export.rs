//! The document `tollgate allow export` writes and `tollgate allow restore`
//! reads: every live entry with its absolute expiry (Redis time), so a
//! restore keeps each entry's deadline.
//!
//! ```json
//! {"format": "tollgate-allowlist", "version": 1, "epoch": "9f2c4e1a07b3d5c6",
//!  "seq": 12, "exported_at": 1700000000500,
//!  "entries": [{"cidr": "203.0.113.7/32", "expires_at": 1700086400123,
//!               "note": "login alice", "created_at": 1700000000123, "actor": "admin-api"}]}
//! ```
//!
//! `expires_at` is `null` for a permanent entry. A restore checks the whole
//! document before it changes anything: networks must be canonical (as
//! stored) and distinct, notes at most 256 bytes. `stream` reads it entry by
//! entry (a million-entry file is never held whole in memory).

use std::collections::HashSet;
use std::fmt;

use ipnet::IpNet;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::input::MAX_NOTE_BYTES;
use super::kind::ListKind;
use super::{cidr, Entry, Listing};

pub const FORMAT: &str = "tollgate-allowlist";
/// The denylist's documents: the same shape, another name, so a denylist
/// export is never restored into the allowlist (or the reverse).
pub const DENY_FORMAT: &str = "tollgate-denylist";

/// The `format` of `kind`'s documents.
pub fn format_of(kind: ListKind) -> &'static str {
    match kind {
        ListKind::Allow => FORMAT,
        ListKind::Deny => DENY_FORMAT,
        // Never restored into an IP list (nor the reverse).
        ListKind::Override => "tollgate-overrides",
    }
}
pub const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    pub format: String,
    pub version: u32,
    /// The dataset exported (informational: a restore makes a new epoch).
    #[serde(default)]
    pub epoch: String,
    #[serde(default)]
    pub seq: u64,
    /// Redis time of the export, ms.
    #[serde(default)]
    pub exported_at: u64,
    pub entries: Vec<Exported>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exported {
    pub cidr: String,
    /// ms since the Unix epoch, Redis time; `null`: never.
    pub expires_at: Option<u64>,
    #[serde(default)]
    pub note: String,
    #[serde(default)]
    pub created_at: u64,
    #[serde(default)]
    pub actor: String,
    /// Written only when true (an exempt allowlist entry).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exempt: bool,
}

impl Document {
    pub fn from_listing(listing: &Listing, kind: ListKind) -> Document {
        Document {
            format: format_of(kind).into(),
            version: VERSION,
            epoch: listing.epoch.clone(),
            seq: listing.seq,
            exported_at: listing.now_ms,
            entries: listing
                .entries
                .iter()
                .map(|e| Exported {
                    cidr: e.cidr.to_string(),
                    expires_at: (e.expires_at != 0).then_some(e.expires_at),
                    note: e.note.clone(),
                    created_at: e.created_at,
                    actor: e.actor.clone(),
                    exempt: e.exempt,
                })
                .collect(),
        }
    }

    /// One entry per line: diffs of two exports read well.
    pub fn to_json(&self) -> String {
        let head = serde_json::json!({
            "format": self.format,
            "version": self.version,
            "epoch": self.epoch,
            "seq": self.seq,
            "exported_at": self.exported_at,
        })
        .to_string();
        let mut out = head[..head.len() - 1].to_string();
        out.push_str(",\"entries\":[");
        for (i, e) in self.entries.iter().enumerate() {
            out.push_str(if i == 0 { "\n" } else { ",\n" });
            out.push_str(&serde_json::to_string(e).unwrap_or_default());
        }
        out.push_str("\n]}\n");
        out
    }

    /// Read and check a document; the entries to restore, or every reason not to.
    pub fn parse(text: &str) -> Result<Vec<Entry>, ExportError> {
        let mut entries = Vec::new();
        stream(text.as_bytes(), ListKind::Allow, |e| entries.push(e))?;
        Ok(entries)
    }
}

/// Read a document from `reader` entry by entry: `each` gets every entry in
/// order as it is read. At the end: how many, or every reason the document
/// must not be restored (the caller then discards what `each` kept).
/// Why a document must not be restored.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("not an export: {0}")]
    NotAnExport(#[from] serde_json::Error),
    #[error("not an export: missing field `entries`")]
    NoEntries,
    #[error("format {format:?} version {version:?}: expected {expected:?} version {VERSION}")]
    Format {
        format: String,
        version: Option<u32>,
        expected: &'static str,
    },
    /// Every problem of the entries, one a line (`entries[3].cidr: ...`).
    #[error("{}", .0.join("\n"))]
    Entries(Vec<String>),
}

/// `kind`: the list restored (its documents' `format`).
pub fn stream<R: std::io::Read, F: FnMut(Entry)>(
    reader: R,
    kind: ListKind,
    each: F,
) -> Result<usize, ExportError> {
    let mut doc = Reading {
        each,
        seen: HashSet::new(),
        problems: Vec::new(),
        count: 0,
        format: None,
        version: None,
        has_entries: false,
    };
    let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::new(reader));
    (&mut doc).deserialize(&mut de).and_then(|()| de.end())?;
    if !doc.has_entries {
        return Err(ExportError::NoEntries);
    }
    let expected = format_of(kind);
    if doc.format.as_deref() != Some(expected) || doc.version != Some(VERSION) {
        return Err(ExportError::Format {
            format: doc.format.unwrap_or_default(),
            version: doc.version,
            expected,
        });
    }
    if doc.problems.is_empty() {
        Ok(doc.count)
    } else {
        Err(ExportError::Entries(doc.problems))
    }
}

const FIELDS: &[&str] = &[
    "format",
    "version",
    "epoch",
    "seq",
    "exported_at",
    "entries",
];

/// A document being read: the header's fields, and each entry checked.
struct Reading<F> {
    each: F,
    seen: HashSet<IpNet>,
    problems: Vec<String>,
    count: usize,
    format: Option<String>,
    version: Option<u32>,
    has_entries: bool,
}

impl<F: FnMut(Entry)> Reading<F> {
    fn entry(&mut self, e: Exported) {
        let i = self.count;
        self.count += 1;
        let net = match cidr::parse_net(&e.cidr) {
            Ok(n) if n.prefix_len() == 0 => {
                self.problems
                    .push(format!("entries[{i}].cidr: {n} would allow every address"));
                return;
            }
            Ok(n) => n,
            Err(msg) => {
                self.problems.push(format!("entries[{i}].cidr: {msg}"));
                return;
            }
        };
        if !self.seen.insert(net) {
            self.problems
                .push(format!("entries[{i}].cidr: {net} appears twice"));
        }
        if e.note.len() > MAX_NOTE_BYTES {
            self.problems.push(format!(
                "entries[{i}].note: {} bytes, at most {MAX_NOTE_BYTES}",
                e.note.len()
            ));
        }
        (self.each)(Entry {
            cidr: net,
            expires_at: e.expires_at.unwrap_or(0),
            note: e.note,
            created_at: e.created_at,
            actor: e.actor,
            exempt: e.exempt,
            payload: (),
        });
    }
}

impl<'de, F: FnMut(Entry)> DeserializeSeed<'de> for &mut Reading<F> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, F: FnMut(Entry)> Visitor<'de> for &mut Reading<F> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an allowlist export object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "format" => self.format = Some(map.next_value()?),
                "version" => self.version = Some(map.next_value()?),
                "epoch" => drop(map.next_value::<String>()?),
                "seq" | "exported_at" => drop(map.next_value::<u64>()?),
                "entries" => {
                    self.has_entries = true;
                    map.next_value_seed(Entries(&mut *self))?
                }
                other => return Err(de::Error::unknown_field(other, FIELDS)),
            }
        }
        Ok(())
    }
}

/// The `entries` array, one element at a time.
struct Entries<'a, F>(&'a mut Reading<F>);

impl<'de, F: FnMut(Entry)> DeserializeSeed<'de> for Entries<'_, F> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, F: FnMut(Entry)> Visitor<'de> for Entries<'_, F> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of entries")
    }
    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        while let Some(e) = seq.next_element::<Exported>()? {
            self.0.entry(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing() -> Listing {
        Listing {
            epoch: "e1".into(),
            seq: 3,
            now_ms: 1_000,
            entries: vec![
                Entry {
                    cidr: "203.0.113.0/24".parse().unwrap(),
                    expires_at: 0,
                    note: "office \"A\"".into(),
                    created_at: 5,
                    actor: "cli".into(),
                    exempt: false,
                    payload: (),
                },
                Entry {
                    cidr: "2001:db8::/48".parse().unwrap(),
                    expires_at: 90_000,
                    note: String::new(),
                    created_at: 6,
                    actor: "admin-api".into(),
                    exempt: false,
                    payload: (),
                },
            ],
        }
    }

    #[test]
    fn an_export_parses_back_to_the_same_entries() {
        let l = listing();
        let text = Document::from_listing(&l, ListKind::Allow).to_json();
        assert_eq!(text.lines().count(), 4, "one entry per line:\n{text}");
        assert_eq!(Document::parse(&text).unwrap(), l.entries);
    }

    #[test]
    fn bad_documents_name_every_problem_and_restore_nothing() {
        let text = r#"{"format":"tollgate-allowlist","version":1,"entries":[
            {"cidr":"203.0.113.7/24","expires_at":null},
            {"cidr":"10.0.0.0/8","expires_at":null},
            {"cidr":"10.0.0.0/8","expires_at":5},
            {"cidr":"0.0.0.0/0","expires_at":null}]}"#;
        let err = Document::parse(text).unwrap_err().to_string();
        assert!(
            err.contains("entries[0].cidr") && err.contains("203.0.113.0/24"),
            "{err}"
        );
        assert!(
            err.contains("entries[2].cidr: 10.0.0.0/8 appears twice"),
            "{err}"
        );
        assert!(err.contains("entries[3].cidr"), "{err}");
        assert!(Document::parse(r#"{"format":"x","version":1,"entries":[]}"#).is_err());
        assert!(Document::parse("[]").is_err());
    }

    #[test]
    fn a_denylist_export_is_not_an_allowlist_export() {
        let text = Document::from_listing(&listing(), ListKind::Deny).to_json();
        assert!(text.contains(r#""format":"tollgate-denylist""#), "{text}");
        let err = Document::parse(&text).unwrap_err().to_string();
        assert!(err.contains(r#"expected "tollgate-allowlist""#), "{err}");
        let n = stream(text.as_bytes(), ListKind::Deny, |_| {}).unwrap();
        assert_eq!(n, 2);
    }
}
