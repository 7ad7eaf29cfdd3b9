//! `tollgate override set|remove|list|show`: per-client overrides straight
//! in Redis, through the same scripts and the same validation as the admin
//! API (`overrides::input`, against the rules of `--config`), like `tollgate
//! allow`. Exit codes as `allow`'s: 0 ok; 2 bad usage or input (nothing
//! written) or no Redis; 1 anything else (Redis unreachable, `remove` or
//! `show` of an override that is not there).

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{json, Value};

use super::allow::{remaining, until, Common};
use super::{failure, load_config, runtime, usage, Work};
use crate::allowlist::input;
use crate::allowlist::kind::ListKind;
use crate::allowlist::Entry;
use crate::overrides::{input as wanted, OverrideKey, OverrideLimits, Overrides};

#[derive(Subcommand, Debug)]
pub enum OverrideCommand {
    /// Give RULE's KEY its own limits (--limit, repeatable), or --unlimited, or --deny.
    Set {
        rule: String,
        /// The key as the rule builds it (an address, a header value, a descriptor value).
        key: String,
        /// A rate the rule's algorithm takes: "100/m" (repeat for several).
        #[arg(long = "limit", value_name = "RATE")]
        limits: Vec<String>,
        /// Admit the key without a limiter call.
        #[arg(long, conflicts_with_all = ["limits", "deny"])]
        unlimited: bool,
        /// Refuse the key (429) without a limiter call.
        #[arg(long, conflicts_with = "limits")]
        deny: bool,
        /// How long it stays: "24h" (default: until removed; at most [overrides] max_ttl).
        #[arg(long)]
        ttl: Option<String>,
        /// Free text, at most 256 bytes.
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Remove an override (exit 1 when there is none): the key is back to its rule.
    Remove {
        rule: String,
        key: String,
        #[command(flatten)]
        common: Common,
    },
    /// Every live override, only RULE's with --rule.
    List {
        #[arg(long)]
        rule: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// One override (exit 1 when there is none).
    Show {
        rule: String,
        key: String,
        #[command(flatten)]
        common: Common,
    },
}

/// Overrides per page `tollgate override list` asks for.
const LIST_PAGE: usize = 500;

pub fn run(cmd: OverrideCommand) -> ExitCode {
    let common = match &cmd {
        OverrideCommand::Set { common, .. }
        | OverrideCommand::Remove { common, .. }
        | OverrideCommand::List { common, .. }
        | OverrideCommand::Show { common, .. } => common,
    };
    let cfg = match load_config(common.config.as_ref(), &common.overrides) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    if cfg.redis.is_none() {
        return usage("`tollgate override` works on Redis: set --redis or TOLLGATE_REDIS_URL (or [redis] url in --config); the embedded store lives inside one `tollgate serve`, use its admin API (PUT /v1/overrides/RULE/KEY)");
    }
    let actor = match input::actor(&common.actor) {
        Ok(a) => a,
        Err(e) => return usage(format!("--actor: {e}")),
    };
    let named = |rule: &str, key: &str| -> Result<OverrideKey, String> {
        let r = wanted::rule(&cfg, rule).map_err(|(f, m)| format!("{f}: {m}"))?;
        wanted::key(&cfg, r, key).map_err(|(f, m)| format!("{f}: {m}"))?;
        Ok(OverrideKey {
            rule: rule.to_string(),
            key: key.to_string(),
        })
    };
    // Everything is checked before Redis is dialled.
    enum Action {
        Set(crate::allowlist::NewEntry<OverrideKey>),
        Remove(OverrideKey),
        List(Option<String>),
        Show(OverrideKey),
    }
    let action = match &cmd {
        OverrideCommand::Set {
            rule,
            key,
            limits,
            unlimited,
            deny,
            ttl,
            note,
            ..
        } => {
            let limits = match (*unlimited, *deny) {
                (true, _) => json!("unlimited"),
                (_, true) => json!("deny"),
                _ if limits.is_empty() => {
                    return usage("give --limit RATE (repeatable), --unlimited or --deny")
                }
                _ => json!(limits),
            };
            wanted::new_override(
                &cfg,
                &wanted::Wanted {
                    rule,
                    key,
                    limits: &limits,
                    ttl: ttl.as_deref(),
                    note: note.as_deref(),
                    actor: actor.clone(),
                },
            )
            .map(Action::Set)
            .map_err(|(f, m)| format!("{f}: {m}"))
        }
        OverrideCommand::Remove { rule, key, .. } => named(rule, key).map(Action::Remove),
        OverrideCommand::Show { rule, key, .. } => named(rule, key).map(Action::Show),
        OverrideCommand::List { rule, .. } => match rule {
            Some(r) => wanted::rule(&cfg, r)
                .map(|_| Action::List(Some(r.clone())))
                .map_err(|(f, m)| format!("{f}: {m}")),
            None => Ok(Action::List(None)),
        },
    };
    let action = match action {
        Ok(a) => a,
        Err(e) => return usage(e),
    };
    let runtime = match runtime(Work::OneShot) {
        Ok(r) => r,
        Err(e) => return failure(e),
    };
    runtime.block_on(async {
        let list = Overrides::build(&cfg, ListKind::Override);
        match action {
            Action::Set(new) => match list.upsert(&new).await {
                Ok(stored) => {
                    println!(
                        "set {}: {} {} (seq {})",
                        stored.entry.cidr,
                        limits_text(&stored.entry.payload),
                        until(&stored.entry),
                        stored.seq
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => failure(e),
            },
            Action::Remove(m) => match list.remove(&m, &actor).await {
                Ok(Some(seq)) => {
                    println!("removed {m} (seq {seq}): the key is back to its rule");
                    ExitCode::SUCCESS
                }
                Ok(None) => failure(format!("rule {} has no override for {:?}", m.rule, m.key)),
                Err(e) => failure(e),
            },
            Action::Show(m) => match list.get(&m).await {
                Ok((Some(e), now_ms)) => {
                    println!("{}", line(&e, now_ms));
                    ExitCode::SUCCESS
                }
                Ok((None, _)) => {
                    failure(format!("rule {} has no override for {:?}", m.rule, m.key))
                }
                Err(e) => failure(e),
            },
            Action::List(rule) => {
                println!("# rule, key, limits, remaining, actor, note");
                let mut cursor = 0;
                // Bounded: each page is one HSCAN; a page may be empty when filtered.
                loop {
                    let page = match list.list_page(cursor, LIST_PAGE).await {
                        Ok(p) => p,
                        Err(e) => return failure(e),
                    };
                    for e in &page.entries {
                        if rule.as_ref().is_none_or(|r| &e.cidr.rule == r) {
                            println!("{}", line(e, page.now_ms));
                        }
                    }
                    if page.cursor == 0 {
                        return ExitCode::SUCCESS;
                    }
                    cursor = page.cursor;
                }
            }
        }
    })
}

/// `100/m, 1000/h`, `unlimited` or `deny`.
pub fn limits_text(limits: &OverrideLimits) -> String {
    match limits.to_json() {
        Value::Array(rates) => rates
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        Value::String(s) => s,
        other => other.to_string(),
    }
}

fn line(e: &Entry<OverrideKey>, now_ms: u64) -> String {
    format!(
        "{} {:?} {} {} {} {:?}",
        e.cidr.rule,
        e.cidr.key,
        limits_text(&e.payload),
        remaining(e, now_ms),
        e.actor,
        e.note
    )
}
