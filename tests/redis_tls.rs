//! Managed and hardened Redis: TLS with a private CA, mutual TLS, a wrong CA,
//! a unix socket for every component, an ACL user whose password comes from
//! a file (and a reload that rotates it), a TLS Cluster, exactness over TLS.

use std::path::Path;
use std::time::Duration;

use tollgate::config::{self, Overrides};
use tollgate::redis_conn::{read_password_file, Access, Endpoint, Tls, Topology};

use crate::support::allowlist::add_entry;
use crate::support::binary::{output_text, tollgate, tollgate_cmd, Serve};
use crate::support::server;
use crate::support::{eventually, metric, scrape, temp_dir, unique_prefix, TestServer};
use crate::support_tls::{Pki, Server, TlsCluster};

const RULES: &str = r#"
[client_ip]
trusted_proxies = ["127.0.0.1/32"]

[[rule]]
name = "api"
key = "ip"
limits = ["3/h"]
on_redis_error = "deny"
"#;

/// 3 of one client's requests pass, the 4th is limited: the limiter answers.
async fn limiter_is_exact(s: &TestServer, ip: &str) {
    for i in 0..3 {
        assert_eq!(
            s.check_with("x-forwarded-for", ip).await,
            200,
            "request {i}"
        );
    }
    assert_eq!(s.check_with("x-forwarded-for", ip).await, 429);
}

async fn readyz(s: &TestServer) -> String {
    server::readyz(s.admin_addr).await.1
}

/// An allowlist entry written through the admin API reaches this server's
/// table: the writer and the stream follower both work.
async fn allowlist_round_trip(s: &TestServer, cidr: &str, ip: &str) {
    add_entry(s, cidr, "1h").await;
    let ip: std::net::IpAddr = ip.parse().unwrap();
    eventually(Duration::from_secs(5), || async {
        s.app.allowlist.contains(ip)
    })
    .await;
}

async fn reset_channel_is_up(s: &TestServer) {
    eventually(Duration::from_secs(5), || async {
        metric(&scrape(s).await, "tollgate_reset_channel_up", &[]) == 1.0
    })
    .await;
}

/// Everything tollgate asks of Redis works: the limiter (`limiter_ip`), the
/// allowlist (`cidr` admitting `member`), the reset channel.
async fn carries_everything(s: &TestServer, limiter_ip: &str, cidr: &str, member: &str) {
    limiter_is_exact(s, limiter_ip).await;
    allowlist_round_trip(s, cidr, member).await;
    reset_channel_is_up(s).await;
}

fn tls_endpoint(url: &str, ca: &Path, client: Option<(&Path, &Path)>) -> Endpoint {
    let tls = Tls::load(Some(ca), client.map(|c| c.0), client.map(|c| c.1), false).unwrap();
    Endpoint::new(
        Topology::Single(url.into()),
        Access {
            tls: Some(tls),
            ..Default::default()
        },
    )
}

