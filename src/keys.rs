//! Every Redis key tollgate uses is built here.
//!
//! Limiter keys: `<prefix>:rl:{<rule>|<key>}:<alg>:<period_ms>`. Everything a
//! call touches shares the `{<rule>|<key>}` hash tag, so one script call stays
//! in one Redis Cluster slot. Client keys are used verbatim: a `}` inside one
//! only shortens the tag, identically for every key of that call, and the
//! numeric tail keeps distinct (key, period) pairs distinct.
//!
//! Client key parts are bounded (see [`bounded_part`]): a part longer than
//! [`MAX_KEY_PART_BYTES`] keeps a readable prefix and a hash of the whole, so a
//! 7 KB header never becomes a 7 KB Redis key.
//!
//! Allowlist keys: `<prefix>:{<prefix>:allow}:<name>` for `meta`, `entries`,
//! `exp`, `events`, `snapshot_budget`, `lost` and `restore_lock`. They share the `{<prefix>:allow}` hash tag (one slot,
//! so each allowlist script is atomic over all four) and still start with the
//! prefix like every other key. The denylist has the same keys under
//! `{<prefix>:deny}` (`KeySpace::list`): same scripts, its own stream.

use std::borrow::Cow;
use std::fmt::Write;

use crate::limiter::Algorithm;

/// Rule segment for `POST /v1/check` calls that carry their own limits.
/// Rule names start with a letter, so this can never collide with one.
pub const AD_HOC_RULE: &str = "~";

/// Longest key part (a header, query parameter, path or host value) kept verbatim.
pub const MAX_KEY_PART_BYTES: usize = 128;
/// How much of a longer part stays readable before its hash.
const KEPT_PREFIX_BYTES: usize = 64;
/// `#` and 40 hex digits of SHA-1.
const HASH_SUFFIX_BYTES: usize = 41;

/// A key part as it goes into a key: itself when at most
/// [`MAX_KEY_PART_BYTES`] long, else its first 64 bytes (cut at a character
/// boundary), `#` and the SHA-1 of the whole part in hex: at most 105 bytes,
/// distinct parts stay distinct. A short part that already ends like a hashed
/// one (`#` + 40 hex digits) is hashed too, so no client can send the hashed
/// form of another client's part and share its counter.
pub fn bounded_part(part: &str) -> Cow<'_, str> {
    if part.len() <= MAX_KEY_PART_BYTES && !looks_hashed(part) {
        return Cow::Borrowed(part);
    }
    let mut cut = KEPT_PREFIX_BYTES.min(part.len());
    while !part.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut s = String::with_capacity(cut + HASH_SUFFIX_BYTES);
    s.push_str(&part[..cut]);
    s.push('#');
    s.push_str(&sha1_smol::Sha1::from(part).digest().to_string());
    Cow::Owned(s)
}

fn looks_hashed(part: &str) -> bool {
    let b = part.as_bytes();
    b.len() >= HASH_SUFFIX_BYTES && {
        let tail = &b[b.len() - HASH_SUFFIX_BYTES..];
        tail[0] == b'#'
            && tail[1..]
                .iter()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    }
}

#[derive(Clone, Debug)]
pub struct KeySpace {
    prefix: String,
}

impl KeySpace {
    pub fn new(prefix: &str) -> Self {
        KeySpace {
            prefix: prefix.to_string(),
        }
    }

    /// Everything of a limiter key but its period: `tg:rl:{login|1.2.3.4}:fw`.
    pub fn limit_base(&self, algorithm: Algorithm, rule: &str, key: &str) -> String {
        // Pieces pushed one by one: this runs once per decision.
        let mut s = String::with_capacity(self.prefix.len() + rule.len() + key.len() + 24);
        s.push_str(&self.prefix);
        s.push_str(":rl:{");
        s.push_str(rule);
        s.push('|');
        s.push_str(key);
        s.push_str("}:");
        s.push_str(algorithm.tag());
        s
    }

    /// Pub/sub channel on which a counter reset names the key base it cleared,
    /// so every replica drops it from its deny cache.
    pub fn reset_channel(&self) -> String {
        format!("{}:rl:reset", self.prefix)
    }

