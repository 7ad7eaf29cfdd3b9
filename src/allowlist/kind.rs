//! Which replicated list a set of the list machinery serves. The allowlist
//! and the denylist are the same types, scripts, follower, reaper, state file
//! and fleet restore; only what this names differs: their Redis hash tag
//! (`{<prefix>:allow}`, `{<prefix>:deny}`), so each has its own keys and
//! stream (independent epochs, trims and restores: a deny write never
//! resyncs an allowlist follower), their config section, admin API path,
//! metric names and log words.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ListKind {
    Allow,
    Deny,
}

impl ListKind {
    pub const ALL: [ListKind; 2] = [ListKind::Allow, ListKind::Deny];

    /// The short word: hash tag, CLI command (`tollgate allow`, `tollgate
    /// deny`), `tollgate follow --list`.
    pub fn tag(self) -> &'static str {
        match self {
            ListKind::Allow => "allow",
            ListKind::Deny => "deny",
        }
    }

    /// The noun: config section, admin API path (`/v1/<noun>`), metric
    /// prefix (`tollgate_<noun>_*`), the word in log lines and `/readyz`.
    pub fn noun(self) -> &'static str {
        match self {
            ListKind::Allow => "allowlist",
            ListKind::Deny => "denylist",
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
