//! `tollgate follow --metrics-file FILE`: follow has no HTTP server, so its
//! metrics go to a file in the Prometheus text format that node_exporter's
//! textfile collector reads (`--collector.textfile.directory`). Written
//! atomically after each export and every few seconds (the sync age moves).

use std::fmt::Write as _;

use super::status::{Reason, ReasonLabels};
use super::Allowlist;

/// What the export loop did so far.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExportCounts {
    /// The export file was (re)written.
    pub writes: u64,
    /// The reload command ran and succeeded.
    pub reloads: u64,
    /// The reload command failed (exit status, could not start, timeout).
    pub reload_failures: u64,
}

/// The metrics text: the export's counters and the allowlist's freshness.
pub fn render(list: &Allowlist, counts: &ExportCounts) -> String {
    let status = list.status();
    let table = list.table();
    let age = status.sync_age().map_or(f64::NAN, |a| a.as_secs_f64());
    let noun = list.kind().noun();
    let mut out = String::new();
    let mut one = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(out, "# HELP tollgate_{name} {help}");
        let _ = writeln!(out, "# TYPE tollgate_{name} {kind}");
        let _ = writeln!(out, "tollgate_{name} {value}");
    };
    one(
        "follow_writes_total",
        "counter",
        "Times the export file was written",
        counts.writes.to_string(),
    );
    one(
        "follow_reloads_total",
        "counter",
        "Reload commands that succeeded",
        counts.reloads.to_string(),
    );
    one(
        "follow_reload_failures_total",
        "counter",
        "Reload commands that failed (the file was kept)",
        counts.reload_failures.to_string(),
    );
    one(
        &format!("{noun}_entries"),
        "gauge",
        "Live entries in this node's allowlist table",
        table.live_count(table.clock.now_ms()).to_string(),
    );
    one(
        &format!("{noun}_last_sync_age_seconds"),
        "gauge",
        "Seconds since Redis last confirmed this node's allowlist position",
        format!("{age:.3}"),
    );
    one(
        &format!("{noun}_source_lost"),
        "gauge",
        "1 while Redis holds no allowlist and this node serves its last known table",
        u8::from(status.is_source_lost()).to_string(),
    );
    let _ = writeln!(
        out,
        "# HELP tollgate_{noun}_resyncs_total Fresh snapshots loaded, by reason"
    );
    let _ = writeln!(out, "# TYPE tollgate_{noun}_resyncs_total counter");
    for reason in Reason::ALL {
        let n = status
            .resyncs
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .get();
        let _ = writeln!(
            out,
            "tollgate_{noun}_resyncs_total{{reason=\"{reason}\"}} {n}"
        );
    }
    out
}
