//! Reading a server's `/metrics`: a scrape, and one sample out of the
//! Prometheus text exposition (which also checks every line's syntax).

use super::server::TestServer;

/// Fetch `/metrics` from a server's admin listener.
pub async fn scrape(s: &TestServer) -> String {
    reqwest::get(s.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of one sample, e.g. `metric(&text, "tollgate_redis_up", &[])` or
/// `metric(&text, "tollgate_decisions_total", &[("rule", "a"), ("outcome", "allowed")])`;
/// 0 when absent. Panics on a line that is not valid exposition format.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (metric_name, label_text) = match series.split_once('{') {
            Some((n, rest)) => (
                n,
                rest.strip_suffix('}')
                    .unwrap_or_else(|| panic!("bad labels in {line:?}")),
            ),
            None => (series, ""),
        };
        assert!(
            metric_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if metric_name != name {
            continue;
        }
        let found: Vec<(String, String)> = if label_text.is_empty() {
            vec![]
        } else {
            label_text
                .split("\",")
                .map(|kv| {
                    let (k, v) = kv
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("bad label in {line:?}"));
                    (k.to_string(), v.trim_end_matches('"').to_string())
                })
                .collect()
        };
        if labels
            .iter()
            .all(|(k, v)| found.iter().any(|(fk, fv)| fk == k && fv == v))
            && found.len() == labels.len()
        {
            return value;
        }
    }
    0.0
}
