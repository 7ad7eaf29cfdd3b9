//! `tollgate limits show RULE KEY` / `tollgate limits reset RULE KEY`:
//! straight to Redis, no server needed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use super::{failure, load_config, runtime, usage, OverrideArgs, Work};
use crate::counters;
use crate::keys::KeySpace;
use crate::limiter::{RedisStore, Store};
use crate::rule::{find_limited, RuleLookupError};

#[derive(Subcommand, Debug)]
pub enum LimitsCommand {
    /// Show each limit's count, remaining and reset for one key of one rule.
    Show(Target),
    /// Clear one key's counters (and every replica's deny cache for it).
    Reset(Target),
}

#[derive(clap::Args, Debug)]
pub struct Target {
    pub rule: String,
    /// The key as the rule builds it, e.g. an IP for `key = "ip"` (used verbatim).
    pub key: String,
    #[arg(long, short, env = "TOLLGATE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: OverrideArgs,
}

pub fn run(cmd: LimitsCommand) -> ExitCode {
    let (target, reset) = match cmd {
        LimitsCommand::Show(t) => (t, false),
        LimitsCommand::Reset(t) => (t, true),
    };
    let cfg = match load_config(target.config.as_ref(), &target.overrides) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let rule = match find_limited(&cfg.rules, &target.rule) {
        Ok(r) => r,
        Err(e @ RuleLookupError::Unknown(_)) => {
            return usage(unknown_rule(&e, target.config.as_deref(), &cfg.rules))
        }
        Err(e) => return usage(e),
    };
    let Some(redis) = &cfg.redis else {
        return usage("no Redis configured (set redis.url, --redis or TOLLGATE_REDIS_URL); an embedded store lives inside its server: use its admin API");
    };
    let runtime = match runtime(Work::OneShot) {
        Ok(r) => r,
        Err(e) => return failure(e),
    };
    let keys = KeySpace::new(&cfg.prefix);
    let result = runtime.block_on(async {
        // An operator's one-off command may wait longer than a request would.
        let redis_store = RedisStore::new(
            redis.endpoint.clone(),
            redis.timeout.max(Duration::from_secs(2)),
        );
        redis_store.connect().await?;
        let store = Store::Redis(redis_store);
        // The override in force for the key, from Redis: its rates are what
        // the counters are read against, and its periods' counters are
        // reset with the rule's.
        let overrides =
            crate::overrides::Overrides::build(&cfg, crate::allowlist::kind::ListKind::Override);
        let member = crate::overrides::OverrideKey {
            rule: rule.name.clone(),
            key: target.key.clone(),
        };
        let (found, _) = overrides.get(&member).await?;
        let applied = found.as_ref().and_then(|e| e.payload.applied_to(rule));
        if reset {
            counters::reset(&store, &keys, rule, &target.key).await?;
            if let Some(applied) = &applied {
                counters::reset(&store, &keys, applied, &target.key).await?;
            }
            Ok(format!("reset: rule {} key {}\n", rule.name, target.key))
        } else {
            let v = counters::show(&store, &keys, applied.as_ref().unwrap_or(rule), &target.key)
                .await?;
            let mut out = format!("rule {} key {} algorithm {}\n", v.rule, v.key, v.algorithm);
            if let Some(e) = &found {
                out.push_str(&format!(
                    "  override {} {}, by {} ({:?})\n",
                    super::overrides::limits_text(&e.payload),
                    super::allow::until(e),
                    e.actor,
                    e.note
                ));
            }
            for l in &v.limits {
                out.push_str(&format!(
                    "  {:<10} used {:<6} remaining {:<6} reset in {}\n",
                    l.limit,
                    l.used,
                    l.remaining,
                    humantime::format_duration(Duration::from_millis(l.reset_ms))
                ));
            }
            Ok::<_, crate::redis_conn::StoreError>(out)
        }
    });
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => failure(e),
    }
}

/// An unknown rule: the rules there are, and where they come from. Without
/// a config there are none, which is the thing to say.
fn unknown_rule(
    e: &RuleLookupError,
    config: Option<&std::path::Path>,
    rules: &[crate::rule::Rule],
) -> String {
    let Some(file) = config else {
        return format!("{e}: rules come from the config file, and none was given (pass --config FILE or set TOLLGATE_CONFIG)");
    };
    let known: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    if known.is_empty() {
        format!("{e}: {} has no rules", file.display())
    } else {
        format!("{e}: {} has {}", file.display(), known.join(", "))
    }
}
