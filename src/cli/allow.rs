//! `tollgate allow add|remove|list|check|export|restore|clear`: the allowlist
//! straight in Redis, through the same scripts as the admin API (no server
//! needed). `tollgate deny …` is the same commands on the denylist
//! (`ListKind::Deny`: its keys, `[denylist]` settings and words).
//!
//! `export` writes every live entry as JSON (`allowlist/export.rs`), from
//! Redis or, with `--from-node ADMIN_URL`, from a node's own table;
//! `restore FILE` makes that the whole allowlist again, as a new epoch that
//! every node resyncs to: how an admin recovers after Redis lost its data
//! (the fleet does it by itself, `allowlist/recovery.rs`). `clear` is the
//! intended wipe. While Redis lost the list and it is not back, `add` and
//! `remove` are refused (exit 1, with what to do) unless `add --new-epoch`.
//!
//! Exit codes: 0 ok; 2 bad usage or input (nothing written), or no Redis
//! configured; 1 anything else: Redis unreachable, `remove` of an entry that
//! is not there, `check` of an address that is not on the allowlist (like
//! `grep`, so scripts can branch on it).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Subcommand};
use ipnet::IpNet;

use super::{failure, load_config, runtime, usage, OverrideArgs, Work};
use crate::allowlist::export::Document;
use crate::allowlist::kind::ListKind;
use crate::allowlist::member::Member;
use crate::allowlist::state_file::write_atomic;
use crate::allowlist::{cidr, input, Allowlist, Entry, NewEntry};
use crate::config::Config;

