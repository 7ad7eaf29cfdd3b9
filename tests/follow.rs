//! `tollgate follow --export`: a real follower process keeps a file equal to
//! the live allowlist (adds, removes, expiry), runs the reload command once
//! per burst of changes, keeps the file when the command fails, never empties
//! it, and exits 0 on SIGTERM.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::allowlist::{add_entry, listing, now_ms, remove_entry};
use crate::support::binary::{tollgate, tollgate_cmd};
use crate::support::nginx;
use crate::support::process::{exited_within, signal};

use crate::support::{
    eventually, free_port, metric, shared_redis, temp_dir, unique_prefix, TestServer,
};

/// A `tollgate follow` process, killed on drop.
struct Follow {
    child: Child,
    log: PathBuf,
}

impl Follow {
    fn start(dir: &Path, redis: &str, prefix: &str, extra: &[&str]) -> Follow {
        let log = dir.join("follow.log");
        let child = tollgate_cmd(&["follow", "--redis", redis, "--prefix", prefix])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Follow { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit code.
    async fn terminate(&mut self) -> Option<i32> {
        signal(&self.child, libc::SIGTERM);
        exited_within(&mut self.child, Duration::from_secs(10))
            .await
            .expect("still running 10 s after SIGTERM")
            .code()
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config() -> &'static str {
    "[allowlist]\nreap_interval = \"200ms\"\n"
}

/// The live networks, from Redis (the admin API's listing).
async fn live(s: &TestServer) -> BTreeSet<String> {
    listing(s)
        .await
        .2
        .into_iter()
        .map(|(cidr, _)| cidr)
        .collect()
}

/// The networks an nginx-geo file lets in.
fn geo_file(path: &Path) -> Option<BTreeSet<String>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| l.strip_suffix(" 1;").expect("NETWORK 1;").to_string())
            .collect(),
    )
}

fn reloads(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// A prefix of its own on the shared Redis, its URL, and a server whose
/// admin API writes the allowlist there.
async fn admin_server() -> (String, String, TestServer) {
    let prefix = unique_prefix("follow");
    let url = shared_redis().url();
    let admin = TestServer::start(config(), Some(&url), &prefix).await;
    (prefix, url, admin)
}

#[tokio::test]
async fn the_export_follows_adds_removes_and_expiry_with_one_reload_per_burst() {
    let (prefix, url, admin) = admin_server().await;
    let dir = temp_dir("geo");
    let file = dir.join("allow.conf");
    let counter = dir.join("reloads");
    let reload = format!("echo reload >> {}", counter.display());
    let mut f = Follow::start(
        &dir,
        &url,
        &prefix,
        &[
            "--export",
            file.to_str().unwrap(),
            "--format",
            "nginx-geo",
            "--reload-cmd",
            &reload,
        ],
    );
    // The empty list, once synced.
    eventually(Duration::from_secs(5), || async { reloads(&counter) == 1 }).await;
    assert_eq!(geo_file(&file), Some(BTreeSet::new()));

    // One burst of five adds: one write, one reload.
    for i in 1..=5 {
        add_entry(&admin, &format!("198.51.100.{i}"), "1h").await;
    }
    let expected = live(&admin).await;
    assert_eq!(expected.len(), 5);
    eventually(Duration::from_secs(3), || async {
        geo_file(&file).as_ref() == Some(&expected)
    })
    .await;
    eventually(Duration::from_secs(2), || async { reloads(&counter) >= 2 }).await;

    remove_entry(&admin, "198.51.100.3").await;
    let expected = live(&admin).await;
    eventually(Duration::from_secs(3), || async {
        geo_file(&file).as_ref() == Some(&expected)
    })
    .await;
    eventually(Duration::from_secs(2), || async { reloads(&counter) >= 3 }).await;
    assert_eq!(reloads(&counter), 3, "one reload per burst of changes");

    let short = add_entry(&admin, "192.0.2.0/24", "2s").await;
    let expires_at = short["expires_at"].as_u64().unwrap();
    eventually(Duration::from_secs(3), || async {
        geo_file(&file).is_some_and(|f| f.contains("192.0.2.0/24"))
    })
    .await;
    eventually(Duration::from_secs(5), || async {
        geo_file(&file).is_some_and(|f| !f.contains("192.0.2.0/24"))
    })
    .await;
    assert!(
        now_ms() + 100 >= expires_at,
        "left the file {} ms early",
        expires_at - now_ms()
    );
    assert_eq!(geo_file(&file).as_ref(), Some(&live(&admin).await));

    // Shutting down leaves the file as it is.
    let before = std::fs::read_to_string(&file).unwrap();
    assert_eq!(f.terminate().await, Some(0), "{}", f.log());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
}

#[tokio::test]
async fn a_failing_reload_command_keeps_the_file_and_following_goes_on() {
    let (prefix, url, admin) = admin_server().await;
    let dir = temp_dir("failing");
    let file = dir.join("allow.json");
    let metrics = dir.join("tollgate.prom");
    let f = Follow::start(
        &dir,
        &url,
        &prefix,
        &[
            "--export",
            file.to_str().unwrap(),
            "--format",
            "json",
            "--reload-cmd",
            "exit 3",
            "--metrics-file",
            metrics.to_str().unwrap(),
        ],
    );
    let cidrs = |path: &Path| -> Option<Vec<String>> {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
        Some(
            v["entries"]
                .as_array()?
                .iter()
                .map(|e| e["cidr"].as_str().unwrap().to_string())
                .collect(),
        )
    };
    // The empty list once synced (first write), then two changes.
    eventually(Duration::from_secs(5), || async {
        cidrs(&file) == Some(vec![])
    })
    .await;
    add_entry(&admin, "203.0.113.7", "1h").await;
    eventually(Duration::from_secs(3), || async {
        cidrs(&file) == Some(vec!["203.0.113.7/32".to_string()])
    })
    .await;
    add_entry(&admin, "2001:db8::/48", "1h").await;
    eventually(Duration::from_secs(3), || async {
        cidrs(&file) == Some(vec!["203.0.113.7/32".into(), "2001:db8::/48".into()])
    })
    .await;
    let counted = |name: &'static str| {
        let text = std::fs::read_to_string(&metrics).unwrap_or_default();
        metric(&text, name, &[])
    };
    eventually(Duration::from_secs(3), || async {
        counted("tollgate_follow_reload_failures_total") == 3.0
    })
    .await;
    assert!(f.log().contains("reload command failed"), "{}", f.log());
    assert_eq!(counted("tollgate_follow_writes_total"), 3.0);
    assert_eq!(counted("tollgate_follow_reloads_total"), 0.0);
    assert_eq!(counted("tollgate_allowlist_entries"), 2.0);
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(
        metric(
            &text,
            "tollgate_allowlist_resyncs_total",
            &[("reason", "start")]
        ),
        1.0,
        "{text}"
    );
}

