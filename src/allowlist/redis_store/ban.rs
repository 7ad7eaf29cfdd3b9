//! The ban step's Redis half: `lua/deny_ban.lua`, after the upsert module.

use super::super::ban::{BanAnswer, BanAsk};
use super::super::recovery::WriteError;
use super::super::{new_epoch, Entry, Stored};
use super::{number, scripts, unexpected, RedisAllowlist, EVENT_CAP, EVENT_RETENTION_MS};

impl RedisAllowlist {
    /// One script call: count, and ban on an offence (`BanAnswer`).
    pub async fn ban(&self, ask: &BanAsk<'_>) -> Result<BanAnswer, WriteError> {
        let cidr = ask.cidr.to_string();
        let [count, offences] = self.keys.ban(ask.rule, &cidr);
        let b = ask.ban;
        let mut inv = self.invocation(&scripts().ban);
        inv.key(&self.keys.lost)
            .key(count)
            .key(offences)
            .arg(&cidr)
            .arg(b.after)
            .arg(b.within_ms())
            .arg(b.duration_ms())
            .arg(b.factor)
            .arg(b.max_ms())
            .arg(b.remember_ms())
            .arg(b.why(ask.rule))
            .arg(ask.actor())
            .arg(new_epoch())
            .arg(EVENT_RETENTION_MS)
            .arg(EVENT_CAP)
            .arg(if ask.shadow { "1" } else { "0" });
        let reply = self.write(&inv).await?;
        match reply.as_slice() {
            [w] if w == "denied" => Ok(BanAnswer::AlreadyDenied),
            [w, n] if w == "counted" => Ok(BanAnswer::Counted(number(n)?)),
            [w, offence, ttl, note] if w == "shadow" => Ok(BanAnswer::Shadow {
                offence: number(offence)?,
                ttl_ms: number(ttl)?,
                note: note.clone(),
            }),
            [w, seq, expires_at, created_at, offence, ttl, note] if w == "banned" => {
                Ok(BanAnswer::Banned {
                    stored: Stored {
                        entry: Entry {
                            cidr: ask.cidr,
                            expires_at: number(expires_at)?,
                            note: note.clone(),
                            created_at: number(created_at)?,
                            actor: ask.actor(),
                            exempt: false,
                            payload: (),
                        },
                        seq: number(seq)?,
                    },
                    offence: number(offence)?,
                    ttl_ms: number(ttl)?,
                })
            }
            _ => Err(unexpected("deny_ban", &reply).into()),
        }
    }
}