    /// The key of one limit: the base and the limit's period.
    pub fn limit_key(base: &str, period_ms: u64) -> String {
        let mut s = String::with_capacity(base.len() + 12);
        let _ = write!(s, "{base}:{period_ms}");
        s
    }
}

/// The allowlist's four keys, in the order the `lua/allow_*.lua` scripts take them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowKeys {
    /// Hash: `epoch`, `seq`, `last_id`.
    pub meta: String,
    /// Hash: canonical CIDR -> JSON entry.
    pub entries: String,
    /// Sorted set: CIDR scored by `expires_at` (ms, Redis time).
    pub exp: String,
    /// Stream: one event per change.
    pub events: String,
    /// String: snapshot pages the fleet took in the current window
    /// (`lua/allow_snapshot_take.lua`); not part of the dataset.
    pub snapshot_budget: String,
    /// Hash: the witness of a lost dataset (`node`, `epoch`, `seq`,
    /// `entries`, `at`), written by the node that found Redis without `meta`
    /// while holding a table; writes refuse to start an epoch while it exists
    /// (`lua/allow_recover.lua`, `src/allowlist/recovery.rs`).
    pub lost: String,
    /// String: the token of the one node restoring a lost dataset (expires).
    pub restore_lock: String,
}

impl AllowKeys {
    /// The dataset's four keys (every `allow_*` script but `allow_snapshot_take` takes them).
    pub fn all(&self) -> [&str; 4] {
        [&self.meta, &self.entries, &self.exp, &self.events]
    }

    /// The two keys a restore stages its entries in (`entries`, `exp`), one
    /// `token` per restore: `tg:{tg:allow}:restore:<token>:entries|exp`, same
    /// hash tag as the live keys, so the final swap is one atomic script.
    pub fn staging(&self, token: &str) -> [String; 2] {
        let base = self.meta.strip_suffix("meta").unwrap_or(&self.meta);
        [
            format!("{base}restore:{token}:entries"),
            format!("{base}restore:{token}:exp"),
        ]
    }
}

impl AllowKeys {
    /// A banning rule's two keys for one address (`lua/deny_ban.lua`), in
    /// the denylist's slot so the count and the ban are one atomic call:
    /// `tg:{tg:deny}:ban:<rule>:<cidr>:count` (limited answers in the
    /// current window) and `…:offences` (offences still remembered).
    pub fn ban(&self, rule: &str, cidr: &str) -> [String; 2] {
        let base = self.meta.strip_suffix("meta").unwrap_or(&self.meta);
        [
            format!("{base}ban:{rule}:{cidr}:count"),
            format!("{base}ban:{rule}:{cidr}:offences"),
        ]
    }
}

impl KeySpace {
    /// `tg:{tg:allow}:meta`, `tg:{tg:allow}:entries`, `tg:{tg:allow}:exp`,
    /// `tg:{tg:allow}:events` and `tg:{tg:allow}:snapshot_budget`.
    pub fn allowlist(&self) -> AllowKeys {
        self.list("allow")
    }

    /// A list's keys by its tag (`allow`, `deny`: `ListKind::tag`):
    /// `tg:{tg:<tag>}:meta`, …
    pub fn list(&self, tag: &str) -> AllowKeys {
        let key = |name: &str| format!("{p}:{{{p}:{tag}}}:{name}", p = self.prefix);
        AllowKeys {
            meta: key("meta"),
            entries: key("entries"),
            exp: key("exp"),
            events: key("events"),
            snapshot_budget: key("snapshot_budget"),
            lost: key("lost"),
            restore_lock: key("restore_lock"),
        }
    }
}

/// Activity counters (`src/activity/`), one hash tag per family so every
/// multi-key read of a family (`PFCOUNT` over days, over hours) and the path
/// admission script stay in one Redis Cluster slot:
///
/// - presence: `tg:act:{tg:act:online}:seen`, a sorted set client -> last-seen ms;
/// - active days: `tg:act:{tg:act:days}:<yyyymmdd>`, one HyperLogLog per UTC day;
/// - a tracked rule, per hour since the epoch (`unix_ms / 3 600 000`):
///   `tg:act:{tg:act:r:<rule>}:<hour>:req` (hash path -> requests),
///   `…:<hour>:paths` (set of the admitted paths, at most `track_paths`),
///   `…:<hour>:clients` (HyperLogLog of the rule's clients) and
///   `…:<hour>:u:<path>` (HyperLogLog of one path's clients; the path bounded
///   as a key part, see [`bounded_part`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivityKeys {
    prefix: String,
}

