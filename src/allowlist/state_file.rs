//! `allowlist.state_file`: a node keeps its table (entries, `epoch`, `seq`,
//! stream id) on disk, so after a restart it serves the last known allowlist
//! before Redis answers, then resumes the tail from its stream id (no full
//! resync when nothing was missed).
//!
//! Written atomically (temp file, fsync, rename, fsync of the directory),
//! debounced, and once more on shutdown. Loading drops entries that expired
//! meanwhile; until Redis answers, the node's Redis-time clock is its wall
//! clock plus the offset measured when the file was written (the follower
//! reads Redis `TIME` again at its first contact).
//! A missing, unreadable or foreign file is ignored (logged): the node then
//! loads a snapshot as if it had none.
//!
//! Each entry is `[cidr, expires_at, note, actor, created_at]` (a file of an
//! earlier version has `[cidr, expires_at]`; its details load empty): a node
//! restarted while Redis is empty restores the fleet's list from it whole
//! (`recovery`).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::details::{About, AboutMap, Details};
use super::expiry::live;
use super::kind::ListKind;
use super::member::{Member, MemberSet};
use super::table::{Clock, Table};
use super::Allowlist;

/// Changes within this window are written once.
const DEBOUNCE: Duration = Duration::from_millis(500);
const FORMAT: &str = "tollgate-allowlist-state";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    format: String,
    version: u32,
    epoch: String,
    seq: u64,
    last_id: String,
    /// Redis time when written, and the node's wall clock at that moment.
    redis_ms: u64,
    system_ms: u64,
    /// Live entries only; expires_at 0 = never.
    entries: Vec<SavedEntry>,
}

/// `[cidr, expires_at, note, actor, created_at]`, with `true` after it for
/// an exempt allowlist entry; an entry with a payload (an override's limits)
/// adds it instead: `[member, expires_at, note, actor, created_at, payload]`;
/// or an earlier version's `[cidr, expires_at]`. (Untagged: tried in order,
/// so a sixth element `true` is the exempt flag; a payload is never a bool.)
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum SavedEntry {
    Exempt(String, u64, String, String, u64, bool),
    WithPayload(String, u64, String, String, u64, serde_json::Value),
    Full(String, u64, String, String, u64),
    Short(String, u64),
}

fn system_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The table kept in `path`, with expired entries dropped; `None` (logged)
/// when there is none or it cannot be used.
pub fn load<M: Member>(path: &Path, kind: ListKind) -> Option<(Table<M>, AboutMap<M>)> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::info!(path = %path.display(), "{0}: no state file yet; loading from Redis", kind);
            return None;
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "{0}: cannot read the state file; loading from Redis", kind);
            return None;
        }
    };
    match parse(&text) {
        Ok((table, details)) => {
            tracing::info!(
                path = %path.display(),
                entries = table.len(),
                epoch = %table.epoch,
                seq = table.seq,
                "{0}: serving the state file's table until Redis answers", kind
            );
            Some((table, details))
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "{0}: ignoring an unusable state file; loading from Redis", kind);
            None
        }
    }
}

/// Why a state file is not used (the node then loads from Redis).
#[derive(Debug, thiserror::Error)]
enum StateFileError {
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("format {format:?} version {version}, expected {FORMAT:?} version {VERSION}")]
    Format { format: String, version: u32 },
    #[error("{0}")]
    Member(String),
}

fn parse<M: Member>(text: &str) -> Result<(Table<M>, AboutMap<M>), StateFileError> {
    let saved: Saved = serde_json::from_str(text)?;
    if saved.format != FORMAT || saved.version != VERSION {
        return Err(StateFileError::Format {
            format: saved.format,
            version: saved.version,
        });
    }
    // Redis time now, as well as this node can tell without Redis.
    let offset = saved.redis_ms as i128 - saved.system_ms as i128;
    let now = (system_ms() as i128 + offset).max(0) as u64;
    let clock = Clock::synced(now, Instant::now());
    let mut table = Table::<M>::empty(saved.epoch, saved.seq, clock);
    table.last_id = saved.last_id;
    let mut details = AboutMap::new();
    for entry in saved.entries {
        let (text, expires_at, note, actor, created_at, exempt, payload) = match entry {
            SavedEntry::Exempt(text, exp, note, actor, at, exempt) => {
                (text, exp, note, actor, at, exempt, None)
            }
            SavedEntry::WithPayload(text, exp, note, actor, at, payload) => {
                (text, exp, note, actor, at, false, Some(payload))
            }
            SavedEntry::Full(text, exp, note, actor, at) => {
                (text, exp, note, actor, at, false, None)
            }
            SavedEntry::Short(text, exp) => {
                (text, exp, String::new(), String::new(), 0, false, None)
            }
        };
        let about = About {
            note,
            actor,
            created_at,
            exempt,
        };
        let member = M::parse(&text).map_err(StateFileError::Member)?;
        let payload = M::payload(payload.as_ref()).map_err(StateFileError::Member)?;
        if live(expires_at, now) {
            details.insert(member.clone(), about);
            table.set.insert(member, expires_at, payload);
        }
    }
    Ok((table, details))
}

