//! The file `tollgate follow --export` keeps equal to a live list (the
//! allowlist, or the denylist with `--list deny`), for proxies and firewalls
//! that read a file instead of asking per request (nginx `geo`, squid ACL
//! files, nftables sets).
//!
//! - Written atomically (see `state_file::write_atomic`), only when its text
//!   changed, after changes settle (debounced), then `--reload-cmd` runs once.
//! - Entries leave the file at their `expires_at` (the follower's Redis-time
//!   clock), with or without Redis.
//! - Nothing is written before the follower's first sync, and nothing on
//!   shutdown: the file always holds the last known list.
//! - A failed reload command keeps the file; it is logged and counted (in
//!   the log line, and in `--metrics-file`), and runs again at the next change.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::export_metrics::{self, ExportCounts};
use super::kind::ListKind;
use super::state_file::write_atomic;
use super::table::Table;
use super::Allowlist;

/// A reload command running longer than this is killed and counts as failed.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// A failed write is tried again after this.
const WRITE_RETRY: Duration = Duration::from_secs(1);
/// The metrics file (if any) is refreshed at least this often.
const METRICS_EVERY: Duration = Duration::from_secs(5);

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One network per line (squid `src "FILE"`, ipset/nftables loaders).
    Plain,
    /// `NETWORK 1;` lines for `geo $tollgate_allowed { default 0; include FILE; }`.
    NginxGeo,
    /// `{"entries": [{"cidr", "expires_at"}]}` (expires_at null: never).
    Json,
    /// An `nft -f` script: table `inet tollgate` with the sets `<list>_v4`
    /// and `<list>_v6` (`denylist_v4`, …), flushed and refilled in one
    /// transaction; a rule of yours matches them (README, "IP denylist").
    Nft,
}

#[derive(Clone, Debug)]
pub struct ExportOptions {
    pub path: PathBuf,
    pub format: Format,
    /// Run with `sh -c` after each write.
    pub reload_cmd: Option<String>,
    /// Changes closer together than this are written once.
    pub debounce: Duration,
    /// Where to write metrics (node_exporter textfile format), if anywhere.
    pub metrics_file: Option<PathBuf>,
}

/// The file's text for the entries of `kind`'s list live at `now_ms`.
pub fn render(table: &Table, now_ms: u64, format: Format, kind: ListKind) -> String {
    let live = table.live_entries(now_ms);
    let mut out = String::new();
    match format {
        Format::Plain => {
            for (net, _) in &live {
                let _ = writeln!(out, "{net}");
            }
        }
        Format::NginxGeo => {
            let var = match kind {
                ListKind::Allow => "allowed",
                ListKind::Deny => "denied",
                ListKind::Override => "overridden",
            };
            let _ = writeln!(out, "# tollgate follow: the live {kind}. Use it as");
            let _ = writeln!(
                out,
                "#   geo $tollgate_{var} {{ default 0; include THIS_FILE; }}"
            );
            for (net, _) in &live {
                let _ = writeln!(out, "{net} 1;");
            }
        }
        Format::Json => {
            out.push_str("{\"entries\":[");
            for (i, (net, exp)) in live.iter().enumerate() {
                let exp = if *exp == 0 {
                    "null".to_string()
                } else {
                    exp.to_string()
                };
                let sep = if i == 0 { "\n" } else { ",\n" };
                let _ = write!(out, "{sep}{{\"cidr\":\"{net}\",\"expires_at\":{exp}}}");
            }
            out.push_str("\n]}\n");
        }
        Format::Nft => nft(&mut out, &live, kind),
    }
    out
}

/// An `nft -f` script that makes the sets hold exactly `live`: declaring
/// the table and sets is idempotent, the flushes and adds apply as one
/// transaction (a packet never sees a half-loaded set). `interval` holds
/// networks; `auto-merge` accepts a network inside another.
fn nft(out: &mut String, live: &[(ipnet::IpNet, u64)], kind: ListKind) {
    let noun = kind.noun();
    let _ = writeln!(
        out,
        "# tollgate follow: the live {kind}; load with nft -f THIS_FILE"
    );
    out.push_str("table inet tollgate {\n");
    for family in ["v4", "v6"] {
        let _ = writeln!(
            out,
            "\tset {noun}_{family} {{ type ip{}_addr; flags interval; auto-merge; }}",
            if family == "v4" { "v4" } else { "v6" }
        );
    }
    out.push_str("}\n");
    for (family, v4) in [("v4", true), ("v6", false)] {
        let _ = writeln!(out, "flush set inet tollgate {noun}_{family}");
        let nets: Vec<String> = live
            .iter()
            .filter(|(net, _)| net.addr().is_ipv4() == v4)
            .map(|(net, _)| net.to_string())
            .collect();
        // `{ }` is a syntax error: an empty set gets no add.
        if !nets.is_empty() {
            let _ = writeln!(
                out,
                "add element inet tollgate {noun}_{family} {{ {} }}",
                nets.join(", ")
            );
        }
    }
}

