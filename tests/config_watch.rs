//! `tollgate serve` (the real binary) following its config file with no
//! signal: a Kubernetes ConfigMap's `..data` symlink swapped under it, a
//! broken version, a swap under a stream of requests, `--no-watch` with
//! SIGHUP, and the config hash in `GET /v1/status`. No Redis: the embedded
//! store, so each replica's counters are its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::binary::{output_text, tollgate, Serve};
use crate::support::{eventually, metric, temp_dir};

/// The watch applies a change within about half a second; this only bounds
/// a failing test.
const DEADLINE: Duration = Duration::from_secs(10);

/// A ConfigMap volume as the kubelet writes it: `DIR/tollgate.toml` →
/// `..data/tollgate.toml`, `..data` → `..2026_12_07_01` (the version's dir).
struct ConfigMap {
    dir: PathBuf,
    versions: u32,
}

impl ConfigMap {
    fn new(name: &str, text: &str) -> ConfigMap {
        let mut cm = ConfigMap {
            dir: temp_dir(&format!("watch-{name}")),
            versions: 0,
        };
        let data = cm.write_version(text);
        std::os::unix::fs::symlink(&data, cm.dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/tollgate.toml", cm.path()).unwrap();
        cm
    }

    /// The path a replica is given: the stable symlink.
    fn path(&self) -> PathBuf {
        self.dir.join("tollgate.toml")
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// A new version's dir with its file; its name, relative to `dir`.
    fn write_version(&mut self, text: &str) -> String {
        self.versions += 1;
        let name = format!("..2026_12_07_{:02}", self.versions);
        std::fs::create_dir(self.dir.join(&name)).unwrap();
        std::fs::write(self.dir.join(&name).join("tollgate.toml"), text).unwrap();
        name
    }

    /// The kubelet's atomic update: a new version's dir, a new symlink
    /// `..data_tmp` to it, renamed over `..data`.
    fn swap(&mut self, text: &str) {
        let data = self.write_version(text);
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&data, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }
}

fn rule(limit: &str) -> String {
    format!("[[rule]]\nname = \"r\"\nmatch = {{ path_prefix = \"/r\" }}\nlimits = [\"{limit}\"]\n")
}

/// SHA-1 hex of the bytes, as `sha1sum` prints it.
fn sha1(text: &str) -> String {
    sha1_smol::Sha1::from(text.as_bytes()).digest().to_string()
}

async fn replica(cm: &ConfigMap, name: &str, extra: &[&str]) -> Serve {
    Serve::start_at(&cm.path(), &cm.log(name), extra).await
}

async fn config_of(s: &Serve) -> serde_json::Value {
    s.node_status().await["config"].clone()
}

/// How many `/r` requests pass until the first 429 (bounded).
async fn admitted(s: &Serve) -> u32 {
    for n in 0..100 {
        if s.status("/r").await == 429 {
            return n;
        }
    }
    panic!("no limit within 100 requests");
}

#[tokio::test]
async fn a_configmap_swap_under_a_running_replica_changes_a_limit() {
    let mut cm = ConfigMap::new("swap", &rule("1/h"));
    let s = replica(&cm, "serve", &[]).await;
    s.log_line("watching the config file").await;
    assert_eq!(admitted(&s).await, 1);

    cm.swap(&rule("3/h"));
    // Denials under 1/h charge nothing: the first 200 is the new limit's.
    eventually(DEADLINE, || async { s.status("/r").await == 200 }).await;
    assert_eq!(admitted(&s).await, 1, "3/h with 2 spent: one more");
    let line = s.log_line("config reloaded").await;
    assert!(
        line.contains("source=\"watch\"") || line.contains("source=watch"),
        "{line}"
    );
    assert!(line.contains(r#"changed=["r"]"#), "{line}");
    let config = config_of(&s).await;
    assert_eq!(config["source"], "watch");
    assert_eq!(config["hash"], sha1(&rule("3/h")));
    assert_eq!(config["path"], cm.path().to_str().unwrap());
}

#[tokio::test]
async fn a_broken_version_changes_nothing_is_reported_and_its_fix_applies() {
    let mut cm = ConfigMap::new("broken", &rule("1/h"));
    let s = replica(&cm, "serve", &[]).await;
    assert_eq!(admitted(&s).await, 1);
    let started = config_of(&s).await;

    let broken = rule("5/x") + "bogus = 1\n";
    cm.swap(&broken);
    let rejected = s.log_line("config reload rejected").await;
    assert!(rejected.contains("running config kept"), "{rejected}");
    // Every problem, as `config check` prints it: file, line, key.
    let file = cm.path().display().to_string();
    let log = s.log();
    assert!(
        log.contains(&format!("{file}:4: rule[0].limits[0]: bad rate \"5/x\"")),
        "{log}"
    );
    assert!(
        log.contains(&format!("{file}:5: rule[0].bogus: unknown key")),
        "{log}"
    );
    let check = tollgate(&["config", "check", cm.path().to_str().unwrap()]);
    for problem in output_text(&check).lines().skip(1) {
        assert!(log.contains(problem.trim()), "{problem} not in {log}");
    }
    assert_eq!(s.status("/r").await, 429, "the old limit still applies");
    assert_eq!(config_of(&s).await, started, "still the first version");
    let metrics = s.metrics().await;
    assert_eq!(
        metric(&metrics, "tollgate_config_reload_rejected", &[]),
        1.0
    );
    let rejected = [("source", "watch"), ("result", "rejected")];
    assert_eq!(
        metric(&metrics, "tollgate_config_reloads_total", &rejected),
        1.0
    );

    cm.swap(&rule("3/h"));
    eventually(DEADLINE, || async { s.status("/r").await == 200 }).await;
    assert_eq!(config_of(&s).await["hash"], sha1(&rule("3/h")));
    let metrics = s.metrics().await;
    assert_eq!(
        metric(&metrics, "tollgate_config_reload_rejected", &[]),
        0.0
    );
}

/// Two rules on every `/r` request, per client (`x-client`); the tighter
/// one binds. Old: 3 then 10; new: 10 then 5. A half-loaded rule set
/// (x new, y old: 10; x old, y new: 3 with a policy of 3 and 5) is neither.
fn two_rules(x: u32, y: u32) -> String {
    [("x", x), ("y", y)]
        .iter()
        .map(|(name, n)| {
            format!("[[rule]]\nname = \"{name}\"\nmatch = {{ path_prefix = \"/r\" }}\nkey = \"header:x-client\"\nlimits = [\"{n}/h\"]\n\n")
        })
        .collect()
}

const OLD: [(&str, u32); 2] = [("x", 3), ("y", 10)];
const NEW: [(&str, u32); 2] = [("x", 10), ("y", 5)];

/// `RateLimit-Policy: "x";q=3;w=3600, "y";q=10;w=3600` as rule → count.
fn policy(header: &str) -> BTreeMap<String, u32> {
    header
        .split(',')
        .map(|item| {
            let name = item.split('"').nth(1).unwrap().to_string();
            let q = item
                .split(';')
                .find_map(|p| p.trim().strip_prefix("q="))
                .unwrap_or_else(|| panic!("no q in {header}"));
            (name, q.parse().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn each_answer_across_a_swap_comes_whole_from_the_old_or_the_new_config() {
    let mut cm = ConfigMap::new("consistent", &two_rules(3, 10));
    let s = replica(&cm, "serve", &[]).await;
    let http = reqwest::Client::new();
    let old: BTreeMap<String, u32> = OLD.iter().map(|(n, q)| (n.to_string(), *q)).collect();
    let new: BTreeMap<String, u32> = NEW.iter().map(|(n, q)| (n.to_string(), *q)).collect();

    // Each client sends 6 requests in turn (past either bound). The swap is
    // made after the third client; the loop ends three clients after the
    // first answer from the new config (bounded by 2000 clients).
    let (mut swapped, mut first_new, mut fully) = (false, None, [0u32; 2]);
    for client in 0..2000u32 {
        if client == 3 {
            cm.swap(&two_rules(10, 5));
            swapped = true;
        }
        if first_new.is_some_and(|f| client >= f + 3) {
            break;
        }
        let (mut spent, mut configs) = (0u32, Vec::new());
        for i in 0..6 {
            let r = http
                .get(format!("http://{}/check/r", s.addr))
                .header("x-client", format!("c{client}"))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let header = r.headers()["ratelimit-policy"]
                .to_str()
                .unwrap()
                .to_string();
            let seen = policy(&header);
            let is_new = if seen == old {
                assert!(
                    first_new.is_none(),
                    "an old answer after a new one: client {client}, request {i}"
                );
                false
            } else if seen == new {
                first_new.get_or_insert(client);
                true
            } else {
                panic!("a half-loaded config answered client {client}, request {i}: {header}");
            };
            // The counters carry over (same algorithm and period); a denial
            // charges no rule. So the answer is 200 exactly while the
            // client's admitted count is under its config's tighter limit.
            let bound = seen.values().min().copied().unwrap();
            let expect = if spent < bound { 200 } else { 429 };
            assert_eq!(
                status, expect,
                "client {client}, request {i}: {spent} admitted, config {header}"
            );
            spent += u32::from(status == 200);
            configs.push(is_new);
        }
        if configs.iter().all(|n| !n) {
            fully[0] = fully[0].max(spent);
        } else if configs.iter().all(|n| *n) {
            fully[1] = fully[1].max(spent);
        }
    }
    assert!(swapped);
    assert!(first_new.is_some(), "the new config never answered");
    assert_eq!(
        fully,
        [3, 5],
        "a client wholly on each side got its config's limit"
    );
}

#[tokio::test]
async fn with_no_watch_an_edit_does_not_reload_and_sighup_does() {
    let mut cm = ConfigMap::new("no-watch", &rule("1/h"));
    let quiet = replica(&cm, "quiet", &["--no-watch"]).await;
    quiet
        .log_line("not watching the config file (--no-watch)")
        .await;
    // A watching replica on the same file: once it has reloaded, a watch
    // would have seen the swap, so the quiet one's silence is the flag's.
    let watching = replica(&cm, "watching", &[]).await;
    assert_eq!(admitted(&quiet).await, 1);

    cm.swap(&rule("3/h"));
    let new_hash = sha1(&rule("3/h"));
    eventually(DEADLINE, || async {
        config_of(&watching).await["hash"] == new_hash
    })
    .await;
    assert_eq!(quiet.status("/r").await, 429, "no reload without the watch");
    assert_eq!(config_of(&quiet).await["source"], "start");
    assert!(!quiet.log().contains("config reloaded"), "{}", quiet.log());

    quiet.signal(libc::SIGHUP);
    eventually(DEADLINE, || async {
        config_of(&quiet).await["hash"] == new_hash
    })
    .await;
    assert_eq!(config_of(&quiet).await["source"], "sighup");
    assert_eq!(admitted(&quiet).await, 2, "3/h with 1 spent");

    // The variable is the flag's twin.
    let help = output_text(&tollgate(&["serve", "--help"]));
    assert!(
        help.contains("--no-watch") && help.contains("TOLLGATE_NO_WATCH"),
        "{help}"
    );
}

#[tokio::test]
async fn the_status_shows_one_hash_on_two_replicas_of_a_file_and_its_change() {
    let mut cm = ConfigMap::new("status", &rule("1/h"));
    let a = replica(&cm, "a", &[]).await;
    let b = replica(&cm, "b", &[]).await;
    let (ca, cb) = (config_of(&a).await, config_of(&b).await);
    assert_eq!(ca["hash"], sha1(&rule("1/h")));
    assert_eq!(ca["hash"], cb["hash"], "{ca} {cb}");
    assert_eq!(ca["path"], cm.path().to_str().unwrap());
    assert_eq!(
        (ca["source"].as_str(), cb["source"].as_str()),
        (Some("start"), Some("start"))
    );
    let started = ca["loaded_at_ms"].as_u64().unwrap();

    cm.swap(&rule("2/h"));
    for s in [&a, &b] {
        eventually(DEADLINE, || async {
            config_of(s).await["hash"] == sha1(&rule("2/h"))
        })
        .await;
        let c = config_of(s).await;
        assert_eq!(c["source"], "watch");
        assert!(c["loaded_at_ms"].as_u64().unwrap() >= started, "{c}");
    }
}

#[tokio::test]
async fn the_same_bytes_swapped_in_again_reload_nothing() {
    let mut cm = ConfigMap::new("same", &rule("1/h"));
    let s = replica(&cm, "serve", &[]).await;
    let started = config_of(&s).await;
    let unchanged = [("source", "watch"), ("result", "unchanged")];
    // The watch's first look at the file finds the version it started with.
    eventually(DEADLINE, || async {
        metric(
            &s.metrics().await,
            "tollgate_config_reloads_total",
            &unchanged,
        ) == 1.0
    })
    .await;

    cm.swap(&rule("1/h"));
    eventually(DEADLINE, || async {
        metric(
            &s.metrics().await,
            "tollgate_config_reloads_total",
            &unchanged,
        ) == 2.0
    })
    .await;
    assert_eq!(config_of(&s).await, started, "not reloaded");
    assert!(!s.log().contains("config reloaded"), "{}", s.log());
    assert_eq!(
        path_target(&cm.path())
            .parent()
            .unwrap()
            .file_name()
            .unwrap(),
        "..2026_12_07_02"
    );
}

/// Where the ConfigMap's path leads now.
fn path_target(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap()
}

#[tokio::test]
async fn an_edit_in_place_of_the_same_size_applies() {
    let dir = temp_dir("watch-in-place");
    let s = Serve::start(&dir, &rule("1/h"), &[]).await;
    s.log_line("watching the config file").await;
    assert_eq!(admitted(&s).await, 1);
    // The same inode and size: only the file's times tell the change.
    std::fs::write(&s.config, rule("3/h")).unwrap();
    eventually(DEADLINE, || async { s.status("/r").await == 200 }).await;
    assert_eq!(config_of(&s).await["hash"], sha1(&rule("3/h")));
}
