//! When Redis loses a list (restarted without persistence, `FLUSHALL`, a
//! failover to an empty replica), the fleet puts it back: one node, elected
//! in Redis, restores its last known table as a new epoch.
//!
//! **Lost, not wiped.** Every write, restore and intended wipe leaves `meta`
//! holding an epoch: `allow clear` is a restore of nothing (a new, empty
//! epoch with a `restore` event, `meta.born = clear`), never a deletion of
//! `meta`. So the rule is one line ([`is_lost`]): Redis holds no `meta` while
//! a node holds a table of an epoch (it followed one, or loaded one from its
//! state file) → Redis lost it. An empty Redis seen by a node that never
//! knew an epoch (a fresh install) is just empty.
//!
//! **Another epoch with a shorter history.** Every epoch records how it
//! began (`meta.born`): `restore`, `clear`, `new_epoch` and `fleet` are
//! decisions to replace the list, and every node follows them. `write` is
//! not: a plain write into a Redis holding no allowlist and no witness (a
//! write faster than the fleet noticed the loss, or one made while no node
//! ran) starts an epoch whose history begins at that write. A node holding
//! a non-empty table of another epoch knows a longer history, so Redis lost
//! it: the fleet puts it back merged with what that epoch holds (its entries
//! win), as a `fleet` restore that goes ahead only while Redis still holds
//! that epoch at the `seq` read ([`Over::Write`]). Epochs are not otherwise
//! ordered: a failover to a replica that missed a restore (an older epoch
//! born of a restore) is followed like any other.
//!
//! **The election** (`lua/allow_recover.lua`): the node that finds the loss
//! writes a witness (`lost`: node, epoch, seq, entries) and takes a lock
//! (`SET NX PX`, [`LOCK_TTL`], extended while it stages). Only the holder
//! stages its table through the bounded restore path; the final swap runs
//! only while `meta` is still absent, so two nodes never both restore, and an
//! operator's restore or `--new-epoch` made meanwhile wins. A holder that
//! dies leaves the lock to expire; the next node claims it.
//!
//! **No write starts from nothing.** While the witness exists (until a
//! restore of any kind), a write that would create an epoch is refused with
//! [`LostList`]'s message, unless the operator asks for a new, empty epoch.
//!
//! Generic in its keys ([`RecoveryKeys`]): a second list on the same
//! machinery (a denylist, overrides) passes its own `meta`, `lost` and
//! `restore_lock` and its own restore path.

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::Script;

use super::kind::ListKind;
use crate::redis_conn::StoreError;

/// How long the elected node holds the lock without extending it: a node
/// that died mid-restore delays the next one by at most this.
pub const LOCK_TTL: Duration = Duration::from_secs(10);
/// The holder extends its lock after this many staged chunks (well under
/// `LOCK_TTL` of Redis time: a chunk costs about 1 ms).
pub const EXTEND_EVERY_CHUNKS: usize = 50;

fn script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| Script::new(include_str!("../../lua/allow_recover.lua")))
}

/// Whether Redis lost the list a node knew: no `meta` epoch in Redis, while
/// the node's table belongs to one.
pub fn is_lost(redis_epoch: Option<&str>, our_epoch: &str) -> bool {
    redis_epoch.is_none_or(str::is_empty) && !our_epoch.is_empty()
}

/// Whether Redis holds another epoch with a shorter history than the node's
/// (see the module doc): begun by a plain write, while the node holds live
/// entries of another epoch.
pub fn is_overwritten(redis_epoch: &str, born: &str, our_epoch: &str, our_live: usize) -> bool {
    born == "write" && !our_epoch.is_empty() && redis_epoch != our_epoch && our_live > 0
}

/// The keys the election uses: a list's `meta`, its `lost` witness and its
/// `restore_lock` (one hash tag).
#[derive(Clone, Copy, Debug)]
pub struct RecoveryKeys<'a> {
    pub meta: &'a str,
    pub lost: &'a str,
    pub lock: &'a str,
}

/// Where a restored epoch came from: the node, and the epoch and `seq` of
/// the table it put back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub node: String,
    pub epoch: String,
    pub seq: u64,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node {} (epoch {:?}, seq {})",
            self.node, self.epoch, self.seq
        )
    }
}

/// How an epoch made by a restore began (`meta.born`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Born {
    /// An operator's file (`allow restore`).
    Restore,
    /// An intended wipe (`allow clear`): a new, empty epoch.
    Clear,
    /// A node put back the table Redis lost, over what Redis holds then.
    Fleet { origin: Origin, over: Over },
}

/// What Redis must still hold for a fleet restore to go ahead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Over {
    /// No `meta`: the list was lost.
    Nothing,
    /// An epoch born of a plain write after the loss, at this `seq`.
    Write { epoch: String, seq: u64 },
}

impl Born {
    pub fn as_str(&self) -> &'static str {
        match self {
            Born::Restore => "restore",
            Born::Clear => "clear",
            Born::Fleet { .. } => "fleet",
        }
    }
}

/// The witness of a list Redis lost, as a refused write reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostList {
    /// Which list was lost (the words and commands of the message).
    pub kind: ListKind,
    pub node: String,
    pub epoch: String,
    pub seq: u64,
    pub entries: u64,
}