/// Keep the export file equal to the live list until `stop`.
pub async fn keep(list: Arc<Allowlist>, opts: ExportOptions, stop: CancellationToken) {
    let mut changes = list.subscribe();
    // What the file holds: an unchanged list after a restart is not rewritten.
    let mut written = std::fs::read_to_string(&opts.path).ok();
    let mut counts = ExportCounts::default();
    loop {
        let mut wake = opts.metrics_file.as_ref().map(|_| METRICS_EVERY);
        if list.is_synced() {
            let table = list.table();
            let now = table.clock.now_ms();
            let text = render(&table, now, opts.format, list.kind());
            if written.as_deref() != Some(text.as_str()) {
                let path = opts.path.clone();
                let bytes = text.clone();
                let result =
                    tokio::task::spawn_blocking(move || write_atomic(&path, bytes.as_bytes()))
                        .await
                        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                match result {
                    Ok(()) => {
                        tracing::info!(path = %opts.path.display(), entries = text.lines().filter(|l| !l.starts_with('#')).count(), "{} export written", list.kind());
                        written = Some(text);
                        counts.writes += 1;
                        if let Some(cmd) = &opts.reload_cmd {
                            // Shutdown does not wait for a slow command (it is killed).
                            tokio::select! {
                                _ = stop.cancelled() => return,
                                _ = reload(cmd, &mut counts) => {}
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(path = %opts.path.display(), error = %e, "cannot write the {} export; the old file stays, retrying", list.kind());
                        wake = Some(WRITE_RETRY);
                    }
                }
            }
            // The list changes by itself at the next expiry.
            if let Some(exp) = table.next_expiry(now) {
                let until = Duration::from_millis(exp - table.clock.now_ms().min(exp));
                wake = Some(wake.map_or(until, |w: Duration| w.min(until)));
            }
        }
        if let Some(path) = &opts.metrics_file {
            let text = export_metrics::render(&list, &counts);
            if let Err(e) = write_atomic(path, text.as_bytes()) {
                tracing::debug!(path = %path.display(), error = %e, "cannot write the metrics file");
            }
        }
        let timer = tokio::time::sleep(wake.unwrap_or(Duration::from_secs(3600)));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = timer => continue,
            r = changes.changed() => {
                if r.is_err() {
                    return;
                }
            }
        }
        if !settle(&mut changes, opts.debounce, &stop).await {
            return;
        }
    }
}

/// Wait until no change came for `debounce` (at most 5 × debounce in all).
/// False: stopped.
async fn settle(
    changes: &mut tokio::sync::watch::Receiver<u64>,
    debounce: Duration,
    stop: &CancellationToken,
) -> bool {
    let deadline = tokio::time::Instant::now() + debounce * 5;
    loop {
        changes.borrow_and_update();
        let quiet = tokio::time::sleep(debounce);
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = tokio::time::sleep_until(deadline) => return true,
            _ = quiet => return true,
            r = changes.changed() => {
                if r.is_err() {
                    return true;
                }
            }
        }
    }
}

async fn reload(cmd: &str, counts: &mut ExportCounts) {
    let run = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .status();
    let outcome = match tokio::time::timeout(RELOAD_TIMEOUT, run).await {
        Ok(Ok(s)) if s.success() => Ok(()),
        Ok(Ok(s)) => Err(format!("exited with {s}")),
        Ok(Err(e)) => Err(format!("could not start: {e}")),
        Err(_) => Err(format!("still running after {RELOAD_TIMEOUT:?}; killed")),
    };
    match outcome {
        Ok(()) => {
            counts.reloads += 1;
            tracing::info!(command = %cmd, "reload command ran");
        }
        Err(why) => {
            counts.reload_failures += 1;
            tracing::warn!(command = %cmd, failures = counts.reload_failures, "reload command failed ({why}); the new file is kept and the command runs again at the next change");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allowlist::table::Clock;

    #[test]
    fn each_format_lists_the_live_entries_sorted() {
        let mut t = Table::new("e".into(), 1, Clock::system());
        t.insert("2001:db8::/48".parse().unwrap(), 0);
        t.insert("203.0.113.0/24".parse().unwrap(), 5_000);
        t.insert("198.51.100.7/32".parse().unwrap(), 1_000);
        assert_eq!(
            render(&t, 2_000, Format::Plain, ListKind::Allow),
            "203.0.113.0/24\n2001:db8::/48\n"
        );
        let geo = render(&t, 500, Format::NginxGeo, ListKind::Allow);
        assert!(
            geo.ends_with("198.51.100.7/32 1;\n203.0.113.0/24 1;\n2001:db8::/48 1;\n"),
            "{geo}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(&t, 2_000, Format::Json, ListKind::Allow)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"entries": [
                {"cidr": "203.0.113.0/24", "expires_at": 5000},
                {"cidr": "2001:db8::/48", "expires_at": null}
            ]})
        );
        assert_eq!(
            render(&t, 9_000, Format::Plain, ListKind::Allow),
            "2001:db8::/48\n"
        );
    }

    #[test]
    fn the_nft_format_refills_one_set_per_family_and_skips_an_empty_add() {
        let mut t = Table::new("e".into(), 1, Clock::system());
        t.insert("203.0.113.0/24".parse().unwrap(), 0);
        t.insert("198.51.100.7/32".parse().unwrap(), 0);
        let text = render(&t, 1, Format::Nft, ListKind::Deny);
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "table inet tollgate {",
                "\tset denylist_v4 { type ipv4_addr; flags interval; auto-merge; }",
                "\tset denylist_v6 { type ipv6_addr; flags interval; auto-merge; }",
                "}",
                "flush set inet tollgate denylist_v4",
                "add element inet tollgate denylist_v4 { 198.51.100.7/32, 203.0.113.0/24 }",
                "flush set inet tollgate denylist_v6",
            ]
        );
        let geo = render(&t, 1, Format::NginxGeo, ListKind::Deny);
        assert!(geo.contains("geo $tollgate_denied"), "{geo}");
    }
}
