//! Reading the file into its serde shapes while collecting every shape
//! problem (an unknown key, a wrong type, a missing field), not just the first.
//!
//! serde stops at its first error. So the text is read again and again: each
//! time an error is found, it is recorded with its key path and line, and the
//! lines of the key-value it is about are blanked (newlines kept, so every
//! other line number stays true) before the next read. What is left is then
//! read into the shapes for the value checks, which skip the keys dropped here
//! (their defaults would only cause knock-on errors).
//!
//! When an error cannot be placed, or blanking it would change what the
//! remaining lines mean (a whole `[[rule]]` table, whose removal would
//! renumber the rules after it), the read stops there with what it found.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::raw::RawConfig;
use super::{line_of, Issue};

/// At most this many shape problems are collected from one file.
const MAX_ISSUES: usize = 50;

/// What reading the shapes found.
pub(super) struct Shapes {
    /// The shapes of the text with every problem key blanked, if that text
    /// could be read at all.
    pub raw: Option<RawConfig>,
    pub issues: Vec<Issue>,
    /// Key paths whose values were dropped: value checks skip them.
    pub dropped: Vec<String>,
}

pub(super) fn read(text: &str) -> Shapes {
    let mut work = text.to_string();
    let mut shapes = Shapes {
        raw: None,
        issues: Vec::new(),
        dropped: Vec::new(),
    };
    while shapes.issues.len() < MAX_ISSUES {
        let err = match toml::from_str::<RawConfig>(&work) {
            Ok(raw) => {
                shapes.raw = Some(raw);
                break;
            }
            Err(e) => e,
        };
        let line = err.span().map(|s| line_of(text, s.start));
        let Some(found) = err.span().and_then(|s| locate(&work, s.start)) else {
            // A syntax error, or one that names no place: report it as it is.
            shapes.issues.push(Issue {
                key: "(syntax)".into(),
                line,
                message: first_line(err.message()),
                given_by: None,
            });
            break;
        };
        let (message, meant) = explain(err.message());
        if let Some(meant) = meant {
            // `limit` for `limits`: the key meant is as good as missing, and
            // its own checks ("at least one rate") would be knock-ons.
            let parent = found.path.rsplit_once('.').map_or("", |(p, _)| p);
            shapes.dropped.push(if parent.is_empty() {
                meant.to_string()
            } else {
                format!("{parent}.{meant}")
            });
        }
        shapes.issues.push(Issue {
            key: found.path.clone(),
            line,
            message,
            given_by: None,
        });
        let Some(lines) = found.blank else {
            break;
        };
        blank_lines(&mut work, lines);
        shapes.dropped.push(found.drop_path);
    }
    shapes
}

/// Whether a value check on `key` is a knock-on of a dropped key.
pub(super) fn is_knock_on(key: &str, dropped: &[String]) -> bool {
    dropped.iter().any(|d| {
        key == d
            || key
                .strip_prefix(d.as_str())
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
    })
}

struct Found {
    /// The most precise key path the error is about (`rule[0].match.methods`).
    path: String,
    /// The key-value whose lines are blanked, as a path.
    drop_path: String,
    /// Byte range of the lines to blank; `None`: cannot blank safely.
    blank: Option<Range<usize>>,
}

