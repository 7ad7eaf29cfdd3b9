//! Which config file a process runs (its hash, when and how it was loaded),
//! and noticing that the file changed without a signal.
//!
//! The file is polled, not watched with inotify: every [`POLL`] its path is
//! resolved afresh (`canonicalize`) and the target stat'ed. A Kubernetes
//! ConfigMap is a chain of symlinks (`DIR/tollgate.toml` →
//! `..data/tollgate.toml`, `..data` → `..2026_12_07_…`) whose `..data` link
//! is swapped by a rename; an editor or `mv` replaces the file by a rename
//! too. An inotify watch on the file follows the old inode and misses both;
//! resolving the path each time sees them, portably, with no extra crate.
//! Cost: 4 polls a second, each one `canonicalize` (an `lstat`/`readlink`
//! per path component) and one `stat`; the file is read and hashed only when
//! its [`Stamp`] changed.
//!
//! Debounce: a change is acted on once two polls in a row see the same new
//! stamp, i.e. the file stayed the same for one whole poll (a writer still
//! writing changes the size or mtime again). A change is therefore acted on
//! between 250 and 500 ms after the last write. A version read within a
//! timestamp tick of its write is read once more later ([`Look::Recheck`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

/// How often the file is looked at.
pub const POLL: Duration = Duration::from_millis(250);

/// The hash `GET /v1/status` shows for a config file: the SHA-1 of its
/// bytes, in hex, so an operator can compare it with `sha1sum FILE`. It names
/// a version of the file; it is not a security measure.
pub fn hash(bytes: &[u8]) -> String {
    sha1_smol::Sha1::from(bytes).digest().to_string()
}

/// What put the running config in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Loaded when the process started.
    Start,
    /// The file changed and the poll noticed it.
    Watch,
    /// `SIGHUP` (or a reload asked for in process).
    Sighup,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Start => "start",
            Source::Watch => "watch",
            Source::Sighup => "sighup",
        }
    }
}

/// The running config's origin (`GET /v1/status`: `config`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Loaded {
    /// The file as named on the command line (`None`: the defaults).
    pub path: Option<PathBuf>,
    /// [`hash`] of the bytes the running config was parsed from (`None`:
    /// not parsed from a file, e.g. the defaults).
    pub hash: Option<String>,
    /// When it was put in place, in Unix milliseconds.
    pub loaded_at_ms: u64,
    pub source: Source,
}

impl Loaded {
    pub fn now(path: Option<PathBuf>, hash: Option<String>, source: Source) -> Loaded {
        let loaded_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Loaded {
            path,
            hash,
            loaded_at_ms,
            source,
        }
    }
}

/// What a file looks like without reading it: the resolved target and its
/// identity, size and times. A rename or a symlink swap changes the target
/// or the inode; an edit in place changes the size or a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    target: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
    /// Device, inode and change time (Unix): the identity of the file.
    id: (u64, u64, i64, i64),
}

/// The file's stamp, or why it cannot be had (the text of the error: two
/// polls failing the same way count as "stable").
pub fn stamp(path: &Path) -> Result<Stamp, String> {
    let target = std::fs::canonicalize(path).map_err(|e| e.to_string())?;
    let meta = std::fs::metadata(&target).map_err(|e| e.to_string())?;
    #[cfg(unix)]
    let id = {
        use std::os::unix::fs::MetadataExt;
        (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec())
    };
    #[cfg(not(unix))]
    let id = (0, 0, 0, 0);
    Ok(Stamp {
        target,
        len: meta.len(),
        modified: meta.modified().ok(),
        id,
    })
}

/// File systems keep times in ticks (a few ms on Linux, up to 2 s on
/// others): a version read less than this after it was written could be
/// rewritten, at the same size, within the same tick, leaving its stamp as it
/// was. Such a version is read once more when this has passed (git's "racily
/// clean" index entries, the same problem).
const RACY: Duration = Duration::from_secs(2);

/// What one poll found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Look {
    /// Nothing to do.
    Same,
    /// The file changed and has stayed the same for one poll: read it.
    Changed,
    /// The version last read was written within [`RACY`] of being read:
    /// read it once more and apply it only if its bytes differ.
    Recheck,
}

/// The debounced poll of one file: [`Watch::poll`] says when to re-read it.
#[derive(Debug)]
pub struct Watch {
    path: PathBuf,
    /// What the previous poll saw.
    seen: Result<Stamp, String>,
    /// What was last acted on (read at start, or reported by `poll`).
    settled: Result<Stamp, String>,
    /// When the settled version may be read once more (see [`RACY`]).
    recheck_at: Option<SystemTime>,
}

