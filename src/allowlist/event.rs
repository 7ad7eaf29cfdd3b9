//! One entry of the `events` stream, as the scripts write it:
//! `epoch seq op cidr expires_at note actor ver created_at`, and `exempt 1`
//! for an exempt allowlist entry.
//!
//! `op` is `upsert`, `remove` or `expire` (one entry each), or `restore`: a
//! whole new dataset (a new epoch, `lua/allow_restore.lua`) that only a fresh
//! snapshot can show; its `cidr` is empty.
//!
//! A node applies an event only if it understands all of it: an unknown `ver`
//! or `op`, or a field it cannot parse, means a full resync, never a half-applied
//! change.

use std::collections::HashMap;

use ipnet::IpNet;
use redis::streams::{StreamId, StreamReadReply};
use redis::Value;

use super::expiry::ExpiresAt;
use super::member::Member;

/// The entries of an `XREAD` reply on the one events stream, in order.
pub fn stream_entries(reply: Option<StreamReadReply>) -> Vec<StreamId> {
    reply
        .into_iter()
        .flat_map(|r| r.keys)
        .flat_map(|k| k.ids)
        .collect()
}

/// The event format this code reads and the scripts write.
pub const PROTOCOL_VERSION: &str = "1";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Upsert,
    Remove,
    Expire,
    /// A new dataset replaced the old one (a new epoch): resync.
    Restore,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event<M: Member = IpNet> {
    pub epoch: String,
    pub seq: u64,
    pub op: Op,
    /// The entry changed (its member; the field keeps the protocol's name);
    /// `None` only for `restore`.
    pub cidr: Option<M>,
    /// For `upsert`, the new expiry (0: never); informational otherwise.
    pub expires_at: ExpiresAt,
    /// For `upsert`, the entry's note and actor (a node keeps them to give
    /// its table back whole: `details`).
    pub note: String,
    pub actor: String,
    /// For `upsert`, when it was written (ms, Redis time); 0 when the event
    /// predates the field (then its stream id tells).
    pub created_at: u64,
    /// For `upsert`, an allowlist entry marked exempt from bans (the field
    /// `exempt 1`; absent otherwise, and in events that predate it).
    pub exempt: bool,
    /// For `upsert`, the entry's payload (an override's limits); `None`
    /// for the other ops.
    pub payload: Option<M::Payload>,
}

/// Why a stream entry is not an event this node can apply (then it resyncs).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("missing field {0:?}")]
    Missing(&'static str),
    #[error("field {0:?} is not text")]
    NotText(&'static str),
    #[error("field {0:?} is not a number")]
    NotANumber(&'static str),
    #[error("unknown event version {0:?}")]
    UnknownVersion(String),
    #[error("unknown op {0:?}")]
    UnknownOp(String),
    #[error("field \"cidr\": {0}")]
    Member(String),
    #[error("field \"payload\": {0}")]
    Payload(String),
}

impl<M: Member> Event<M> {
    /// Read an event from a stream entry's fields.
    pub fn from_fields(fields: &HashMap<String, Value>) -> Result<Event<M>, EventError> {
        let get = |name: &'static str| -> Result<String, EventError> {
            match fields.get(name) {
                Some(v) => {
                    redis::from_redis_value_ref::<String>(v).map_err(|_| EventError::NotText(name))
                }
                None => Err(EventError::Missing(name)),
            }
        };
        let ver = get("ver")?;
        if ver != PROTOCOL_VERSION {
            return Err(EventError::UnknownVersion(ver));
        }
        let op = match get("op")?.as_str() {
            "upsert" => Op::Upsert,
            "remove" => Op::Remove,
            "expire" => Op::Expire,
            "restore" => Op::Restore,
            other => return Err(EventError::UnknownOp(other.to_string())),
        };
        let number = |name: &'static str| -> Result<u64, EventError> {
            get(name)?
                .parse::<u64>()
                .map_err(|_| EventError::NotANumber(name))
        };
        let cidr = match op {
            Op::Restore => None,
            _ => Some(M::parse(&get("cidr")?).map_err(EventError::Member)?),
        };
        let optional = |name: &'static str| -> Result<String, EventError> {
            match get(name) {
                Err(EventError::Missing(_)) => Ok(String::new()),
                other => other,
            }
        };
        let created_at = match optional("created_at")?.as_str() {
            "" => 0,
            text => text
                .parse()
                .map_err(|_| EventError::NotANumber("created_at"))?,
        };
        let payload = match op {
            Op::Upsert => {
                let text = optional("payload")?;
                let json = match text.as_str() {
                    "" => None,
                    t => Some(
                        serde_json::from_str::<serde_json::Value>(t)
                            .map_err(|e| EventError::Payload(e.to_string()))?,
                    ),
                };
                Some(M::payload(json.as_ref()).map_err(EventError::Payload)?)
            }
            _ => None,
        };
        Ok(Event {
            payload,
            epoch: get("epoch")?,
            seq: number("seq")?,
            op,
            cidr,
            expires_at: number("expires_at")?,
            note: optional("note")?,
            actor: optional("actor")?,
            created_at,
            exempt: optional("exempt")? == "1",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::BulkString(v.as_bytes().to_vec())))
            .collect()
    }

    const GOOD: [(&str, &str); 8] = [
        ("epoch", "ab12"),
        ("seq", "7"),
        ("op", "upsert"),
        ("cidr", "203.0.113.0/24"),
        ("expires_at", "1700000000000"),
        ("note", "login alice"),
        ("actor", "cli"),
        ("ver", "1"),
    ];

    #[test]
    fn a_well_formed_event_parses() {
        let e = Event::<IpNet>::from_fields(&fields(&GOOD)).unwrap();
        assert_eq!(e.seq, 7);
        assert_eq!(e.op, Op::Upsert);
        assert_eq!(e.cidr.unwrap().to_string(), "203.0.113.0/24");
        assert_eq!(e.expires_at, 1_700_000_000_000);
        assert_eq!((e.note.as_str(), e.actor.as_str()), ("login alice", "cli"));
        assert_eq!(e.created_at, 0, "not in this event");
        let mut f = fields(&GOOD);
        f.insert("created_at".into(), Value::BulkString(b"1699".to_vec()));
        assert_eq!(Event::<IpNet>::from_fields(&f).unwrap().created_at, 1699);
    }

    #[test]
    fn a_restore_event_carries_no_cidr() {
        let mut f = fields(&GOOD);
        f.insert("op".into(), Value::BulkString(b"restore".to_vec()));
        f.insert("cidr".into(), Value::BulkString(Vec::new()));
        let e = Event::<IpNet>::from_fields(&f).unwrap();
        assert_eq!((e.op, e.cidr), (Op::Restore, None));
    }

    #[test]
    fn unknown_versions_ops_and_bad_fields_are_refused_whole() {
        for (k, v) in [
            ("ver", "2"),
            ("op", "truncate"),
            ("seq", "x"),
            ("cidr", "203.0.113.1/24"),
            ("cidr", "2001:DB8::/32"),
        ] {
            let mut f = fields(&GOOD);
            f.insert(k.into(), Value::BulkString(v.as_bytes().to_vec()));
            assert!(Event::<IpNet>::from_fields(&f).is_err(), "{k}={v}");
        }
        let mut f = fields(&GOOD);
        f.remove("epoch");
        assert!(Event::<IpNet>::from_fields(&f).is_err());
    }
}