/// Find the key the byte offset `pos` belongs to.
fn locate(text: &str, pos: usize) -> Option<Found> {
    let doc = DeTable::parse(text).ok()?;
    let mut trail = Vec::new();
    find(doc.get_ref(), pos, &mut trail, true)?;
    // The deepest entry that sits on its own lines (a direct child of a
    // header table, not inside an inline table or array) is what gets blanked.
    let path = render(&trail);
    let line_level = trail.iter().rposition(|s| s.own_lines)?;
    let step = &trail[line_level];
    let drop_path = render(&trail[..=line_level]);
    let blank = match step.kind {
        Kind::Value => Some(step.range.clone()),
        // A whole table (`[serverr]`): its header and every key below it.
        Kind::HeaderTable => Some(step.range.clone()),
        // A `[[rule]]` element: blanking it would renumber the rules after it.
        Kind::ArrayElement => None,
    };
    Some(Found {
        path,
        drop_path,
        blank,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Value,
    HeaderTable,
    ArrayElement,
}

struct Step {
    name: String,
    /// `[i]` rather than `.name`.
    index: bool,
    own_lines: bool,
    kind: Kind,
    /// Byte range covering the entry's lines (for a header table, through its last key).
    range: Range<usize>,
}

fn render(trail: &[Step]) -> String {
    let mut out = String::new();
    for s in trail {
        if s.index {
            out.push_str(&format!("[{}]", s.name));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&s.name);
        }
    }
    out
}

/// Depth-first: the deepest entry whose key or value contains `pos`.
/// `header`: whether `table` is a header table (its keys sit on their own lines).
fn find(table: &DeTable<'_>, pos: usize, trail: &mut Vec<Step>, header: bool) -> Option<()> {
    for (key, value) in table.iter() {
        let key_span = key.span();
        let value_span = value.span();
        let header_table = matches!(value.get_ref(), DeValue::Table(_)) && !spans_children(value);
        let kind = if header_table {
            Kind::HeaderTable
        } else {
            Kind::Value
        };
        let range = if header_table {
            key_span.start.min(value_span.start)..last_end(value)
        } else {
            key_span.start.min(value_span.start)..value_span.end.max(key_span.end)
        };
        trail.push(Step {
            name: key.get_ref().to_string(),
            index: false,
            own_lines: header,
            kind,
            range,
        });
        if descend(value, pos, trail, header_table) {
            return Some(());
        }
        if key_span.contains(&pos) || value_span.contains(&pos) {
            return Some(());
        }
        trail.pop();
    }
    None
}

fn descend(value: &Spanned<DeValue<'_>>, pos: usize, trail: &mut Vec<Step>, header: bool) -> bool {
    match value.get_ref() {
        DeValue::Table(t) => find(t, pos, trail, header).is_some(),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let element_table =
                    matches!(item.get_ref(), DeValue::Table(_)) && !spans_children(item);
                trail.push(Step {
                    name: i.to_string(),
                    index: true,
                    own_lines: element_table,
                    kind: if element_table {
                        Kind::ArrayElement
                    } else {
                        Kind::Value
                    },
                    range: item.span(),
                });
                if descend(item, pos, trail, element_table) || item.span().contains(&pos) {
                    return true;
                }
                trail.pop();
            }
            false
        }
        _ => false,
    }
}

/// Whether a table value's span covers its children (an inline table) rather
/// than being just its `[header]`.
fn spans_children(value: &Spanned<DeValue<'_>>) -> bool {
    let DeValue::Table(t) = value.get_ref() else {
        return true;
    };
    let span = value.span();
    t.iter().all(|(k, _)| span.contains(&k.span().start))
}

/// The end of the last byte that belongs to a value, children included.
fn last_end(value: &Spanned<DeValue<'_>>) -> usize {
    let mut end = value.span().end;
    match value.get_ref() {
        DeValue::Table(t) => {
            for (k, v) in t.iter() {
                end = end.max(k.span().end).max(last_end(v));
            }
        }
        DeValue::Array(items) => {
            for item in items.iter() {
                end = end.max(last_end(item));
            }
        }
        _ => {}
    }
    end
}