impl Watch {
    /// Start watching `path`. The first poll asks for a read: the file may
    /// have changed since the running config was loaded from it (the read
    /// finds the same hash, usually, and reloads nothing).
    pub fn new(path: PathBuf) -> Watch {
        Watch {
            seen: stamp(&path),
            settled: Err("not read by the watch yet".into()),
            recheck_at: None,
            path,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Look at the file once: `Changed` once per change (a file that cannot
    /// be read is a change too, reported by the read), after it held for one
    /// poll; `Recheck` once after a version read too soon after its write.
    pub fn poll(&mut self) -> Look {
        let now = stamp(&self.path);
        let stable = now == self.seen;
        self.seen = now.clone();
        let clock = SystemTime::now();
        if stable && now != self.settled {
            self.recheck_at = now
                .as_ref()
                .ok()
                .and_then(|s| s.modified)
                .map(|written| written + RACY)
                .filter(|at| *at > clock);
            self.settled = now;
            return Look::Changed;
        }
        if self.recheck_at.is_some_and(|at| clock >= at) {
            self.recheck_at = None;
            return Look::Recheck;
        }
        Look::Same
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `watch` or `sighup`.
    pub source: &'static str,
    /// `applied`, `rejected` (the running config stays) or `unchanged`.
    pub result: &'static str,
}

/// The reloads' metrics.
#[derive(Clone, Debug, Default)]
pub struct ReloadMetrics {
    pub reloads: Family<ReloadLabels, Counter>,
    /// 1 while the last reload was rejected: the file differs from what runs.
    pub rejected: Gauge,
}

impl ReloadMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "config_reloads",
            "Config reloads by source (watch, sighup) and result (applied, rejected, unchanged)",
            self.reloads.clone(),
        );
        registry.register(
            "config_reload_rejected",
            "1 while the config file's last version was rejected (the running config stays)",
            self.rejected.clone(),
        );
    }

    pub fn count(&self, source: Source, result: &'static str) {
        self.reloads
            .get_or_create(&ReloadLabels {
                source: source.as_str(),
                result,
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tollgate-watch-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_change_is_reported_once_after_it_held_for_one_poll() {
        let d = dir("edit");
        let file = d.join("t.toml");
        std::fs::write(&file, "a").unwrap();
        let mut w = Watch::new(file.clone());
        let first = w.poll();
        assert_eq!(
            first,
            Look::Changed,
            "the first poll reads what may have changed since the load"
        );
        assert_eq!(w.poll(), Look::Same, "nothing changed");
        std::fs::write(&file, "bb").unwrap();
        assert_eq!(w.poll(), Look::Same, "first sight: may still be written");
        assert_eq!(w.poll(), Look::Changed, "the same for one poll");
        assert_eq!(w.poll(), Look::Same, "reported once");
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_swap_is_seen_and_a_missing_file_is_a_change() {
        use std::os::unix::fs::symlink;
        let d = dir("swap");
        std::fs::create_dir(d.join("v1")).unwrap();
        std::fs::create_dir(d.join("v2")).unwrap();
        // Same size, written in the same instant: only the target differs.
        std::fs::write(d.join("v1/t.toml"), "x").unwrap();
        std::fs::write(d.join("v2/t.toml"), "y").unwrap();
        symlink("v1", d.join("..data")).unwrap();
        symlink("..data/t.toml", d.join("t.toml")).unwrap();
        let mut w = Watch::new(d.join("t.toml"));
        assert_eq!(w.poll(), Look::Changed);
        symlink("v2", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        assert_eq!(w.poll(), Look::Same);
        assert_eq!(w.poll(), Look::Changed, "the swap");
        std::fs::remove_file(d.join("..data")).unwrap();
        assert_eq!(w.poll(), Look::Same);
        assert_eq!(
            w.poll(),
            Look::Changed,
            "gone is a change: the read reports it"
        );
    }

    #[test]
    fn a_version_read_within_a_timestamp_tick_of_its_write_is_read_once_more() {
        let d = dir("racy");
        let file = d.join("t.toml");
        std::fs::write(&file, "a").unwrap();
        let old = SystemTime::now() - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let mut w = Watch::new(file.clone());
        assert_eq!(w.poll(), Look::Changed);
        assert_eq!(w.poll(), Look::Same, "written long before: no recheck");

        // Written "just now" (RACY less 100 ms ago): one recheck once RACY has passed.
        let recent = SystemTime::now() - RACY + Duration::from_millis(100);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(recent)
            .unwrap();
        assert_eq!(w.poll(), Look::Same);
        assert_eq!(w.poll(), Look::Changed);
        let mut looks = Vec::new();
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while !looks.contains(&Look::Recheck) && std::time::Instant::now() < end {
            looks.push(w.poll());
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(looks.last(), Some(&Look::Recheck), "{looks:?}");
        assert!(
            looks[..looks.len() - 1].iter().all(|l| *l == Look::Same),
            "{looks:?}"
        );
        assert_eq!(w.poll(), Look::Same, "once");
    }

    #[test]
    fn the_hash_is_sha1_hex_of_the_bytes() {
        assert_eq!(hash(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }
}
