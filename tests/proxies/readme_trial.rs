//! The README's quick start, as a newcomer runs it: tollgate with the example
//! config, `examples/try.sh PROXY` (the shipped config from a scratch
//! directory, with a stand-in app served by the proxy itself), then the three
//! requests the README shows. The script's variables move every port.

use std::process::{Command, Stdio};

use super::stack::{assert_answer, Proxy};
use crate::support::{free_port, temp_dir, unique_prefix, TestServer};

/// What the README's stand-in app answers.
const STAND_IN_BODY: &str = "app ok\n";

/// `script args` with the README's variables on free ports, then the
/// README's requests through it.
async fn trial(script: &str, args: &[&str]) {
    let config = std::fs::read_to_string("examples/tollgate.toml").unwrap();
    let tollgate = TestServer::start(&config, None, &unique_prefix("trial")).await;
    let (listen, app, check) = (free_port(), free_port(), free_port());
    let dir = temp_dir("trial");
    let child = Command::new(script)
        .args(args)
        .env("LISTEN", format!("127.0.0.1:{listen}"))
        .env("TOLLGATE", tollgate.addr.to_string())
        .env("APP", format!("127.0.0.1:{app}"))
        .env("CHECK", format!("127.0.0.1:{check}"))
        .env("DIR", &dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("script.log")).unwrap())
        .spawn()
        .unwrap();
    // The script execs the proxy: the child is the proxy, stopped on drop.
    let _proxy = Proxy::adopt(child, listen).await;
    let url = |path: &str| format!("http://127.0.0.1:{listen}{path}");
    let c = reqwest::Client::new();
    let what = |req: &str| format!("{script} {args:?}: {req}");
    // curl -i http://127.0.0.1:8000/   (no rule applies)
    let r = c.get(url("/")).send().await.unwrap();
    assert_answer(r, 200, STAND_IN_BODY, &what("GET /")).await;
    // for i in 1 2 3 4 5 6; do curl … -X POST http://127.0.0.1:8000/login; done
    for n in 0..6 {
        let r = c.post(url("/login")).send().await.unwrap();
        let status = if n < 5 { 200 } else { 429 };
        let h = assert_answer(r, status, STAND_IN_BODY, &what(&format!("login {n}"))).await;
        assert!(h.contains_key("ratelimit"), "{}: {h:?}", what("login"));
        if status == 429 {
            assert!(h.contains_key("retry-after"), "{}", what("login 5"));
        }
    }
    // curl -i http://127.0.0.1:8000/admin/
    let r = c.get(url("/admin/")).send().await.unwrap();
    assert_answer(r, 403, STAND_IN_BODY, &what("GET /admin/")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_trial_allows_limits_and_refuses_through_nginx() {
    trial("examples/try.sh", &["nginx"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_trial_allows_limits_and_refuses_through_caddy() {
    trial("examples/try.sh", &["caddy"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_trial_allows_limits_and_refuses_through_haproxy() {
    trial("examples/try.sh", &["haproxy"]).await;
}

/// The script's old name still runs the nginx trial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_nginx_sh_still_runs_the_nginx_trial() {
    trial("examples/try-nginx.sh", &[]).await;
}

/// Every variable `examples/try.sh` reads (`${NAME:-default}`) is in the
/// README's quick start with its default, not only in the script's header.
#[test]
fn the_readme_quick_start_lists_every_variable_of_try_sh() {
    let script = include_str!("../../examples/try.sh");
    let readme = include_str!("../../README.md");
    let start = readme
        .find("## Quick start")
        .expect("a Quick start section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let vars: Vec<(&str, &str)> = script
        .split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}')?.0.split_once(":-"))
        // `${1:-}` is the proxy argument, not a variable.
        .filter(|(name, _)| name.chars().all(|c| c.is_ascii_uppercase()))
        .collect();
    assert!(vars.len() >= 5, "try.sh's variables: {vars:?}");
    for (name, default) in vars {
        let default = default.split('$').next().unwrap();
        assert!(
            section.contains(&format!("| `{name}` |")),
            "the README's quick start does not list {name}"
        );
        if !default.is_empty() {
            assert!(
                section.contains(&format!("`{default}`")),
                "the README's quick start does not give {name}'s default {default}"
            );
        }
    }
}