/// The keys of one tracked rule in one hour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleHourKeys {
    /// Hash: path (or `other`) -> requests.
    pub requests: String,
    /// Set: the paths admitted this hour (across every replica).
    pub paths: String,
    /// HyperLogLog: every client of the rule this hour.
    pub clients: String,
    base: String,
}

impl RuleHourKeys {
    /// HyperLogLog of one path's clients this hour.
    pub fn path_clients(&self, path: &str) -> String {
        format!("{}:u:{}", self.base, bounded_part(path))
    }
}

impl ActivityKeys {
    pub fn presence(&self) -> String {
        format!("{p}:act:{{{p}:act:online}}:seen", p = self.prefix)
    }

    /// `day` as `yyyymmdd` (UTC).
    pub fn active_day(&self, day: u32) -> String {
        format!("{p}:act:{{{p}:act:days}}:{day}", p = self.prefix)
    }

    /// Sorted set: the keys `rule` limited in one minute (minutes since the
    /// Unix epoch) -> how often, across every replica ("who is hurting").
    /// Every rule's minutes share one hash tag: one flush pipeline on a Cluster.
    pub fn limited_minute(&self, rule: &str, minute: u64) -> String {
        format!("{p}:act:{{{p}:act:top}}:{rule}:{minute}", p = self.prefix)
    }

    /// `hour`: hours since the Unix epoch.
    pub fn rule_hour(&self, rule: &str, hour: u64) -> RuleHourKeys {
        let base = format!("{p}:act:{{{p}:act:r:{rule}}}:{hour}", p = self.prefix);
        RuleHourKeys {
            requests: format!("{base}:req"),
            paths: format!("{base}:paths"),
            clients: format!("{base}:clients"),
            base,
        }
    }
}

impl KeySpace {
    pub fn activity(&self) -> ActivityKeys {
        ActivityKeys {
            prefix: self.prefix.clone(),
        }
    }
}

/// The fleet registry (`fleet.rs`, `lua/fleet_beat.lua`): two keys under
/// one hash tag, so the beat script is one call on a Redis Cluster too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetKeys {
    /// Sorted set: replica id -> last beat (ms, Redis time).
    pub seen: String,
    /// Hash: replica id -> its JSON description (version, config hash, …).
    pub info: String,
}

