//! Which replicated list a set of the list machinery serves. The allowlist
//! and the denylist are the same types, scripts, follower, reaper, state file
//! and fleet restore; only what this names differs: their Redis hash tag
//! (`{<prefix>:allow}`, `{<prefix>:deny}`), so each has its own keys and
//! stream (independent epochs, trims and restores: a deny write never
//! resyncs an allowlist follower), their config section, admin API path,
//! metric names and log words.
//!
//! `Override` is the third kind: the same machinery with another member
//! (`member`: an exact (rule, key) pair with limits, not a network), under
//! `{<prefix>:override}`, `[overrides]`, `/v1/overrides`. It is not among
//! `ALL`, the IP lists (exports, `tollgate allow|deny`, `follow --list`).

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ListKind {
    Allow,
    Deny,
    Override,
}

impl ListKind {
    /// The IP lists.
    pub const ALL: [ListKind; 2] = [ListKind::Allow, ListKind::Deny];

    /// The short word: hash tag, CLI command (`tollgate allow`, `tollgate
    /// deny`), `tollgate follow --list`.
    pub fn tag(self) -> &'static str {
        match self {
            ListKind::Allow => "allow",
            ListKind::Deny => "deny",
            ListKind::Override => "override",
        }
    }

    /// The noun: config section, admin API path (`/v1/<noun>`), metric
    /// prefix (`tollgate_<noun>_*`), the word in log lines and `/readyz`.
    pub fn noun(self) -> &'static str {
        match self {
            ListKind::Allow => "allowlist",
            ListKind::Deny => "denylist",
            ListKind::Override => "overrides",
        }
    }

    /// `allow`/`deny` as `tollgate follow --list` spells it.
    pub fn parse(text: &str) -> Option<ListKind> {
        ListKind::ALL.into_iter().find(|k| k.tag() == text)
    }
}

impl fmt::Display for ListKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.noun())
    }
}
