//! The fleet's side of `recovery` in Redis: the election (claim, lease,
//! release), the bounded restore of a node's table under the lease, and how
//! the current epoch began (`meta.born`, origin).

use std::time::Duration;

use redis::aio::ConnectionLike;

use super::{new_epoch, RedisAllowlist, Restored, RESTORE_CHUNK};
use crate::allowlist::recovery::{self, Born, Claim, Origin, RecoveryKeys};
use crate::allowlist::Entry;
use crate::redis_conn::{RedisConn, StoreError};

/// The election won: this node holds the restore lock until it restores or
/// releases.
pub struct Lease {
    token: String,
    conn: RedisConn,
}

/// What a node's attempt to put back a lost list did.
#[derive(Clone, Debug)]
pub enum FleetRestore {
    /// Redis holds an allowlist: nothing to do.
    NotLost,
    /// Another node holds the election's lock for this much longer.
    Waiting(Duration),
    /// This node restored it.
    Restored(Restored),
    /// This node staged it, but an allowlist appeared first (an operator's
    /// restore or `--new-epoch`): nothing changed.
    Overtaken,
}

/// How the epoch Redis holds began (`meta.born`), and where a fleet
/// restore took it from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Birth {
    /// `write`, `new_epoch`, `restore`, `clear` or `fleet`; empty: no epoch,
    /// or one written before this field.
    pub born: String,
    pub origin: Option<Origin>,
}

impl<M: crate::allowlist::member::Member> RedisAllowlist<M> {
    fn recovery_keys(&self) -> RecoveryKeys<'_> {
        RecoveryKeys {
            meta: &self.keys.meta,
            lost: &self.keys.lost,
            lock: &self.keys.restore_lock,
        }
    }

    /// Entries stored (expired ones the reaper has not reached included).
    pub async fn stored_count(&self) -> Result<u64, StoreError> {
        redis::cmd("HLEN")
            .arg(&self.keys.entries)
            .query_async(&mut self.writer().await?)
            .await
            .map_err(|e| self.failed(e))
    }

    /// How the current epoch began, on the writers' connection.
    pub async fn birth_now(&self) -> Result<Birth, StoreError> {
        self.birth(&mut self.writer().await?).await
    }

    /// How the current epoch began.
    pub async fn birth<C: ConnectionLike>(&self, conn: &mut C) -> Result<Birth, StoreError> {
        let (born, node, epoch, seq): (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<u64>,
        ) = redis::cmd("HMGET")
            .arg(&self.keys.meta)
            .arg(&["born", "origin_node", "origin_epoch", "origin_seq"])
            .query_async(conn)
            .await
            .map_err(StoreError::from)?;
        Ok(Birth {
            born: born.unwrap_or_default(),
            origin: node.map(|node| Origin {
                node,
                epoch: epoch.unwrap_or_default(),
                seq: seq.unwrap_or(0),
            }),
        })
    }

    /// Leave the witness (if the list is lost) and try to win the election
    /// for putting it back; `over_epoch`: the epoch born of a plain write
    /// that Redis must still hold (else: no `meta` at all). The lease, or
    /// why not (`NotLost`, `Waiting`). Only the winner builds its entries.
    pub async fn claim_restore(
        &self,
        witness: &Origin,
        entries: u64,
        over_epoch: Option<&str>,
    ) -> Result<Result<Lease, FleetRestore>, StoreError> {
        let token = new_epoch();
        let mut conn = self.writer().await?;
        let keys = self.recovery_keys();
        let claimed = recovery::claim(&mut conn, keys, &token, witness, entries, over_epoch)
            .await
            .map_err(|e| self.classify(e))?;
        Ok(match claimed {
            Claim::Present => Err(FleetRestore::NotLost),
            Claim::Held(left) => Err(FleetRestore::Waiting(left)),
            Claim::Won => Ok(Lease { token, conn }),
        })
    }

    /// Put back `entries` under a won `lease` (then given back): staged in
    /// bounded chunks like any restore, the lock extended as it goes,
    /// swapped in only while Redis still holds what `born` expects.
    pub async fn restore_claimed(
        &self,
        mut lease: Lease,
        entries: &[Entry<M>],
        born: &Born,
    ) -> Result<FleetRestore, StoreError> {
        let keys = self.recovery_keys();
        let outcome = self
            .restore_holding(&mut lease.conn, keys, &lease.token, entries, born)
            .await;
        self.release(lease).await;
        outcome
    }

    /// Give the election's lock back without restoring.
    pub async fn release(&self, mut lease: Lease) {
        recovery::release(&mut lease.conn, self.recovery_keys(), &lease.token).await;
    }

    async fn restore_holding(
        &self,
        conn: &mut RedisConn,
        keys: RecoveryKeys<'_>,
        token: &str,
        entries: &[Entry<M>],
        born: &Born,
    ) -> Result<FleetRestore, StoreError> {
        let mut staging = self.stage_begin().await?;
        for (i, chunk) in entries.chunks(RESTORE_CHUNK).enumerate() {
            let mut kept = Ok(true);
            if i > 0 && i % recovery::EXTEND_EVERY_CHUNKS == 0 {
                kept = recovery::extend(conn, keys, token).await;
            }
            let staged = match kept {
                Ok(true) => self.stage(&mut staging, chunk).await,
                Ok(false) => {
                    // Our lock expired (Redis stalled us): another node may
                    // restore now; drop ours.
                    self.stage_abort(staging).await;
                    return Ok(FleetRestore::Waiting(recovery::LOCK_TTL));
                }
                Err(e) => Err(e),
            };
            if let Err(e) = staged {
                self.stage_abort(staging).await;
                return Err(e);
            }
        }
        let restored = self.stage_finish(staging, "fleet", born).await?;
        Ok(if restored.done {
            FleetRestore::Restored(restored)
        } else {
            FleetRestore::Overtaken
        })
    }
}