/// Replace every byte of the lines touching `range` with spaces, keeping newlines.
fn blank_lines(text: &mut String, range: Range<usize>) {
    let start = text[..range.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let end = text[range.end.min(text.len())..]
        .find('\n')
        .map_or(text.len(), |i| range.end + i);
    let blanked: String = text[start..end]
        .chars()
        .map(|c| if c == '\n' { '\n' } else { ' ' })
        .collect();
    text.replace_range(start..end, &blanked);
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or(message).trim().to_string()
}

/// serde's message, made to read as advice: an unknown key gets the closest
/// known one (returned too), "sequence" becomes "list".
fn explain(message: &str) -> (String, Option<String>) {
    let message = first_line(message);
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or_default();
        let known: Vec<&str> = rest
            .split_once("expected")
            .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
            .unwrap_or_default();
        return match closest(name, &known) {
            Some(k) => (
                format!("unknown key {name:?}; did you mean {k:?}?"),
                Some(k.to_string()),
            ),
            None if known.is_empty() => (format!("unknown key {name:?}"), None),
            None => (
                format!("unknown key {name:?}; known keys: {}", known.join(", ")),
                None,
            ),
        };
    }
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
    {
        return (format!("{field:?} is required here"), None);
    }
    let message = message
        .replace("a sequence", "a list")
        .replace("struct ", "table ");
    (message, None)
}

/// The known key nearest to a typo (at most 2 edits, or a shared prefix).
fn closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (distance(name, k), *k))
        .filter(|(d, k)| *d <= 2 || k.starts_with(name) || name.starts_with(k))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The issues in file order (serde finds them in its own).
    fn issues(text: &str) -> Vec<String> {
        let mut found = read(text).issues;
        found.sort_by_key(|i| i.line);
        found
            .iter()
            .map(|i| format!("{}@{:?}: {}", i.key, i.line, i.message))
            .collect()
    }

    #[test]
    fn typos_and_wrong_types_are_all_reported_with_their_lines() {
        let text = "[server]\nlisen = \"x\"\n\n[[rule]]\nname = \"a\"\nlimit = [\"5/m\"]\nmatch = { methods = \"POST\" }\n\n[[rule]]\nname = \"b\"\nshadow = \"yes\"\n";
        let found = issues(text);
        assert_eq!(found.len(), 4, "{found:#?}");
        assert_eq!(
            found[0],
            "server.lisen@Some(2): unknown key \"lisen\"; did you mean \"listen\"?"
        );
        assert!(
            found[1].starts_with(
                "rule[0].limit@Some(6): unknown key \"limit\"; did you mean \"limits\"?"
            ),
            "{found:?}"
        );
        assert!(
            found[2].starts_with(
                "rule[0].match.methods@Some(7): invalid type: string \"POST\", expected a list"
            ),
            "{found:?}"
        );
        assert!(
            found[3].starts_with("rule[1].shadow@Some(11): invalid type"),
            "{found:?}"
        );
        let shapes = read(text);
        assert!(
            shapes.raw.is_some(),
            "the rest is still read for value checks"
        );
        let mut dropped = shapes.dropped;
        dropped.sort();
        assert_eq!(
            dropped,
            [
                "rule[0].limit",
                "rule[0].limits",
                "rule[0].match",
                "rule[1].shadow",
                "server.lisen",
                "server.listen"
            ]
        );
    }

    #[test]
    fn an_unknown_table_is_dropped_whole_and_reading_goes_on() {
        let found =
            issues("[serverr]\nlisten = \"x\"\nother = 1\n\n[client_ip]\nipv6_prefix = \"64\"\n");
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(
            found[0]
                .starts_with("serverr@Some(1): unknown key \"serverr\"; did you mean \"server\"?"),
            "{found:?}"
        );
        assert!(
            found[1].starts_with("client_ip.ipv6_prefix@Some(6)"),
            "{found:?}"
        );
    }

    #[test]
    fn a_syntax_error_is_reported_alone() {
        let found = issues("[server\nlisten = 1\n");
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("(syntax)@Some(1)"), "{found:?}");
    }

    #[test]
    fn knock_ons_are_keys_below_a_dropped_one() {
        let dropped = vec!["rule[0].limits".to_string()];
        assert!(is_knock_on("rule[0].limits", &dropped));
        assert!(is_knock_on("rule[0].limits[1]", &dropped));
        assert!(!is_knock_on("rule[0].limits_x", &dropped));
        assert!(!is_knock_on("rule[1].limits", &dropped));
    }
}
