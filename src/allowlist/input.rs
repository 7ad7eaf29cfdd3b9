//! Validation of admin input, shared by the admin API and `tollgate allow`.
//! Everything is checked here, before any script runs: bad input writes nothing.

use std::time::Duration;

use ipnet::IpNet;

use super::cidr::{self, EntryError, NetError, PrefixFloor};
use super::member::Member;
use crate::config::AllowlistConfig;

/// Longest note, in bytes.
pub const MAX_NOTE_BYTES: usize = 256;
/// Longest actor name, in bytes.
pub const MAX_ACTOR_BYTES: usize = 64;

/// A validated entry to add or refresh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEntry<M: Member = IpNet> {
    /// The member (a network; an override's rule and key).
    pub cidr: M,
    /// 0: never expires (only with `allowlist.allow_permanent`).
    pub ttl_ms: u64,
    pub note: String,
    pub actor: String,
    /// Start a new, empty allowlist if Redis holds none, even though a node
    /// witnessed one that Redis lost (`--new-epoch`, `"new_epoch": true`).
    /// Without it such a write is refused (`recovery`).
    pub new_epoch: bool,
    /// Never banned automatically (`--exempt`, `"exempt": true`); allowlist only.
    pub exempt: bool,
    /// What the entry carries (`()` for the IP lists; an override's limits).
    pub payload: M::Payload,
}

/// A problem with one input field; nothing was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field,
        message: message.into(),
    }
}

/// Check a new entry: `cidr`, `ttl` (default `allowlist.default_ttl`), `note`.
/// The actor is checked by [`actor`], since where it comes from differs.
pub fn new_entry(
    cidr: &str,
    ttl: Option<&str>,
    note: Option<&str>,
    actor: String,
    cfg: &AllowlistConfig,
) -> Result<NewEntry, FieldError> {
    let floor = PrefixFloor {
        v4: cfg.min_prefix_v4,
        v6: cfg.min_prefix_v6,
    };
    let cidr = cidr::parse_entry(cidr, floor)
        .map_err(|e| bad("cidr", entry_message(e, floor, cfg.section)))?;
    let ttl_ms = match ttl {
        None => millis(cfg.default_ttl),
        Some(t) => parse_ttl(t, cfg).map_err(|e| bad("ttl", e.to_string()))?,
    };
    let note = note.unwrap_or_default();
    if note.len() > MAX_NOTE_BYTES {
        return Err(bad(
            "note",
            format!("is {} bytes; at most {MAX_NOTE_BYTES} are kept", note.len()),
        ));
    }
    Ok(NewEntry {
        cidr,
        ttl_ms,
        note: note.to_string(),
        actor,
        new_epoch: false,
        exempt: false,
        payload: (),
    })
}

/// `exempt`: only an allowlist entry can be (it keeps an address from
/// automatic bans; a denylist entry has nothing to be exempt from).
pub fn exempt(exempt: bool, cfg: &AllowlistConfig) -> Result<bool, FieldError> {
    if exempt && cfg.section != "allowlist" {
        return Err(bad(
            "exempt",
            format!(
                "only an allowlist entry can be exempt from bans, not a {} one",
                cfg.section
            ),
        ));
    }
    Ok(exempt)
}

/// What to tell whoever typed a refused network. Host bits set and a
/// prefix wider than the floor are said together, with a network that would
/// be accepted: naming only the canonical form (`0.0.0.0/4` for
/// `10.0.0.0/4`) would suggest something refused next.
fn entry_message(e: EntryError, floor: PrefixFloor, section: &str) -> String {
    let EntryError::Net(NetError::HostBits { given, canonical }) = &e else {
        return e.to_string();
    };
    let (min, setting) = match canonical {
        IpNet::V4(_) => (floor.v4, format!("{section}.min_prefix_v4")),
        IpNet::V6(_) => (floor.v6, format!("{section}.min_prefix_v6")),
    };
    if canonical.prefix_len() >= min {
        return e.to_string();
    }
    let wide = format!(
        "{given:?} has host bits set, and /{} is wider than /{min} ({setting})",
        canonical.prefix_len()
    );
    // The typed address at the floor's prefix: host bits clear, not too wide.
    let accepted = given
        .split('/')
        .next()
        .and_then(|addr| cidr::parse_ip(addr).ok())
        .and_then(|ip| IpNet::new(ip, min).ok())
        .filter(|net| net.addr().is_ipv4() == canonical.addr().is_ipv4())
        .map(|net| net.trunc());
    match accepted {
        Some(net) => format!("{wide}: {net} would be accepted"),
        None => format!("{wide}: use a prefix of /{min} or longer"),
    }
}

/// `"24h"`, `"90m"`, ... up to `allowlist.max_ttl`; `"never"` only with
/// `allowlist.allow_permanent = true` (then 0).
pub fn parse_ttl(text: &str, cfg: &AllowlistConfig) -> Result<u64, TtlError> {
    if text.trim() == "never" {
        return if cfg.allow_permanent {
            Ok(0)
        } else {
            Err(TtlError::Permanent(cfg.section))
        };
    }
    let d = humantime::parse_duration(text.trim()).map_err(|e| TtlError::Duration {
        text: text.to_string(),
        source: e,
    })?;
    if d > cfg.max_ttl {
        return Err(TtlError::TooLong {
            text: text.to_string(),
            max: cfg.max_ttl,
            section: cfg.section,
        });
    }
    match millis(d) {
        0 => Err(TtlError::TooShort(text.to_string())),
        ms => Ok(ms),
    }
}

