//! What a config reload changed in the rules, for its log line.

use super::Rule;

/// Rules added, removed and changed between two configs, by name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// `(name, before, after)`, each side as `config check` prints it.
    pub changed: Vec<(String, String, String)>,
}

impl Changes {
    pub fn between(old: &[Rule], new: &[Rule]) -> Changes {
        let find = |rules: &[Rule], name: &str| rules.iter().position(|r| r.name == name);
        let mut c = Changes::default();
        for r in new {
            match find(old, &r.name) {
                None => c.added.push(r.name.clone()),
                Some(i) => {
                    let (before, after) = (old[i].to_string(), r.to_string());
                    if before != after {
                        c.changed.push((r.name.clone(), before, after));
                    }
                }
            }
        }
        c.removed = old
            .iter()
            .filter(|r| find(new, &r.name).is_none())
            .map(|r| r.name.clone())
            .collect();
        c
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Vec<Rule> {
        crate::config::parse("t", text, &Default::default())
            .unwrap()
            .rules
    }

    #[test]
    fn added_removed_and_changed_rules_are_named_with_their_limits() {
        let old = rules("[[rule]]\nname = \"a\"\nlimits = [\"1/h\"]\n[[rule]]\nname = \"gone\"\nlimits = [\"1/h\"]\n[[rule]]\nname = \"same\"\nlimits = [\"9/m\"]\n");
        let new = rules("[[rule]]\nname = \"a\"\nlimits = [\"5/h\"]\n[[rule]]\nname = \"same\"\nlimits = [\"9/m\"]\n[[rule]]\nname = \"b\"\nlimits = [\"2/s\"]\n");
        let c = Changes::between(&old, &new);
        assert_eq!(c.added, ["b"]);
        assert_eq!(c.removed, ["gone"]);
        assert_eq!(c.changed.len(), 1);
        let (name, before, after) = &c.changed[0];
        assert_eq!(name, "a");
        assert!(
            before.contains("limits [1/h]") && after.contains("limits [5/h]"),
            "{before} -> {after}"
        );
        assert!(Changes::between(&new, &new).is_empty());
    }
}