async fn ping(endpoint: &Endpoint) -> Result<String, String> {
    let mut conn = tokio::time::timeout(
        Duration::from_secs(5),
        endpoint.connect(Duration::from_secs(2)),
    )
    .await
    .map_err(|_| "no answer within 5s (a hang)".to_string())?
    .map_err(|e| e.to_string())?;
    redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn tls_with_a_private_ca_carries_the_limiter_the_allowlist_and_the_reset_channel() {
    let pki = Pki::make("private-ca");
    let redis = Server::tls(&pki, false);
    let config = format!(
        "[redis]\nurl = \"{}\"\ntimeout = \"2s\"\n{}{RULES}",
        redis.tls_url(),
        pki.tls_section(false)
    );
    let s = TestServer::start(&config, None, &unique_prefix("tls")).await;
    let ready = readyz(&s).await;
    assert!(
        ready.contains(&format!("Redis over TLS (CA: {})", pki.ca.display())),
        "{ready}"
    );
    carries_everything(&s, "198.51.100.1", "203.0.113.0/24", "203.0.113.9").await;
    s.stop().await;
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_a_certificate_and_accepts_one_with_it() {
    let pki = Pki::make("mtls");
    let redis = Server::tls(&pki, true);
    let without = tls_endpoint(&redis.tls_url(), &pki.ca, None);
    let refused = ping(&without).await;
    assert!(
        refused.is_err(),
        "a client without a certificate got {refused:?}"
    );

    let with = tls_endpoint(
        &redis.tls_url(),
        &pki.ca,
        Some((&pki.client_cert, &pki.client_key)),
    );
    assert_eq!(ping(&with).await.unwrap(), "PONG");

    let config = format!(
        "[redis]\nurl = \"{}\"\ntimeout = \"2s\"\n{}{RULES}",
        redis.tls_url(),
        pki.tls_section(true)
    );
    let s = TestServer::start(&config, None, &unique_prefix("mtls")).await;
    let ready = readyz(&s).await;
    assert!(ready.contains("client certificate"), "{ready}");
    limiter_is_exact(&s, "198.51.100.2").await;
    s.stop().await;
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused_with_a_clear_error() {
    let pki = Pki::make("wrong-ca");
    let redis = Server::tls(&pki, false);
    let wrong = tls_endpoint(&redis.tls_url(), &pki.other_ca, None);
    let err = ping(&wrong).await.unwrap_err();
    assert!(
        err.contains("certificate") && err.contains("UnknownIssuer"),
        "unclear error: {err}"
    );
}

#[tokio::test]
async fn a_unix_socket_serves_the_limiter_the_allowlist_follower_allow_and_follow() {
    let redis = Server::unix();
    let url = format!("redis+unix://{}", redis.socket().display());
    let prefix = unique_prefix("unix");
    let s = TestServer::start(RULES, Some(&url), &prefix).await;
    let ready = readyz(&s).await;
    assert!(
        ready.contains(&format!("unix socket {}", redis.socket().display())),
        "{ready}"
    );
    carries_everything(&s, "198.51.100.3", "203.0.113.0/24", "203.0.113.3").await;

    // `tollgate allow add` over the socket; the server's follower sees it.
    let out = tollgate(&[
        "allow",
        "add",
        "192.0.2.0/24",
        "--ttl",
        "1h",
        "--redis",
        &url,
        "--prefix",
        &prefix,
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let ip: std::net::IpAddr = "192.0.2.7".parse().unwrap();
    eventually(Duration::from_secs(5), || async {
        s.app.allowlist.contains(ip)
    })
    .await;

    // `tollgate follow --export` over the socket writes both entries.
    let dir = temp_dir("unix-follow");
    let file = dir.join("allow.txt");
    let mut follow = tollgate_cmd(&["follow", "--redis", &url, "--prefix", &prefix, "--export"])
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(10), || async {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        text.contains("192.0.2.0/24") && text.contains("203.0.113.0/24")
    })
    .await;
    let _ = follow.kill();
    let _ = follow.wait();
    s.stop().await;
}

#[tokio::test]
async fn an_acl_user_with_a_password_file_connects_and_a_wrong_password_is_a_clear_error() {
    let redis = Server::acl("app", "first-pw");
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let dir = temp_dir("acl");
    let pw = dir.join("redis.pw");
    std::fs::write(&pw, "wrong\n").unwrap();
    let wrong = Endpoint::new(
        Topology::Single(url.clone()),
        Access {
            username: Some("app".into()),
            password: Some(read_password_file(&pw).unwrap()),
            tls: None,
        },
    );
    let err = ping(&wrong).await.unwrap_err();
    assert!(
        err.contains("authentication failed"),
        "unclear error: {err}"
    );

    std::fs::write(&pw, "first-pw\n").unwrap();
    let config = format!(
        "[redis]\nurl = \"{url}\"\ntimeout = \"2s\"\nusername = \"app\"\npassword_file = \"{}\"\n{RULES}",
        pw.display()
    );
    let prefix = unique_prefix("acl");
    let s = TestServer::start(&config, None, &prefix).await;
    limiter_is_exact(&s, "198.51.100.4").await;
    reset_channel_is_up(&s).await;

    // Rotate: a second password, the file names it, the first is removed; a
    // reload reconnects, so a dropped connection comes back with the new one.
    let as_app = |password: &str, args: &[&str]| {
        let login = ["--user", "app", "--pass", password, "--no-auth-warning"];
        redis.cli(&[&login[..], args].concat()).output().unwrap()
    };
    let set = as_app(
        "first-pw",
        &["ACL", "SETUSER", "app", ">second-pw", "<first-pw"],
    );
    assert!(String::from_utf8_lossy(&set.stdout).contains("OK"));
    std::fs::write(&pw, "second-pw\n").unwrap();
    let ov = Overrides {
        redis_prefix: Some(prefix.clone()),
        ..Default::default()
    };
    s.app
        .reload(config::parse("test.toml", &config, &ov).unwrap());
    // Every connection of the user is dropped once: only connections made
    // with the new password come back (before the fix, the limiter's
    // reconnect used the old one forever and every check was denied).
    let killed = as_app("second-pw", &["CLIENT", "KILL", "USER", "app"]);
    assert!(killed.status.success(), "{killed:?}");
    eventually(Duration::from_secs(5), || async {
        let ip = format!("198.51.100.{}", 10 + next_octet());
        s.check_with("x-forwarded-for", &ip).await == 200
    })
    .await;
    allowlist_round_trip(&s, "203.0.113.0/24", "203.0.113.4").await;
    s.stop().await;
}

/// A different client each call, so the 3/h limit never answers for Redis.
fn next_octet() -> u8 {
    use std::sync::atomic::{AtomicU8, Ordering};
    static N: AtomicU8 = AtomicU8::new(0);
    N.fetch_add(1, Ordering::Relaxed) % 200
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_three_node_tls_cluster_is_exact_per_key() {
    let pki = Pki::make("tls-cluster");
    let cluster = TlsCluster::start(&pki);
    let config = format!("{}{RULES}", cluster.config_section(&pki, "2s"));
    let s = TestServer::start(&config, None, &unique_prefix("tlscluster")).await;
    // Keys spread over the slots, so every node (reached by MOVED and the slot map) answers.
    for i in 0..6 {
        limiter_is_exact(&s, &format!("198.51.100.{}", 100 + i)).await;
    }
    reset_channel_is_up(&s).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_over_tls_admit_exactly_the_limit() {
    let pki = Pki::make("tls-exact");
    let redis = Server::tls(&pki, false);
    let prefix = unique_prefix("tlsexact");
    let config = format!(
        "[redis]\nurl = \"{}\"\ntimeout = \"5s\"\n{}{}",
        redis.tls_url(),
        pki.tls_section(false),
        crate::exactness::config("gcra", false)
    );
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(TestServer::start(&config, None, &prefix).await);
    }
    let admitted = crate::exactness::hammer(&servers).await;
    assert_eq!(admitted, 100);
    for s in servers {
        s.stop().await;
    }
}

/// `tollgate config check FILE` with `env`: (exit code, stdout + stderr).
fn config_check(text: &str, env: &[(&str, &str)]) -> (i32, String) {
    let dir = temp_dir("tls-check");
    let path = dir.join("tollgate.toml");
    std::fs::write(&path, text).unwrap();
    let out = tollgate_cmd(&["config", "check", path.to_str().unwrap()])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (out.status.code().unwrap(), output_text(&out))
}

#[test]
fn config_check_accepts_tls_and_shows_the_ca_and_never_a_password() {
    let pki = Pki::make("check-ok");
    let (code, out) = config_check(
        &format!(
            "[redis]\nurl = \"rediss://:url-secret@db.example:6380\"\nusername = \"app\"\npassword_env = \"TG_TEST_REDIS_PW\"\n{}",
            pki.tls_section(true)
        ),
        &[("TG_TEST_REDIS_PW", "env-secret")],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("Redis over TLS (CA: {}", pki.ca.display())),
        "{out}"
    );
    assert!(out.contains("client certificate"), "{out}");
    assert!(
        !out.contains("url-secret") && !out.contains("env-secret"),
        "{out}"
    );

    let (code, out) = config_check(
        "[redis]\nurl = \"redis+unix:///run/redis.sock?db=1&user=app&pass=unix-secret\"\n",
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("unix socket /run/redis.sock"), "{out}");
    assert!(!out.contains("unix-secret"), "{out}");
}

#[test]
fn config_check_names_the_key_of_each_bad_tls_or_credential_setting() {
    let pki = Pki::make("check-bad");
    let dir = temp_dir("tls-bad");
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let text = format!(
        "[redis]\nurl = \"rediss://127.0.0.1:6380\"\npassword_env = \"TG_TEST_UNSET_PW\"\n\
         [redis.tls]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        dir.join("missing.crt").display(),
        not_pem.display(),
        pki.client_cert.display(),
    );
    let (code, out) = config_check(&text, &[]);
    assert_eq!(code, 2, "{out}");
    for key in [
        "redis.password_env",
        "redis.tls.ca_file",
        "redis.tls.cert_file",
        "redis.tls.key_file",
    ] {
        assert!(out.contains(&format!(": {key}:")), "{key} not named: {out}");
    }
    assert!(out.contains("not PEM"), "{out}");

    // TLS files for a plain URL: named, not silently ignored.
    let (code, out) = config_check(
        &format!(
            "[redis]\nurl = \"redis://127.0.0.1:6379\"\n{}",
            pki.tls_section(false)
        ),
        &[],
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("redis.tls") && out.contains("rediss://"),
        "{out}"
    );

    let (code, out) = config_check(
        &format!(
            "[redis]\nurl = \"redis://127.0.0.1:6379\"\npassword_file = \"{}\"\n",
            dir.join("nope.pw").display()
        ),
        &[],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("redis.password_file"), "{out}");
}

#[tokio::test]
async fn a_sentinel_over_tls_names_a_master_reached_over_tls_with_the_configured_password() {
    let pki = Pki::make("tls-sentinel");
    let set = crate::support_tls::TlsSentinel::start(&pki, "master-pw");
    let dir = temp_dir("sentinel-pw");
    let pw = dir.join("redis.pw");
    std::fs::write(&pw, "master-pw\n").unwrap();
    let config = format!(
        "[redis]\nsentinel = {{ master = \"mymaster\", nodes = [\"{}\"] }}\ntimeout = \"2s\"\npassword_file = \"{}\"\n{}{RULES}",
        set.sentinel.tls_url(),
        pw.display(),
        pki.tls_section(false)
    );
    let s = TestServer::start(&config, None, &unique_prefix("tlssentinel")).await;
    let ready = readyz(&s).await;
    assert!(ready.contains("Redis over TLS"), "{ready}");
    carries_everything(&s, "198.51.100.5", "203.0.113.0/24", "203.0.113.5").await;
    s.stop().await;
}

#[tokio::test]
async fn insecure_skip_verify_accepts_an_unknown_ca_and_is_logged_loudly_at_start() {
    let pki = Pki::make("insecure");
    let redis = Server::tls(&pki, false);
    let dir = temp_dir("insecure");
    let config = format!(
        "[redis]\nurl = \"{}\"\ntimeout = \"2s\"\n[redis.tls]\nca_file = \"{}\"\ninsecure_skip_verify = true\n{RULES}",
        redis.tls_url(),
        pki.other_ca.display()
    );
    // Ready means it connected: the unknown CA was accepted.
    let serve = Serve::start(&dir, &config, &[]).await;
    let text = serve.log();
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.contains("Redis over TLS") && first.contains("NOT VERIFIED"),
        "{text}"
    );
    assert!(text.contains("INSECURE") && text.contains("WARN"), "{text}");
}
