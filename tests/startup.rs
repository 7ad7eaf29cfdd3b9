//! `tollgate serve` starting, or refusing to: the admin token as the
//! environment holds it, an open admin API off loopback, a port already
//! taken, and what the first log lines say.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::binary::{output_text, tollgate_cmd, Serve};
use crate::support::process::exited_within;
use crate::support::{eventually, free_port, shared_redis, temp_dir, unique_prefix, ADMIN_TOKEN};

/// Run `cmd` to its end (a serve that should refuse to start); its exit code
/// and stderr. A serve that started anyway is killed and fails the test.
async fn refused(mut cmd: Command) -> (i32, String) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = exited_within(&mut child, Duration::from_secs(20)).await;
    if status.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = output_text(&out);
    let status = status.unwrap_or_else(|| panic!("still serving 20 s later:\n{stderr}"));
    (status.code().unwrap(), stderr)
}

/// `tollgate serve` on free loopback ports with `args` and `env` added.
fn serve(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = tollgate_cmd(&["serve"]);
    // As variables, so a test's own --listen or --admin-listen beats them.
    cmd.env("TOLLGATE_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env(
            "TOLLGATE_ADMIN_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .args(args)
        .env_remove("TOLLGATE_ADMIN_TOKEN")
        .envs(env.iter().copied());
    cmd
}

#[tokio::test]
async fn an_admin_token_with_a_trailing_newline_is_the_token_like_a_password_file() {
    let dir = temp_dir("startup-token");
    let with_newline = format!("{ADMIN_TOKEN}\n");
    let s = Serve::start_env(&dir, "", &[], &[("TOLLGATE_ADMIN_TOKEN", &with_newline)]).await;
    let status = |token: &'static str| {
        let url = format!("http://{}/v1/status", s.admin_addr);
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status(ADMIN_TOKEN).await, 200, "{}", s.log());
    assert_eq!(status("wrong-token-wrong-token").await, 401);
}

#[tokio::test]
async fn a_short_or_padded_admin_token_is_refused_naming_its_variable_with_exit_2() {
    let padded = format!(" {ADMIN_TOKEN}");
    let two_newlines = format!("{ADMIN_TOKEN}\n\n");
    for (value, says) in [
        ("abc123\n", "is 6 bytes; at least 16"),
        (padded.as_str(), "starts or ends with white space"),
        (two_newlines.as_str(), "starts or ends with white space"),
    ] {
        let (code, err) = refused(serve(&[], &[("TOLLGATE_ADMIN_TOKEN", value)])).await;
        assert_eq!(code, 2, "{value:?}: {err}");
        assert!(
            err.contains(&format!("TOLLGATE_ADMIN_TOKEN: the admin token {says}")),
            "{value:?}: {err}"
        );
        assert!(
            !err.contains(ADMIN_TOKEN),
            "the token reached the output: {err}"
        );
        assert!(!err.contains("listening"), "{err}");
    }
    // The variable the config names is the one named.
    let config = temp_dir("startup-token-env").join("t.toml");
    std::fs::write(&config, "[server]\nadmin_token_env = \"MY_TOKEN\"\n").unwrap();
    let (code, err) = refused(serve(
        &["--config", config.to_str().unwrap()],
        &[("MY_TOKEN", "short")],
    ))
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("MY_TOKEN: the admin token is 5 bytes"),
        "{err}"
    );
}

#[tokio::test]
async fn an_open_admin_api_off_loopback_is_refused_with_exit_2_before_anything_says_listening() {
    // Checked on the configured address: nothing is bound, so no non-loopback
    // socket is ever opened by this test.
    let admin = format!("0.0.0.0:{}", free_port());
    let (code, err) = refused(serve(&["--admin-listen", &admin], &[])).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("refusing to serve the admin API") && err.contains("TOLLGATE_ADMIN_TOKEN"),
        "{err}"
    );
    assert!(!err.contains("listening"), "{err}");
}

#[tokio::test]
async fn a_port_already_taken_names_its_listener_and_exits_1() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for (flag, key) in [
        ("--listen", "server.listen"),
        ("--admin-listen", "server.admin_listen"),
    ] {
        let (code, err) = refused(serve(&[flag, &addr], &[])).await;
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains(&format!("error: {key} {addr}: address already in use")),
            "{err}"
        );
        assert!(!err.contains("os error"), "{err}");
        assert!(!err.contains("listening"), "{err}");
    }
    let config = temp_dir("startup-grpc").join("t.toml");
    std::fs::write(&config, format!("[server]\ngrpc_listen = \"{addr}\"\n")).unwrap();
    let (code, err) = refused(serve(&["--config", config.to_str().unwrap()], &[])).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "error: server.grpc_listen {addr}: address already in use"
        )),
        "{err}"
    );
}

#[tokio::test]
async fn the_first_log_line_names_the_transport_once_and_listening_comes_when_serving() {
    let redis = shared_redis();
    let prefix = unique_prefix("startup-log");
    let dir = temp_dir("startup-log");
    let s = Serve::start(&dir, "", &["--redis", &redis.url(), "--prefix", &prefix]).await;
    let first = s.log().lines().next().unwrap_or_default().to_string();
    assert!(first.contains("Redis store"), "{}", s.log());
    assert_eq!(first.matches("Redis over plain TCP").count(), 1, "{first}");
    // The bound addresses, as a client reaches them.
    let listening = s.log_line("listening").await;
    assert!(
        listening.contains(&s.addr.to_string()) && listening.contains(&s.admin_addr.to_string()),
        "{listening}"
    );
}

#[tokio::test]
async fn readyz_counts_one_allowlist_entry_as_one_entry() {
    let redis = shared_redis();
    let prefix = unique_prefix("startup-entry");
    let dir = temp_dir("startup-entry");
    let s = Serve::start(&dir, "", &["--redis", &redis.url(), "--prefix", &prefix]).await;
    let added = tollgate_cmd(&[
        "allow",
        "add",
        "203.0.113.7",
        "--redis",
        &redis.url(),
        "--prefix",
        &prefix,
    ])
    .output()
    .unwrap();
    assert!(added.status.success(), "{}", output_text(&added));
    let admin = s.admin_addr;
    eventually(Duration::from_secs(10), || async move {
        crate::support::server::readyz(admin)
            .await
            .1
            .contains("1 entry,")
    })
    .await;
    // The allowlist's words (the denylist's follow, with its own count).
    let body = crate::support::server::readyz(admin).await.1;
    let allowlist = body.split("; denylist").next().unwrap();
    assert!(!allowlist.contains("entries"), "{body}");
}
