//! What a replicated list's entries are: the one thing the shared machinery
//! (scripts, stream, follower, embedded store, state file, reaper, recovery)
//! leaves open. The IP lists' member is a network (`IpNet`) in the
//! longest-prefix table (`table::Networks`); an override's member is an exact
//! (rule, key) pair with its limits as payload (`crate::overrides`), in an
//! exact-match table. The scripts see only the member's canonical text (the
//! protocol's `cidr` field keeps its name for every kind) and the payload's
//! JSON, which they pass through untouched.

use std::fmt::{Debug, Display};
use std::hash::Hash;

use ipnet::IpNet;

use super::expiry::ExpiresAt;
use super::Entry;

/// A list's member: its canonical text is its key in Redis.
pub trait Member: Clone + Ord + Hash + Debug + Display + Send + Sync + 'static {
    /// What an entry carries for decisions beyond its expiry: nothing for
    /// the IP lists, the limits for an override.
    type Payload: Clone + Debug + PartialEq + Eq + Send + Sync + 'static;
    /// The table request handlers read.
    type Set: MemberSet<Self>;

    /// The member from its canonical text; any other spelling is refused
    /// (an event or entry that is not canonical was not written by us).
    fn parse(text: &str) -> Result<Self, String>;

    /// The payload from the JSON the scripts passed through (`None`: the
    /// entry or event has none).
    fn payload(json: Option<&serde_json::Value>) -> Result<Self::Payload, String>;

    /// The payload as JSON (`None`: the entry carries none).
    fn payload_json(payload: &Self::Payload) -> Option<serde_json::Value>;
}

/// A table of members: what the follower, the embedded store and the state
/// file fill, and what request handlers look up (through the kind's own
/// methods on `Table<M>`).
pub trait MemberSet<M: Member>: Clone + Default + Send + Sync + 'static {
    fn insert(&mut self, member: M, expires_at: ExpiresAt, payload: M::Payload);
    fn remove(&mut self, member: &M);
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Every member with its expiry and payload, unordered.
    fn iter(&self) -> Box<dyn Iterator<Item = (M, ExpiresAt, M::Payload)> + '_>;
    /// Size an empty table for a snapshot of `total` entries, of which
    /// `sample` is the first page.
    fn reserve(&mut self, _total: usize, _sample: &[Entry<M>]) {}
}

// === impl Member for IpNet ===

impl Member for IpNet {
    type Payload = ();
    type Set = super::table::Networks;

    fn parse(text: &str) -> Result<IpNet, String> {
        let net = super::cidr::parse_net(text).map_err(|e| e.to_string())?;
        if net.to_string() != text {
            return Err(format!("cidr {text:?} is not canonical"));
        }
        Ok(net)
    }

    fn payload(_: Option<&serde_json::Value>) -> Result<(), String> {
        Ok(())
    }

    fn payload_json(_: &()) -> Option<serde_json::Value> {
        None
    }
}