impl LostList {
    /// A script's `{"lost", node, epoch, seq, entries}` reply.
    pub fn from_reply(reply: &[String], kind: ListKind) -> Option<LostList> {
        match reply {
            [tag, node, epoch, seq, entries] if tag == "lost" => Some(LostList {
                kind,
                node: node.clone(),
                epoch: epoch.clone(),
                seq: seq.parse().unwrap_or(0),
                entries: entries.parse().unwrap_or(0),
            }),
            _ => None,
        }
    }
}

impl fmt::Display for LostList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refused, nothing written: Redis holds no {noun}, but node {} held epoch {:?} \
             (seq {}, {} entries) when Redis lost it; the fleet puts it back within seconds \
             (retry then), or restore a file with `tollgate {tag} restore FILE` (a node's \
             table: `tollgate {tag} export --from-node ADMIN_URL`); to start an empty \
             {noun} deliberately, write with `--new-epoch` (API: \"new_epoch\": true)",
            self.node,
            self.epoch,
            self.seq,
            self.entries,
            noun = self.kind.noun(),
            tag = self.kind.tag(),
        )
    }
}

/// Why an admin write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Redis lost the list and it is not back yet.
    #[error("{0}")]
    Lost(LostList),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a claim found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Redis holds the list (nothing lost, or someone restored it).
    Present,
    /// This node holds the lock: it restores.
    Won,
    /// Another node restores; its lock runs this much longer.
    Held(Duration),
}

/// Leave the witness (when the list is lost: no `over_epoch`) and try to
/// take the lock (`lua/allow_recover.lua`); `over_epoch`: the epoch born of
/// a plain write that `meta` must hold instead.
pub async fn claim<C: ConnectionLike>(
    conn: &mut C,
    keys: RecoveryKeys<'_>,
    token: &str,
    witness: &Origin,
    entries: u64,
    over_epoch: Option<&str>,
) -> Result<Claim, StoreError> {
    let reply: Vec<String> = invocation(keys, "claim", token)
        .arg(LOCK_TTL.as_millis() as u64)
        .arg(&witness.node)
        .arg(&witness.epoch)
        .arg(witness.seq)
        .arg(entries)
        .arg(over_epoch.unwrap_or(""))
        .invoke_async(conn)
        .await
        .map_err(StoreError::from)?;
    match reply.as_slice() {
        [p] if p == "present" => Ok(Claim::Present),
        [w] if w == "won" => Ok(Claim::Won),
        [h, ms] if h == "held" => Ok(Claim::Held(Duration::from_millis(
            ms.parse::<i64>().unwrap_or(0).max(0) as u64,
        ))),
        _ => Err(StoreError::Reply(format!("allow_recover reply {reply:?}"))),
    }
}

/// Keep holding the lock; false when it expired or is another node's.
pub async fn extend<C: ConnectionLike>(
    conn: &mut C,
    keys: RecoveryKeys<'_>,
    token: &str,
) -> Result<bool, StoreError> {
    let reply: Vec<String> = invocation(keys, "extend", token)
        .arg(LOCK_TTL.as_millis() as u64)
        .invoke_async(conn)
        .await
        .map_err(StoreError::from)?;
    Ok(reply.first().is_some_and(|r| r == "ok"))
}

/// Give the lock back (only if it is still ours).
pub async fn release<C: ConnectionLike>(conn: &mut C, keys: RecoveryKeys<'_>, token: &str) {
    let _: Result<Vec<String>, _> = invocation(keys, "release", token).invoke_async(conn).await;
}

fn invocation<'a>(keys: RecoveryKeys<'_>, op: &str, token: &str) -> redis::ScriptInvocation<'a> {
    let mut inv = script().prepare_invoke();
    inv.key(keys.meta)
        .key(keys.lost)
        .key(keys.lock)
        .arg(op)
        .arg(token);
    inv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_absent_epoch_under_a_known_table_is_a_loss() {
        assert!(is_lost(None, "9f2c"), "Redis lost the node's epoch");
        assert!(is_lost(Some(""), "9f2c"));
        assert!(!is_lost(None, ""), "a fresh install is just empty");
        assert!(
            !is_lost(Some("cleared"), "9f2c"),
            "a clear leaves an epoch: followed"
        );
        assert!(!is_lost(Some("9f2c"), "9f2c"));
    }

    #[test]
    fn only_an_epoch_begun_by_a_plain_write_under_a_known_table_is_overwritten() {
        assert!(is_overwritten("new", "write", "old", 3));
        assert!(
            !is_overwritten("new", "write", "old", 0),
            "nothing to put back"
        );
        assert!(!is_overwritten("new", "write", "", 3), "never knew one");
        assert!(!is_overwritten("old", "write", "old", 3), "our own");
        for decided in ["restore", "clear", "new_epoch", "fleet", ""] {
            assert!(!is_overwritten("new", decided, "old", 3), "{decided}");
        }
    }

    #[test]
    fn a_lost_reply_reads_back_and_its_message_says_what_to_do() {
        let reply = ["lost", "web-3", "9f2c", "42", "1200"].map(String::from);
        let lost = LostList::from_reply(&reply, ListKind::Allow).unwrap();
        assert_eq!((lost.seq, lost.entries), (42, 1200));
        let text = lost.to_string();
        for needle in [
            "web-3",
            "tollgate allow restore",
            "--new-epoch",
            "new_epoch",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
        assert_eq!(
            LostList::from_reply(&["1".into(), "e".into()], ListKind::Allow),
            None
        );
        let deny = LostList::from_reply(&reply, ListKind::Deny)
            .unwrap()
            .to_string();
        assert!(deny.contains("holds no denylist") && deny.contains("tollgate deny restore"));
    }
}