#[tokio::test]
async fn follow_needs_redis_and_never_empties_a_file_it_cannot_refresh() {
    let dir = temp_dir("norefresh");
    let file = dir.join("allow.txt");
    let o = tollgate(&["follow", "--export", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--redis"));

    // Redis is not there: the file from last time stays as it is.
    std::fs::write(&file, "203.0.113.7/32\n").unwrap();
    let dead = format!("redis://127.0.0.1:{}", free_port());
    let mut f = Follow::start(
        &dir,
        &dead,
        &unique_prefix("follow"),
        &["--export", file.to_str().unwrap()],
    );
    eventually(Duration::from_secs(5), || async {
        f.log().contains("Redis unreachable")
    })
    .await;
    assert_eq!(f.terminate().await, Some(0));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "203.0.113.7/32\n");
}

/// A real nginx from `deploy/nginx/allowlist-geo.conf`, reading the file `follow` keeps.
#[tokio::test]
async fn nginx_geo_from_the_shipped_snippet_lets_in_exactly_the_followed_list() {
    let (prefix, url, admin) = admin_server().await;
    let dir = temp_dir("nginx");
    let list = dir.join("tollgate-allowlist.conf");
    let port = free_port();
    let snippet = include_str!("../deploy/nginx/allowlist-geo.conf")
        .replace("/etc/nginx/tollgate-allowlist.conf", list.to_str().unwrap())
        .replace("listen 8000;", &format!("listen 127.0.0.1:{port};"))
        .replace(
            "proxy_pass http://127.0.0.1:3000;",
            "return 200 \"app\\n\";",
        );
    let mut nginx = nginx::command(
        &dir,
        &format!(
            "worker_processes 1;\nevents {{ worker_connections 64; }}\nhttp {{\n{snippet}\n}}\n"
        ),
    );
    let reload = format!(
        "nginx -p {0} -c {0}/nginx.conf -g '{1}' -s reload",
        dir.display(),
        nginx::globals(&dir)
    );
    let _f = Follow::start(
        &dir,
        &url,
        &prefix,
        &[
            "--export",
            list.to_str().unwrap(),
            "--format",
            "nginx-geo",
            "--reload-cmd",
            &reload,
        ],
    );
    eventually(Duration::from_secs(5), || async { list.exists() }).await;
    let _nginx = Nginx(
        nginx
            .spawn()
            .expect("nginx must be installed (scripts/test.sh installs it)"),
    );
    let status = || async {
        reqwest::get(format!("http://127.0.0.1:{port}/admin/"))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    eventually(Duration::from_secs(5), || async { status().await == 403 }).await;

    add_entry(&admin, "127.0.0.1", "1h").await;
    eventually(Duration::from_secs(5), || async { status().await == 200 }).await;
    remove_entry(&admin, "127.0.0.1").await;
    eventually(Duration::from_secs(5), || async { status().await == 403 }).await;
}

/// An nginx master; on drop, SIGQUIT (graceful: its workers exit with it).
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGQUIT) };
        let _ = self.0.wait();
    }
}