/// A `ttl` refused by [`parse_ttl`].
#[derive(Debug, thiserror::Error)]
pub enum TtlError {
    /// The config section (`allowlist`, `denylist`).
    #[error("\"never\" is refused: permanent entries need {0}.allow_permanent = true")]
    Permanent(&'static str),
    #[error("bad duration {text:?}: {source} (e.g. \"24h\", \"30m\")")]
    Duration {
        text: String,
        source: humantime::DurationError,
    },
    #[error("{text:?} is longer than {section}.max_ttl ({})", humantime::format_duration(*max))]
    TooLong {
        text: String,
        max: std::time::Duration,
        section: &'static str,
    },
    #[error("{0:?} is too short: at least 1ms")]
    TooShort(String),
}

/// An actor refused by [`actor`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?}: 1 to {MAX_ACTOR_BYTES} visible ASCII characters")]
pub struct ActorError(pub String);

/// Who made a change: 1 to 64 visible ASCII characters.
pub fn actor(text: &str) -> Result<String, ActorError> {
    if text.is_empty()
        || text.len() > MAX_ACTOR_BYTES
        || !text.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return Err(ActorError(text.to_string()));
    }
    Ok(text.to_string())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(allow_permanent: bool) -> AllowlistConfig {
        AllowlistConfig {
            section: "allowlist",
            default_ttl: Duration::from_secs(86_400),
            max_ttl: Duration::from_secs(30 * 86_400),
            min_prefix_v4: 8,
            min_prefix_v6: 32,
            allow_permanent,
            reap_interval: Duration::from_secs(1),
            state_file: None,
            snapshot_pages_per_second: 200,
            snapshot_fleet_pages_per_second: 400,
            snapshot_jitter_max: Duration::from_secs(10),
        }
    }

    fn field(cidr: &str, ttl: Option<&str>, note: Option<&str>) -> &'static str {
        new_entry(cidr, ttl, note, "t".into(), &cfg(false))
            .unwrap_err()
            .field
    }

    #[test]
    fn a_good_entry_takes_the_default_ttl() {
        let e = new_entry("203.0.113.7", None, Some("login"), "a".into(), &cfg(false)).unwrap();
        assert_eq!(e.cidr.to_string(), "203.0.113.7/32");
        assert_eq!(e.ttl_ms, 86_400_000);
        assert_eq!(e.note, "login");
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(field("nope", None, None), "cidr");
        assert_eq!(field("203.0.113.7/24", None, None), "cidr");
        assert_eq!(field("0.0.0.0/0", None, None), "cidr");
        assert_eq!(field("10.0.0.0/7", None, None), "cidr");
        assert_eq!(field("1.2.3.4", Some("31d"), None), "ttl");
        assert_eq!(field("1.2.3.4", Some("0s"), None), "ttl");
        assert_eq!(field("1.2.3.4", Some("soon"), None), "ttl");
        assert_eq!(field("1.2.3.4", Some("never"), None), "ttl");
        assert_eq!(field("1.2.3.4", None, Some(&"x".repeat(257))), "note");
        assert!(new_entry(
            "1.2.3.4",
            None,
            Some(&"x".repeat(256)),
            "t".into(),
            &cfg(false)
        )
        .is_ok());
    }

    #[test]
    fn a_wide_network_with_host_bits_is_told_both_and_offered_an_accepted_one() {
        let message = |text: &str| {
            new_entry(text, None, None, "t".into(), &cfg(false))
                .unwrap_err()
                .message
        };
        let m = message("10.0.0.0/4");
        assert!(
            m.contains("host bits")
                && m.contains("min_prefix_v4")
                && m.contains("10.0.0.0/8 would be accepted"),
            "{m}"
        );
        assert!(
            !m.contains(" 0.0.0.0/4") && !m.contains("canonical form"),
            "suggests a refused network: {m}"
        );
        let m = message("2001:db8::1/16");
        assert!(m.contains("2001:db8::/32 would be accepted"), "{m}");
        // Within the floor the canonical form is the suggestion, as before.
        assert!(message("10.1.2.3/16").contains("the canonical form is 10.1.0.0/16"));
        for accepted in ["10.0.0.0/8", "2001:db8::/32"] {
            assert!(new_entry(accepted, None, None, "t".into(), &cfg(false)).is_ok());
        }
    }

    #[test]
    fn never_is_permanent_only_when_allowed() {
        assert_eq!(parse_ttl("never", &cfg(true)).unwrap(), 0);
        assert!(parse_ttl("never", &cfg(false))
            .unwrap_err()
            .to_string()
            .contains("allow_permanent"));
        assert_eq!(parse_ttl("30d", &cfg(false)).unwrap(), 30 * 86_400_000);
    }

    #[test]
    fn actors_are_short_visible_text() {
        assert!(actor("admin-api").is_ok());
        assert!(actor("").is_err());
        assert!(actor("a\nb").is_err());
        assert!(actor(&"a".repeat(65)).is_err());
    }
}
