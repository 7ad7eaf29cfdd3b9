//! The rule key `report_statuses`: which upstream answers a proxy's report
//! (`POST /report`, `src/report.rs`) charges a rule with `count = "reported"` for.

use super::Collector;
use crate::config::raw::RawRule;
use crate::rule::Count;

/// `report_statuses`: HTTP statuses (100..=599), only on a rule that counts
/// reports; the default when such a rule names none. An empty list is kept:
/// only the application (`POST /v1/report`) charges that rule.
pub(super) fn statuses(
    c: &mut Collector<'_>,
    i: usize,
    r: &RawRule,
    count: Option<Count>,
) -> Vec<u16> {
    let key = format!("rule[{i}].report_statuses");
    let Some(raw) = &r.report_statuses else {
        return match count {
            Some(Count::Reported) => crate::rule::DEFAULT_REPORT_STATUSES.to_vec(),
            _ => Vec::new(),
        };
    };
    if count.is_some_and(|n| n != Count::Reported) {
        c.push(
            key.clone(),
            Some(raw),
            "only a rule with count = \"reported\" takes report_statuses (a rule counting requests is charged by every request)",
        );
    }
    let mut statuses = Vec::new();
    for (j, status) in raw.get_ref().iter().enumerate() {
        match u16::try_from(*status.get_ref()) {
            Ok(s) if (100..=599).contains(&s) => statuses.push(s),
            _ => c.push(
                format!("{key}[{j}]"),
                Some(status),
                format!("{} is not an HTTP status (100..599)", status.get_ref()),
            ),
        }
    }
    statuses
}

#[cfg(test)]
pub(super) mod tests {
    use crate::config::{parse, Overrides};

    /// The problems (key, message) of one rule `login` (limits 5/m) with
    /// `rule`'s lines added; also used by the other rule keys' tests.
    pub(in crate::config::validate) fn problems(rule: &str) -> Vec<(String, String)> {
        let text = format!("[[rule]]\nname = \"login\"\nlimits = [\"5/m\"]\n{rule}\n");
        match parse("test.toml", &text, &Overrides::default()) {
            Ok(_) => Vec::new(),
            Err(e) => e
                .issues
                .iter()
                .map(|i| (i.key.clone(), i.message.clone()))
                .collect(),
        }
    }

    #[test]
    fn a_reported_rule_defaults_to_401_and_403_and_keeps_what_it_lists() {
        let rules = |rule: &str| {
            let text = format!("[[rule]]\nname = \"login\"\nlimits = [\"5/m\"]\n{rule}\n");
            parse("test.toml", &text, &Overrides::default())
                .unwrap()
                .rules[0]
                .report_statuses
                .clone()
        };
        assert_eq!(rules("count = \"reported\""), vec![401, 403]);
        assert_eq!(
            rules("count = \"reported\"\nreport_statuses = [401, 429]"),
            vec![401, 429]
        );
        assert_eq!(
            rules("count = \"reported\"\nreport_statuses = []"),
            Vec::<u16>::new()
        );
        assert_eq!(rules(""), Vec::<u16>::new());
    }

    #[test]
    fn a_status_out_of_range_or_on_a_request_counting_rule_is_refused_naming_the_key() {
        let p = problems("count = \"reported\"\nreport_statuses = [401, 99, 600, -1]");
        let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "rule[0].report_statuses[1]",
                "rule[0].report_statuses[2]",
                "rule[0].report_statuses[3]"
            ],
            "{p:?}"
        );
        assert!(
            p[0].1.contains("99 is not an HTTP status (100..599)"),
            "{p:?}"
        );
        let p = problems("report_statuses = [401]");
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, "rule[0].report_statuses");
        assert!(p[0].1.contains("count = \"reported\""), "{p:?}");
    }
}