fn render<M: Member>(table: &Table<M>, details: &Details<M>) -> String {
    let redis_ms = table.clock.now_ms();
    let saved = Saved {
        format: FORMAT.into(),
        version: VERSION,
        epoch: table.epoch.clone(),
        seq: table.seq,
        last_id: table.last_id.clone(),
        redis_ms,
        system_ms: system_ms(),
        entries: details
            .entries_of(table, redis_ms)
            .into_iter()
            .map(|e| {
                let payload = M::payload_json(&e.payload);
                let (member, exp) = (e.cidr.to_string(), e.expires_at);
                match (payload, e.exempt) {
                    (Some(p), _) => {
                        SavedEntry::WithPayload(member, exp, e.note, e.actor, e.created_at, p)
                    }
                    (None, true) => {
                        SavedEntry::Exempt(member, exp, e.note, e.actor, e.created_at, true)
                    }
                    (None, false) => SavedEntry::Full(member, exp, e.note, e.actor, e.created_at),
                }
            })
            .collect(),
    };
    serde_json::to_string(&saved).unwrap_or_default()
}

/// Write `bytes` to `path` atomically: a reader sees the old file or the new
/// one, never a part, and a crash leaves one of the two.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{} names no file", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
        return written;
    }
    // The rename itself is durable once the directory is.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Keep the state file equal to the published table until `stop`; a last
/// write on the way out. Nothing is written before the table is synced.
pub async fn keep<M: Member>(list: Arc<Allowlist<M>>, stop: CancellationToken) {
    let Some(path) = list.state_file().map(Path::to_path_buf) else {
        return;
    };
    let mut changes = list.subscribe();
    let mut dirty = false;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                if dirty || changes.has_changed().unwrap_or(false) {
                    save(&list, &path, &mut failing).await;
                }
                return;
            }
            r = changes.changed(), if !dirty => {
                if r.is_err() {
                    return;
                }
                dirty = true;
            }
            _ = tokio::time::sleep(DEBOUNCE), if dirty => {
                changes.borrow_and_update();
                save(&list, &path, &mut failing).await;
                dirty = false;
            }
        }
    }
}

async fn save<M: Member>(list: &Allowlist<M>, path: &Path, failing: &mut bool) {
    if !list.is_synced() {
        return;
    }
    let text = render(&list.table(), list.details());
    let target = path.to_path_buf();
    let written = tokio::task::spawn_blocking(move || write_atomic(&target, text.as_bytes()))
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)));
    match written {
        Ok(()) if *failing => {
            tracing::info!(path = %path.display(), "{0}: the state file is written again", list.kind());
            *failing = false;
        }
        Ok(()) => {}
        Err(e) if !*failing => {
            tracing::warn!(path = %path.display(), error = %e, "{0}: cannot write the state file; a restart would load from Redis", list.kind());
            *failing = true;
        }
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_table_loads_back_without_its_expired_entries() {
        let mut t = Table::new("e1".into(), 7, Clock::system());
        t.last_id = "1700000000000-3".into();
        let now = t.clock.now_ms();
        t.insert("203.0.113.0/24".parse().unwrap(), 0);
        t.insert("2001:db8::/48".parse().unwrap(), now + 60_000);
        t.insert("198.51.100.7/32".parse().unwrap(), now + 300);
        let mut about = AboutMap::new();
        let office = About {
            note: "office".into(),
            actor: "cli".into(),
            created_at: 5,
            // An exempt entry keeps its mark across a restart.
            exempt: true,
        };
        about.insert("203.0.113.0/24".parse().unwrap(), office.clone());
        let text = render(&t, &Details::new(about));
        let (back, details) = parse::<ipnet::IpNet>(&text).unwrap();
        assert_eq!(details[&"203.0.113.0/24".parse().unwrap()], office);
        assert_eq!((back.epoch.as_str(), back.seq), ("e1", 7));
        assert_eq!(back.last_id, "1700000000000-3");
        assert_eq!(back.len(), 3);
        // Written 10 s ago: the 300 ms entry is gone, the others stay.
        let mut saved: Saved = serde_json::from_str(&text).unwrap();
        saved.system_ms -= 10_000;
        saved.redis_ms -= 10_000;
        for e in saved.entries.iter_mut() {
            if let SavedEntry::Full(_, exp, ..) = e {
                if *exp != 0 {
                    *exp -= 10_000;
                }
            }
        }
        let (back, _) = parse::<ipnet::IpNet>(&serde_json::to_string(&saved).unwrap()).unwrap();
        let kept: Vec<String> = back.entries().map(|(n, _)| n.to_string()).collect();
        assert_eq!(kept, ["203.0.113.0/24", "2001:db8::/48"]);
    }

    #[test]
    fn a_foreign_or_broken_file_is_refused() {
        assert!(parse::<ipnet::IpNet>("{}").is_err());
        assert!(parse::<ipnet::IpNet>("not json").is_err());
        let t = Table::new("e".into(), 1, Clock::system());
        let other = render(&t, &Details::default()).replace(FORMAT, "something-else");
        assert!(parse::<ipnet::IpNet>(&other)
            .err()
            .unwrap()
            .to_string()
            .contains("format"));
    }

    #[test]
    fn an_earlier_versions_entries_load_without_details() {
        let text = format!(
            r#"{{"format":"{FORMAT}","version":1,"epoch":"e","seq":1,"last_id":"0-0",
               "redis_ms":1,"system_ms":1,"entries":[["203.0.113.0/24",0]]}}"#
        );
        let (t, details) = parse::<ipnet::IpNet>(&text).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(
            details[&"203.0.113.0/24".parse().unwrap()],
            About::default()
        );
    }

    #[test]
    fn an_atomic_write_replaces_the_file_whole() {
        let dir = std::env::temp_dir().join(format!("tollgate-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two");
        let leftovers = fs::read_dir(&dir).unwrap().count();
        assert_eq!(leftovers, 1, "no temp file is left behind");
        let _ = fs::remove_dir_all(&dir);
    }
}
