//! The rule key `ban` (`rule::Ban`): only a rule keyed by the client address
//! alone may ban (what else would go on the denylist?), and every value is
//! checked here, each problem naming its field.

use std::time::Duration;

use super::Collector;
use crate::config::raw::RawRule;
use crate::rule::ban::{self, Ban};
use crate::rule::{KeyPart, KeyTemplate};

/// `rule[i].ban`, or `None` (no ban, or a problem was pushed).
pub(super) fn ban(
    c: &mut Collector<'_>,
    i: usize,
    r: &RawRule,
    key: Option<&KeyTemplate>,
) -> Option<Ban> {
    let raw = r.ban.as_ref()?;
    let at = |field: &str| format!("rule[{i}].ban.{field}");
    let before = c.issues.len();
    let by_address = key.is_some_and(|k| k.0 == [KeyPart::Ip]);
    if r.descriptor.is_some() || (key.is_some() && !by_address) {
        c.push(
            format!("rule[{i}].ban"),
            Some(raw),
            format!(
                "rule {:?} is keyed by {}, not by the client address: only a rule with key = \"ip\" may ban (its key is what goes on the denylist)",
                r.name.get_ref(),
                if r.descriptor.is_some() { "descriptor".to_string() } else { r.key.get_ref().clone() }
            ),
        );
    }
    let b = raw.get_ref();
    let after = *b.after.get_ref();
    if !(1..=ban::MAX_AFTER as i64).contains(&after) {
        c.push(
            at("after"),
            Some(&b.after),
            format!(
                "must be a whole number from 1 to {} (limited answers that make an offence)",
                ban::MAX_AFTER
            ),
        );
    }
    let factor = b
        .factor
        .as_ref()
        .map_or(ban::DEFAULT_FACTOR as i64, |f| *f.get_ref());
    if !(1..=ban::MAX_FACTOR as i64).contains(&factor) {
        c.push(
            at("factor"),
            b.factor.as_ref(),
            format!(
                "must be a whole number from 1 to {} (1: every ban lasts `for`)",
                ban::MAX_FACTOR
            ),
        );
    }
    let positive = |c: &mut Collector<'_>, field: &str, v: &toml::Spanned<String>| {
        let d = c.duration(&at(field), v)?;
        if d < Duration::from_millis(1) {
            c.push(at(field), Some(v), "must be at least 1ms");
            return None;
        }
        Some(d)
    };
    let within = positive(c, "within", &b.within);
    let duration = positive(c, "for", &b.duration);
    let max = match &b.max {
        Some(m) => positive(c, "max", m),
        None => duration.map(|d| d.max(ban::DEFAULT_MAX)),
    };
    let remember = match &b.remember {
        Some(m) => positive(c, "remember", m),
        None => Some(ban::DEFAULT_REMEMBER),
    };
    if let (Some(d), Some(m), Some(raw_max)) = (duration, max, &b.max) {
        if m < d {
            c.push(
                at("max"),
                Some(raw_max),
                format!(
                    "{} is shorter than for = {:?}: no ban may be shorter than the first",
                    raw_max.get_ref(),
                    b.duration.get_ref()
                ),
            );
        }
    }
    if c.issues.len() > before {
        return None;
    }
    Some(Ban {
        after: after as u64,
        within: within?,
        duration: duration?,
        factor: factor as u64,
        max: max?,
        remember: remember?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::report::tests::problems;
    use crate::config::{parse, Overrides};

    #[test]
    fn a_ban_reads_with_its_defaults() {
        let text = "[[rule]]\nname = \"login\"\nlimits = [\"5/m\"]\nban = { after = 10, within = \"10m\", for = \"15m\" }\n";
        let cfg = parse("test.toml", text, &Overrides::default()).unwrap();
        let ban = cfg.rules[0].ban.unwrap();
        assert_eq!(ban.after, 10);
        assert_eq!(ban.factor, 1);
        assert_eq!(ban.max, crate::rule::ban::DEFAULT_MAX);
        assert!(cfg.rules[0]
            .to_string()
            .contains("ban after 10 in 10m for 15m"));
    }

    #[test]
    fn only_a_rule_keyed_by_the_client_address_may_ban() {
        let found = problems(
            "key = \"ip+header:x-user\"\nban = { after = 1, within = \"1m\", for = \"1m\" }",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "rule[0].ban");
        assert!(
            found[0].1.contains("\"login\"") && found[0].1.contains("ip+header:x-user"),
            "{found:?}"
        );
    }

    #[test]
    fn bad_ban_values_name_their_field() {
        for (ban, field) in [
            (
                "after = 0, within = \"1m\", for = \"1m\"",
                "rule[0].ban.after",
            ),
            (
                "after = 1, within = \"soon\", for = \"1m\"",
                "rule[0].ban.within",
            ),
            (
                "after = 1, within = \"1m\", for = \"0s\"",
                "rule[0].ban.for",
            ),
            (
                "after = 1, within = \"1m\", for = \"1h\", max = \"1m\"",
                "rule[0].ban.max",
            ),
            (
                "after = 1, within = \"1m\", for = \"1m\", factor = 0",
                "rule[0].ban.factor",
            ),
            (
                "after = 1, within = \"1m\", for = \"1m\", remember = \"x\"",
                "rule[0].ban.remember",
            ),
        ] {
            let found = problems(&format!("ban = {{ {ban} }}"));
            assert_eq!(found.len(), 1, "{ban}: {found:?}");
            assert_eq!(found[0].0, field, "{ban}: {found:?}");
        }
    }
}
