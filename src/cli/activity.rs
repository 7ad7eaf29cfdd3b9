//! `tollgate activity online|active|summary|path|top`: the activity counters,
//! read straight from Redis (no server needed), the same reads as
//! `GET /v1/activity/*`. `--json` prints the API's JSON instead of text.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{failure, load_config, runtime, usage, OverrideArgs, Work};
use crate::activity::query::{self, BadInput};
use crate::activity::{now_ms, NEEDS_REDIS};
use crate::config::Config;
use crate::keys::KeySpace;
use crate::plural::{count, noun};
use crate::redis_conn::StoreError;

#[derive(Subcommand, Debug)]
pub enum ActivityCommand {
    /// Clients whose last heartbeat is under `--within` old.
    Online {
        #[arg(long, default_value = "10m")]
        within: String,
        /// Also print who (at most 10 000, most recent first).
        #[arg(long)]
        list: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Distinct heartbeat clients over the last N UTC days (HyperLogLog, ~0.81 % standard error).
    Active {
        #[arg(long, default_value = "7")]
        days: String,
        #[command(flatten)]
        common: Common,
    },
    /// A tracked rule's requests and distinct clients per path over the last N hours.
    Summary {
        #[command(flatten)]
        rule: RuleArgs,
        #[command(flatten)]
        common: Common,
    },
    /// One path of a tracked rule (normalised like a request's path, or `other`).
    Path {
        path: String,
        #[command(flatten)]
        rule: RuleArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Who is hurting: the keys a rule limited most often over the last minutes, across replicas.
    Top {
        /// Any rule with limits.
        rule: String,
        #[arg(long, default_value = "5")]
        minutes: String,
        #[arg(long, default_value = "10")]
        count: String,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args, Debug)]
pub struct RuleArgs {
    /// The tracked rule (default: the only one).
    #[arg(long)]
    rule: Option<String>,
    #[arg(long, default_value = "24")]
    hours: String,
}

#[derive(Args, Debug)]
pub struct Common {
    #[arg(long, short, env = "TOLLGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Print the JSON the admin API answers.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    overrides: OverrideArgs,
}

impl ActivityCommand {
    fn common(&self) -> &Common {
        match self {
            ActivityCommand::Online { common, .. }
            | ActivityCommand::Active { common, .. }
            | ActivityCommand::Summary { common, .. }
            | ActivityCommand::Path { common, .. }
            | ActivityCommand::Top { common, .. } => common,
        }
    }
}

/// What went wrong: bad usage (exit 2) or Redis (exit 1).
enum Failure {
    Usage(String),
    Store(StoreError),
}

impl From<BadInput> for Failure {
    fn from(b: BadInput) -> Self {
        Failure::Usage(format!("--{}: {}", b.field, b.message))
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

pub fn run(cmd: ActivityCommand) -> ExitCode {
    let common = cmd.common();
    let cfg = match load_config(common.config.as_ref(), &common.overrides) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let runtime = match runtime(Work::OneShot) {
        Ok(r) => r,
        Err(e) => return failure(e),
    };
    match runtime.block_on(answer(&cmd, &cfg)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(Failure::Usage(m)) => usage(m),
        Err(Failure::Store(e)) => failure(e),
    }
}

async fn answer(cmd: &ActivityCommand, cfg: &Config) -> Result<String, Failure> {
    let Some(redis) = &cfg.redis else {
        return Err(Failure::Usage(NEEDS_REDIS.into()));
    };
    let a = &cfg.activity;
    let keys = KeySpace::new(&cfg.prefix).activity();
    let json = cmd.common().json;
    // Validate first: bad input never reaches Redis.
    let rule_of = |r: &RuleArgs| -> Result<(String, u64), Failure> {
        let tracked: Vec<&str> = cfg
            .rules
            .iter()
            .filter(|r| r.track.is_some())
            .map(|r| r.name.as_str())
            .collect();
        let name = match &r.rule {
            Some(n) if tracked.contains(&n.as_str()) => n.clone(),
            None if tracked.len() == 1 => tracked[0].to_string(),
            _ => {
                return Err(Failure::Usage(format!(
                    "--rule: name a tracked rule (tracked in this config: {})",
                    if tracked.is_empty() {
                        "none".into()
                    } else {
                        tracked.join(", ")
                    }
                )))
            }
        };
        Ok((name, query::parse_hours(&r.hours, a)?))
    };
    let connect = || async {
        let timeout = redis.timeout.max(crate::activity::CALL_TIMEOUT);
        tokio::time::timeout(timeout, redis.endpoint.connect(timeout))
            .await
            .map_err(|_| StoreError::Timeout(timeout))?
            .map_err(StoreError::from)
    };
    let now = now_ms();
    Ok(match cmd {
        ActivityCommand::Online { within, list, .. } => {
            let within = query::parse_within(within, a)?;
            let o = query::online(&mut connect().await?, &keys, within, now, *list).await?;
            if json {
                to_json(&o)
            } else {
                let mut s = format!(
                    "online (last heartbeat within {}): {}\n",
                    humantime::format_duration(within),
                    o.online
                );
                for c in o.clients.iter().flatten() {
                    s.push_str(&format!("  {c}\n"));
                }
                s
            }
        }
        ActivityCommand::Active { days, .. } => {
            let days = query::parse_days(days, a)?;
            let r = query::active(&mut connect().await?, &keys, days, now).await?;
            if json {
                to_json(&r)
            } else {
                format!(
                    "active clients {} .. {} ({}): {} (HyperLogLog, ~0.81 % standard error)\n",
                    r.from_day,
                    r.to_day,
                    count(r.days, "day", "days"),
                    r.active
                )
            }
        }
        ActivityCommand::Summary { rule, .. } => {
            let (rule, hours) = rule_of(rule)?;
            let s = query::summary(&mut connect().await?, &keys, &rule, hours, now).await?;
            if json {
                to_json(&s)
            } else {
                let mut out = format!(
                    "rule {} from {} to {}: {}, ~{}\n",
                    s.rule,
                    s.from,
                    s.to,
                    count(s.total, "request", "requests"),
                    count(s.unique, "client", "clients")
                );
                for (path, p) in &s.paths {
                    out.push_str(&format!(
                        "  {:<40} {:>10} {:<8} ~{:>8} {}\n",
                        path,
                        p.total,
                        noun(p.total, "request", "requests"),
                        p.unique,
                        noun(p.unique, "client", "clients")
                    ));
                }
                out
            }
        }
        ActivityCommand::Top {
            rule,
            minutes,
            count: n,
            ..
        } => {
            if !cfg
                .rules
                .iter()
                .any(|r| &r.name == rule && !r.limits.is_empty())
            {
                return Err(Failure::Usage(format!(
                    "no rule with limits is named {rule:?} in this config"
                )));
            }
            let minutes = query::parse_minutes(minutes)?;
            let n = query::parse_count(n)?;
            let t = query::top(&mut connect().await?, &keys, rule, minutes, n, now).await?;
            if json {
                to_json(&t)
            } else {
                let mut out = format!(
                    "rule {} limited these keys most over the last {}:\n",
                    t.rule,
                    count(t.minutes, "minute", "minutes")
                );
                for h in &t.keys {
                    out.push_str(&format!(
                        "  {:<40} {:>8} {}\n",
                        h.key,
                        h.limited,
                        noun(h.limited, "time", "times")
                    ));
                }
                out
            }
        }
        ActivityCommand::Path { path, rule, .. } => {
            let (rule, hours) = rule_of(rule)?;
            let path = query::parse_path(path)?;
            let r = query::path(&mut connect().await?, &keys, &rule, &path, hours, now).await?;
            if json {
                to_json(&r)
            } else {
                let mut out = format!(
                    "rule {} path {} over {}: {}, ~{}\n",
                    r.rule,
                    r.path,
                    count(r.hours, "hour", "hours"),
                    count(r.counts.total, "request", "requests"),
                    count(r.counts.unique, "client", "clients")
                );
                for (hour, n) in &r.counts.by_hour {
                    out.push_str(&format!("  {hour}  {n}\n"));
                }
                out
            }
        }
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}