impl KeySpace {
    /// `tg:{tg:fleet}:seen` and `tg:{tg:fleet}:info`.
    pub fn fleet(&self) -> FleetKeys {
        let key = |name: &str| format!("{p}:{{{p}:fleet}}:{name}", p = self.prefix);
        FleetKeys {
            seen: key("seen"),
            info: key("info"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_keys_share_one_hash_tag_and_start_with_the_prefix() {
        let k = KeySpace::new("tg").fleet();
        assert_eq!(k.seen, "tg:{tg:fleet}:seen");
        assert_eq!(k.info, "tg:{tg:fleet}:info");
        assert_eq!(
            crate::limiter::slot_breaker::slot(&k.seen),
            crate::limiter::slot_breaker::slot(&k.info)
        );
    }

    #[test]
    fn allowlist_keys_share_one_hash_tag_and_start_with_the_prefix() {
        let k = KeySpace::new("tg").allowlist();
        assert_eq!(
            k.all(),
            [
                "tg:{tg:allow}:meta",
                "tg:{tg:allow}:entries",
                "tg:{tg:allow}:exp",
                "tg:{tg:allow}:events"
            ]
        );
        assert_eq!(k.snapshot_budget, "tg:{tg:allow}:snapshot_budget");
        assert_eq!(k.lost, "tg:{tg:allow}:lost");
        assert_eq!(k.restore_lock, "tg:{tg:allow}:restore_lock");
        assert_eq!(
            k.staging("ab12"),
            [
                "tg:{tg:allow}:restore:ab12:entries",
                "tg:{tg:allow}:restore:ab12:exp"
            ]
        );
    }

    #[test]
    fn denylist_keys_have_their_own_hash_tag_and_stream() {
        let k = KeySpace::new("tg").list("deny");
        assert_eq!(
            k.all(),
            [
                "tg:{tg:deny}:meta",
                "tg:{tg:deny}:entries",
                "tg:{tg:deny}:exp",
                "tg:{tg:deny}:events"
            ]
        );
        assert_eq!(k.lost, "tg:{tg:deny}:lost");
        assert_eq!(k.staging("ab")[0], "tg:{tg:deny}:restore:ab:entries");
        assert_eq!(
            k.ban("login", "2001:db8::/64"),
            [
                "tg:{tg:deny}:ban:login:2001:db8::/64:count",
                "tg:{tg:deny}:ban:login:2001:db8::/64:offences"
            ]
        );
        assert_ne!(
            crate::limiter::slot_breaker::slot(&k.meta),
            crate::limiter::slot_breaker::slot(&KeySpace::new("tg").allowlist().meta)
        );
    }

    #[test]
    fn long_key_parts_keep_a_readable_prefix_and_a_hash_of_the_whole() {
        assert_eq!(bounded_part("203.0.113.7"), "203.0.113.7");
        let at_bound = "a".repeat(MAX_KEY_PART_BYTES);
        assert_eq!(bounded_part(&at_bound), at_bound.as_str());
        let long = format!("{}x", at_bound);
        let b = bounded_part(&long);
        assert_eq!(b.len(), 64 + 41);
        assert!(
            b.starts_with(&"a".repeat(64)) && b.as_bytes()[64] == b'#',
            "{b}"
        );
        let other = format!("{}y", at_bound);
        assert_ne!(bounded_part(&other), b, "the hash covers the whole part");
        // A short part spelled like a hashed one is hashed as well.
        let forged = b.to_string();
        assert_ne!(bounded_part(&forged), b);
        assert!(looks_hashed(&bounded_part(&forged)));
        // Multi-byte characters are cut on a boundary.
        let wide = "é".repeat(100);
        assert!(bounded_part(&wide).starts_with(&"é".repeat(32)));
    }

    #[test]
    fn limiter_keys_share_one_hash_tag() {
        let ks = KeySpace::new("tg");
        let base = ks.limit_base(Algorithm::FixedWindow, "login", "203.0.113.7");
        assert_eq!(base, "tg:rl:{login|203.0.113.7}:fw");
        assert_eq!(
            KeySpace::limit_key(&base, 60_000),
            "tg:rl:{login|203.0.113.7}:fw:60000"
        );
        let g = ks.limit_base(Algorithm::Gcra, AD_HOC_RULE, "user:42");
        assert_eq!(g, "tg:rl:{~|user:42}:gc");
        assert_eq!(
            ks.limit_base(Algorithm::SlidingWindow, "a", "k"),
            "tg:rl:{a|k}:sw"
        );
        assert_eq!(
            ks.limit_base(Algorithm::SlidingLog, "a", "k"),
            "tg:rl:{a|k}:sl"
        );
    }

    #[test]
    fn activity_keys_share_one_hash_tag_per_family() {
        let a = KeySpace::new("tg").activity();
        assert_eq!(a.presence(), "tg:act:{tg:act:online}:seen");
        assert_eq!(a.active_day(20261128), "tg:act:{tg:act:days}:20261128");
        let h = a.rule_hour("pages", 493_000);
        assert_eq!(h.requests, "tg:act:{tg:act:r:pages}:493000:req");
        assert_eq!(h.paths, "tg:act:{tg:act:r:pages}:493000:paths");
        assert_eq!(h.clients, "tg:act:{tg:act:r:pages}:493000:clients");
        assert_eq!(
            h.path_clients("/a/b"),
            "tg:act:{tg:act:r:pages}:493000:u:/a/b"
        );
        let long = format!("/{}", "x".repeat(300));
        assert!(h.path_clients(&long).len() < 100 + 64 + 41);
    }
}