#[derive(Subcommand, Debug)]
pub enum AllowCommand {
    /// Add an entry, or refresh one (new expiry and note).
    Add {
        /// An address or a network: 203.0.113.7, 203.0.113.0/24, 2001:db8::/48.
        cidr: String,
        /// How long it stays: "24h", "30m" (default: the list's default_ttl,
        /// [allowlist] or [denylist]); "never" only with its allow_permanent.
        #[arg(long)]
        ttl: Option<String>,
        /// Free text, at most 256 bytes.
        #[arg(long)]
        note: Option<String>,
        /// If Redis lost the list and nothing restored it yet, start a
        /// new, empty one with this entry (else that is refused).
        #[arg(long)]
        new_epoch: bool,
        /// Allowlist only: never ban this entry's addresses automatically
        /// (a rule's `ban`); a manual deny still refuses them.
        #[arg(long)]
        exempt: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Remove an entry (exit 1 when there is none).
    Remove {
        cidr: String,
        #[command(flatten)]
        common: Common,
    },
    /// Every live entry, with its remaining time.
    List {
        #[command(flatten)]
        common: Common,
    },
    /// The entry that holds an address (exit 1 when none does).
    Check {
        ip: String,
        #[command(flatten)]
        common: Common,
    },
    /// Every live entry as JSON, for `restore` (stdout, or --output).
    Export {
        /// Write here (atomically) instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Export this node's own table (its admin listener, e.g.
        /// http://10.0.0.5:9000; token from the admin token variable)
        /// instead of Redis's list.
        #[arg(long, value_name = "ADMIN_URL")]
        from_node: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Remove every entry, deliberately: a new, empty epoch every node
    /// follows (never mistaken for a Redis that lost its data).
    Clear {
        /// Required: clearing is not undone.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Replace the whole list with an export's entries, as a new epoch
    /// every node resyncs to. Entries already expired are left out.
    Restore {
        /// An `export` file of the same list; "-" reads stdin.
        file: PathBuf,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args, Debug)]
pub struct Common {
    /// Config file (TOML): [redis] and [allowlist] / [denylist] are read from it.
    #[arg(long, short, env = "TOLLGATE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// Who makes the change; recorded in the entry and its event.
    #[arg(long, env = "TOLLGATE_ACTOR", default_value = "cli")]
    pub actor: String,
}

/// What to do, checked whole before Redis is dialled.
enum Action {
    Add(NewEntry),
    Remove(IpNet),
    List,
    Check(IpAddr),
    Export(Option<PathBuf>),
    ExportFromNode(String, Option<PathBuf>),
    Clear,
    /// An opened export file, or stdin.
    Restore(Box<dyn std::io::Read + Send>, PathBuf),
}

/// Entries per page `tollgate allow list` asks for.
const LIST_PAGE: usize = 500;

pub fn run(kind: ListKind, cmd: AllowCommand) -> ExitCode {
    let common = match &cmd {
        AllowCommand::Add { common, .. }
        | AllowCommand::Remove { common, .. }
        | AllowCommand::List { common }
        | AllowCommand::Check { common, .. }
        | AllowCommand::Export { common, .. }
        | AllowCommand::Restore { common, .. }
        | AllowCommand::Clear { common, .. } => common,
    };
    let cfg = match load_config(common.config.as_ref(), &common.overrides) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let from_node = matches!(
        &cmd,
        AllowCommand::Export {
            from_node: Some(_),
            ..
        }
    );
    if cfg.redis.is_none() && !from_node {
        return usage(format!("`tollgate {}` works on Redis: set --redis or TOLLGATE_REDIS_URL (or [redis] url in --config); the embedded store lives inside one `tollgate serve`, use its admin API", kind.tag()));
    }
    let actor = match input::actor(&common.actor) {
        Ok(a) => a,
        Err(e) => return usage(format!("--actor: {e}")),
    };
    let action = match &cmd {
        AllowCommand::Add {
            cidr,
            ttl,
            note,
            new_epoch,
            exempt,
            ..
        } => input::new_entry(
            cidr,
            ttl.as_deref(),
            note.as_deref(),
            actor.clone(),
            cfg.list(kind),
        )
        .and_then(|new| {
            Ok(Action::Add(NewEntry {
                new_epoch: *new_epoch,
                exempt: input::exempt(*exempt, cfg.list(kind))?,
                payload: (),
                ..new
            }))
        })
        .map_err(|e| match e.field {
            "exempt" => format!("--exempt: {}", e.message),
            field => format!("{field}: {}", e.message),
        }),
        AllowCommand::Remove { cidr, .. } => cidr::parse_net(cidr)
            .map(Action::Remove)
            .map_err(|e| e.to_string()),
        AllowCommand::List { .. } => Ok(Action::List),
        AllowCommand::Check { ip, .. } => cidr::parse_ip(ip)
            .map(Action::Check)
            .map_err(|e| e.to_string()),
        AllowCommand::Export {
            output,
            from_node: Some(url),
            ..
        } => Ok(Action::ExportFromNode(url.clone(), output.clone())),
        AllowCommand::Export { output, .. } => Ok(Action::Export(output.clone())),
        AllowCommand::Clear { yes: false, .. } => {
            Err("clear removes every entry for every node: add --yes to mean it".to_string())
        }
        AllowCommand::Clear { yes: true, .. } => Ok(Action::Clear),
        AllowCommand::Restore { file, .. } => open_export(file)
            .map(|r| Action::Restore(r, file.clone()))
            .map_err(|e| format!("{}: {e}", file.display())),
    };
    let action = match action {
        Ok(a) => a,
        Err(e) => return usage(e),
    };
    let runtime = match runtime(Work::OneShot) {
        Ok(r) => r,
        Err(e) => return failure(e),
    };
    runtime.block_on(execute(kind, &cfg, action, &actor))
}

async fn execute(kind: ListKind, cfg: &Config, action: Action, actor: &str) -> ExitCode {
    if let Action::ExportFromNode(url, output) = &action {
        let token = cfg.server.admin_token.as_ref().map(|t| t.expose());
        return match super::from_node::fetch(url, token, kind).await {
            Ok(text) => write_export(&text, output.as_deref(), &format!("from {url}")),
            Err(e) => failure(e),
        };
    }
    let list = Allowlist::of(cfg, kind);
    match action {
        Action::ExportFromNode(..) => unreachable!("answered above"),
        Action::Clear => match list.clear(actor).await {
            Ok((r, held)) => {
                println!(
                    "cleared the {kind} ({} held before); new empty epoch {}, every node follows it",
                    count(held as usize, "entry", "entries"),
                    r.epoch
                );
                ExitCode::SUCCESS
            }
            Err(e) => failure(e),
        },
        Action::Add(new) => match list.upsert(&new).await {
            Ok(stored) => {
                println!(
                    "added {} {}{} (seq {})",
                    stored.entry.cidr,
                    until(&stored.entry),
                    if stored.entry.exempt {
                        ", exempt from bans"
                    } else {
                        ""
                    },
                    stored.seq
                );
                ExitCode::SUCCESS
            }
            Err(e) => failure(e),
        },
        Action::Remove(net) => match list.remove(&net, actor).await {
            Ok(Some(seq)) => {
                println!("removed {net} (seq {seq})");
                ExitCode::SUCCESS
            }
            Ok(None) => failure(format!("{net} is not on the {kind}")),
            Err(e) => failure(e),
        },
        Action::List => {
            // Page by page (each one bounded HSCAN): a million entries never
            // sit in memory nor hold Redis at once. Sorted within each page.
            println!("# cidr, expires, remaining, actor, note");
            let (mut cursor, mut shown) = (0, 0usize);
            loop {
                let page = match list.list_page(cursor, LIST_PAGE).await {
                    Ok(p) => p,
                    Err(e) => return failure(e),
                };
                for e in &page.entries {
                    println!(
                        "{}\t{}\t{}\t{}\t{:?}",
                        e.cidr,
                        time(e.expires_at),
                        remaining(e, page.now_ms),
                        e.actor,
                        e.note
                    );
                }
                shown += page.entries.len();
                if page.cursor == 0 {
                    println!(
                        "# {} (epoch {:?}, seq {})",
                        count(shown, "entry", "entries"),
                        page.epoch,
                        page.seq
                    );
                    if let Ok(Some(origin)) = list.restored_from().await {
                        println!("# epoch restored by {origin} after Redis lost the {kind}");
                    }
                    return ExitCode::SUCCESS;
                }
                cursor = page.cursor;
            }
        }
        Action::Check(ip) => match list.check(ip).await {
            Ok((Some(e), now_ms)) => {
                println!(
                    "{ip} is {} by {} {} ({} left), actor {}, note {:?}",
                    match kind {
                        ListKind::Allow => "allowed",
                        ListKind::Deny => "denied",
                        ListKind::Override => "overridden",
                    },
                    e.cidr,
                    until(&e),
                    remaining(&e, now_ms),
                    e.actor,
                    e.note
                );
                ExitCode::SUCCESS
            }
            Ok((None, _)) => failure(format!("{ip} is not on the {kind}")),
            Err(e) => failure(e),
        },
        Action::Export(output) => match list.list().await {
            Ok(l) => write_export(
                &Document::from_listing(&l, kind).to_json(),
                output.as_deref(),
                &format!(
                    "{} (epoch {:?}, seq {})",
                    count(l.entries.len(), "entry", "entries"),
                    l.epoch,
                    l.seq
                ),
            ),
            Err(e) => failure(e),
        },
        Action::Restore(reader, file) => match list.restore_from(reader, actor).await {
            Ok(Err(problems)) => usage(format!("{}: {problems}", file.display())),
            Ok(Ok(r)) => {
                println!(
                    "restored {} as epoch {} ({} had expired and were dropped); every node resyncs to it",
                    count(r.kept as usize, "entry", "entries"),
                    r.epoch,
                    r.dropped
                );
                ExitCode::SUCCESS
            }
            Err(e) => failure(e),
        },
    }
}

/// Write an export document to `output` (atomically) or stdout; `what`
/// goes to stderr.
fn write_export(text: &str, output: Option<&Path>, what: &str) -> ExitCode {
    let written = match output {
        Some(path) => {
            write_atomic(path, text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
        }
        None => std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes())
            .map_err(|e| e.to_string()),
    };
    match written {
        Ok(()) => {
            eprintln!("exported {what}");
            ExitCode::SUCCESS
        }
        Err(e) => failure(e),
    }
}

/// An export file (or stdin for "-"), opened: `restore_from` reads and
/// checks it as it stages it.
fn open_export(file: &Path) -> std::io::Result<Box<dyn std::io::Read + Send>> {
    if file == Path::new("-") {
        return Ok(Box::new(std::io::stdin()));
    }
    std::fs::File::open(file).map(|f| Box::new(f) as Box<dyn std::io::Read + Send>)
}

/// An instant in Redis time, RFC 3339; 0 is "never".
fn time(ms: u64) -> String {
    if ms == 0 {
        return "never".into();
    }
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

pub(super) fn until<M: Member>(e: &Entry<M>) -> String {
    match e.expires_at {
        0 => "permanently".into(),
        ms => format!("until {}", time(ms)),
    }
}

pub(super) fn remaining<M: Member>(e: &Entry<M>, now_ms: u64) -> String {
    match e.expires_at {
        0 => "-".into(),
        ms => humantime::format_duration(Duration::from_secs(ms.saturating_sub(now_ms) / 1000))
            .to_string(),
    }
}

/// `1 entry`, `2 entries`.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
