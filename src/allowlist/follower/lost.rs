//! The follower when Redis lost the list: keep serving the table, and take
//! part in the fleet's election to put it back (`allowlist/recovery.rs`).

use super::{Follower, Step};
use crate::allowlist::recovery::{Born, Origin, Over};
use crate::allowlist::redis_store::FleetRestore;
use crate::redis_conn::StoreError;

impl<M: crate::allowlist::member::Member> Follower<'_, M> {
    /// Redis answers but holds no allowlist while this node knows one: keep
    /// serving it, say so once, and offer it to the fleet's election
    /// (`recovery`). Each look at `meta` (about every second) asks again
    /// until an allowlist is back.
    pub(super) async fn lost(&mut self) -> Result<Step, StoreError> {
        let status = self.list.status();
        if status.set_source_lost(true) {
            tracing::warn!(
                entries = self.table.len(),
                epoch = %self.table.epoch,
                seq = self.table.seq,
                "{0}: Redis holds no {0} (restarted empty, flushed or failed over); serving the last known table, and the fleet puts it back", self.list.kind()
            );
        }
        self.offer(None).await
    }

    /// Redis holds an epoch begun by a plain write while this node holds
    /// live entries of another (`recovery::is_overwritten`): Redis lost the
    /// list and someone wrote before the fleet put it back. Offer this node's
    /// table merged with that epoch's entries (theirs win).
    pub(super) async fn merge_overwritten(&mut self, epoch: &str) -> Result<Step, StoreError> {
        if self.list.status().set_source_lost(true) {
            tracing::warn!(
                ours = %self.table.epoch,
                redis = %epoch,
                "{0}: Redis holds an epoch begun by a plain write, without this node's entries (Redis lost them first); serving the last known table, and the fleet puts it back merged with that epoch", self.list.kind()
            );
        }
        self.offer(Some(epoch)).await
    }

    /// Take part in the fleet's election (`recovery`); the node that wins
    /// builds what to put back (its table, merged with `over_epoch`'s
    /// entries if given) and restores it. Losers only ask: building a large
    /// table's entries each second would be waste.
    async fn offer(&mut self, over_epoch: Option<&str>) -> Result<Step, StoreError> {
        let witness = Origin {
            node: self.list.node_id().to_string(),
            epoch: self.table.epoch.clone(),
            seq: self.table.seq,
        };
        let claimed = self
            .redis
            .claim_restore(&witness, self.table.len() as u64, over_epoch)
            .await?;
        let lease = match claimed {
            Ok(lease) => lease,
            Err(outcome) => return Ok(self.restored(outcome, &witness)),
        };
        let now = self.table.clock.now_ms();
        let mut entries = self.list.details().entries_of(&self.table, now);
        let over = match over_epoch {
            None => Over::Nothing,
            Some(epoch) => {
                let theirs = match self.redis.listing().await {
                    Ok(l) if l.epoch == epoch => l,
                    other => {
                        self.redis.release(lease).await;
                        return other.map(|_| Step::Check);
                    }
                };
                let mut merged: std::collections::BTreeMap<_, _> =
                    entries.into_iter().map(|e| (e.cidr.clone(), e)).collect();
                merged.extend(theirs.entries.into_iter().map(|e| (e.cidr.clone(), e)));
                entries = merged.into_values().collect();
                Over::Write {
                    epoch: theirs.epoch,
                    seq: theirs.seq,
                }
            }
        };
        let born = Born::Fleet {
            origin: witness.clone(),
            over,
        };
        let outcome = self.redis.restore_claimed(lease, &entries, &born).await?;
        Ok(self.restored(outcome, &witness))
    }

    /// Log and count what an offer came to; the next step.
    fn restored(&self, outcome: FleetRestore, witness: &Origin) -> Step {
        match outcome {
            FleetRestore::Restored(r) => {
                self.list.status().fleet_restores.inc();
                tracing::info!(
                    epoch = %r.epoch,
                    kept = r.kept,
                    dropped = r.dropped,
                    from_epoch = %witness.epoch,
                    from_seq = witness.seq,
                    node = %witness.node,
                    "{0}: this node put back the {0} Redis lost, as a new epoch; every node follows it", self.list.kind()
                );
                Step::Check
            }
            FleetRestore::Overtaken => {
                tracing::info!(
                    "{0}: the {0} appeared while this node staged its table; following it instead",
                    self.list.kind()
                );
                Step::Check
            }
            FleetRestore::NotLost => Step::Check,
            FleetRestore::Waiting(left) => {
                tracing::debug!(
                    lock_ms = left.as_millis() as u64,
                    "{0}: another node is putting back the {0}",
                    self.list.kind()
                );
                Step::Tail { block: true }
            }
        }
    }
}
