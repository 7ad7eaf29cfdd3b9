//! The `tollgate` binary: config errors name file, line and key; exit code 2.

use std::path::PathBuf;
use std::process::Output;

use crate::support::binary::tollgate_cmd;
use crate::support::temp_dir;

/// `text` in a file `name` of a fresh dir (tests run in parallel).
fn write_config(name: &str, text: &str) -> PathBuf {
    let path = temp_dir("cli").join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn tollgate(args: &[&str], env: &[(&str, &str)]) -> Output {
    tollgate_cmd(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn check(text: &str) -> (i32, String, String) {
    let path = write_config("c.toml", text);
    let out = tollgate(&["config", "check", path.to_str().unwrap()], &[]);
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Run `tollgate args...`, expecting exit 2 (bad usage or config); its stderr.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = tollgate(args, env);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    err
}

#[test]
fn config_check_prints_the_effective_rules() {
    let (code, out, _) = check(include_str!("../examples/tollgate.toml"));
    assert_eq!(code, 0);
    assert!(
        out.contains("store: in-process (one replica only)"),
        "{out}"
    );
    assert!(out.contains("login: match path_prefix=/login methods=POST; key ip; limits [5/m, 20/h]; algorithm sliding_window"), "{out}");
}

#[test]
fn each_bad_config_names_its_key_and_line_and_exits_2() {
    let rule = |body: &str| format!("[[rule]]\nname = \"r\"\n{body}\n");
    let cases: Vec<(String, &str, &str)> = vec![
        (
            rule("limits = [\"5/x\"]"),
            "c.toml:3: rule[0].limits[0]",
            "bad rate \"5/x\"",
        ),
        (
            rule("limits = [\"0/m\"]"),
            "c.toml:3: rule[0].limits[0]",
            "at least 1",
        ),
        (
            rule("limits = [\"-2/m\"]"),
            "c.toml:3: rule[0].limits[0]",
            "at least 1",
        ),
        (
            rule("limits = [\"1/m\"]\nalgorithm = \"leaky\""),
            "c.toml:4: rule[0].algorithm",
            "unknown algorithm \"leaky\"",
        ),
        (
            rule("limits = [\"1/m\"]\nkey = \"ip+cookie:sid\""),
            "c.toml:4: rule[0].key",
            "cookie:sid",
        ),
        (rule("limits = [\"1/m\"]\nlimitz = 3"), "c.toml:4", "limitz"),
        (
            format!(
                "{}{}",
                rule("limits = [\"1/m\"]"),
                rule("limits = [\"2/m\"]")
            ),
            "c.toml:5: rule[1].name",
            "duplicate rule name \"r\"",
        ),
        (rule("limits = []"), "rule[0].limits", "at least one rate"),
        (
            rule("limits = [\"1/m\"]\non_redis_error = \"panic\""),
            "c.toml:4: rule[0].on_redis_error",
            "unknown on_redis_error",
        ),
        (
            "[redis]\ntimeout = \"fast\"\nurl = \"redis://127.0.0.1:1\"\n".into(),
            "c.toml:2: redis.timeout",
            "bad duration",
        ),
        (
            "[server]\nlisten = \"nowhere\"\n".into(),
            "c.toml:2: server.listen",
            "bad address",
        ),
    ];
    for (text, key, message) in cases {
        let (code, _, err) = check(&text);
        assert_eq!(code, 2, "{text}\n{err}");
        assert!(err.contains(key), "expected {key:?} in:\n{err}");
        assert!(err.contains(message), "expected {message:?} in:\n{err}");
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    let (code, _, err) =
        check("[[rule]]\nname = \"r\"\nlimits = [\"5/x\"]\nalgorithm = \"leaky\"\n");
    assert_eq!(code, 2);
    assert!(
        err.contains("2 problems") && err.contains("limits[0]") && err.contains("algorithm"),
        "{err}"
    );
}

#[test]
fn serve_refuses_a_bad_config_with_exit_2_and_a_missing_file_too() {
    let path = write_config(
        "bad-serve.toml",
        "[[rule]]\nname = \"r\"\nlimits = [\"5/x\"]\n",
    );
    let out = tollgate(&["serve", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rule[0].limits[0]"));
    let out = tollgate(&["config", "check", "/nonexistent/tollgate.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn cli_flags_beat_env_which_beats_the_file() {
    let path = write_config("env.toml", "[redis]\nurl = \"redis://file:1\"\n");
    let p = path.to_str().unwrap();
    let out = tollgate(&["config", "check", p], &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("redis://file:1"));
    let out = tollgate(
        &["config", "check", p],
        &[("TOLLGATE_REDIS_URL", "redis://env:2")],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("redis://env:2"));
    let out = tollgate(
        &["config", "check", p, "--redis", "redis://:pw@cli:3"],
        &[("TOLLGATE_REDIS_URL", "redis://env:2")],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("redis://***@cli:3"), "{text}");
    assert!(
        !text.contains("pw"),
        "a password reached the output: {text}"
    );
}

#[test]
fn bad_usage_exits_2() {
    assert_eq!(
        tollgate(&["serve", "--no-such-flag"], &[]).status.code(),
        Some(2)
    );
}

#[test]
fn a_newcomers_config_reports_every_mistake_at_once_with_lines_and_no_knock_ons() {
    let text = r#"[[rule]]
name = "login"
limit = ["5/m"]
algorithm = "sliding-window"

[rule.match]
path_prefix = "login"
methods = "POST"

[[rule]]
name = "admin"
allowlist = "required"
"#;
    let (code, _, err) = check(text);
    assert_eq!(code, 2, "{err}");
    for expected in [
        "c.toml:3: rule[0].limit: unknown key \"limit\"; did you mean \"limits\"?",
        "c.toml:4: rule[0].algorithm",
        "c.toml:7: rule[0].match.path_prefix: \"login\" must start with '/'",
        "c.toml:8: rule[0].match.methods: invalid type: string \"POST\", expected a list",
        "c.toml:12: rule[1].allowlist",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    // The typo'd `limit` is reported, not a knock-on "at least one rate" for
    // rule[0]; the typo'd allowlist mode is the root cause for rule[1].
    assert!(!err.contains("at least one rate"), "{err}");
    assert!(err.contains("5 problems"), "{err}");
}

#[test]
fn a_bad_rate_is_reported_once_and_a_shared_period_names_both_limits() {
    let (code, _, err) =
        check("[[rule]]\nname = \"r\"\nlimits = [\"10/minute\", \"5/M\", \"7/ 1m\"]\n");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("2 problems"), "{err}");
    assert_eq!(err.matches("rule[0].limits[1]").count(), 1, "{err}");
    assert!(
        err.contains("c.toml:3: rule[0].limits[1]: bad rate \"5/M\""),
        "{err}"
    );
    assert!(
        err.contains(
            "c.toml:3: rule[0].limits[2]: limits[0] and limits[2] have the same period (1m)"
        ),
        "{err}"
    );
}

#[test]
fn a_bad_flag_or_variable_is_blamed_on_it_not_on_the_file() {
    let path = write_config("flags.toml", "[[rule]]\nname = \"r\"\nlimits = [\"1/m\"]\n");
    let p = path.to_str().unwrap();
    let err = refused(&["config", "check", p, "--redis", "nope://x"], &[]);
    assert!(
        err.contains("\n  --redis: nope://x is not a Redis URL"),
        "{err}"
    );
    assert!(!err.contains("redis.url"), "{err}");
    let err = refused(
        &["config", "check", p],
        &[("TOLLGATE_REDIS_URL", "nope://x")],
    );
    assert!(
        err.contains("\n  TOLLGATE_REDIS_URL: nope://x is not a Redis URL"),
        "{err}"
    );
    for (args, named) in [
        (["--listen", "nowhere"], "--listen: bad address \"nowhere\""),
        (["--admin-listen", "nowhere"], "--admin-listen: bad address"),
        (["--prefix", "{x}"], "--prefix: must be non-empty"),
    ] {
        let mut all = vec!["config", "check", p];
        all.extend(args);
        let err = refused(&all, &[]);
        assert!(err.contains(named), "expected {named:?} in:\n{err}");
        assert!(
            !err.contains("flags.toml"),
            "the file is not to blame:\n{err}"
        );
    }
}

#[test]
fn a_wide_network_with_host_bits_is_not_offered_a_network_that_is_refused_next() {
    let err = refused(
        &[
            "allow",
            "add",
            "10.0.0.0/4",
            "--redis",
            "redis://127.0.0.1:1",
        ],
        &[],
    );
    assert!(
        err.contains("host bits") && err.contains("allowlist.min_prefix_v4"),
        "both problems at once: {err}"
    );
    assert!(err.contains("10.0.0.0/8 would be accepted"), "{err}");
    assert!(
        !err.contains(" 0.0.0.0/4") && !err.contains("canonical form"),
        "a refused suggestion: {err}"
    );
}

#[test]
fn limits_show_without_a_config_says_rules_come_from_it_and_reads_tollgate_config() {
    let err = refused(
        &[
            "limits",
            "show",
            "login",
            "127.0.0.1",
            "--redis",
            "redis://127.0.0.1:1",
        ],
        &[],
    );
    assert!(
        err.contains("unknown rule \"login\"")
            && err.contains("--config")
            && err.contains("TOLLGATE_CONFIG"),
        "{err}"
    );
    // TOLLGATE_CONFIG names the file: the rule is found and Redis is asked.
    let redis = crate::support::shared_redis();
    let path = write_config(
        "limits.toml",
        "[[rule]]\nname = \"login\"\nlimits = [\"5/m\"]\n",
    );
    let prefix = crate::support::unique_prefix("cli-limits");
    let out = tollgate(
        &[
            "limits",
            "show",
            "login",
            "127.0.0.1",
            "--redis",
            &redis.url(),
            "--prefix",
            &prefix,
        ],
        &[("TOLLGATE_CONFIG", path.to_str().unwrap())],
    );
    let text = crate::support::binary::output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("rule login key 127.0.0.1"), "{text}");
    let err = refused(
        &[
            "limits",
            "show",
            "signup",
            "127.0.0.1",
            "--redis",
            &redis.url(),
        ],
        &[("TOLLGATE_CONFIG", path.to_str().unwrap())],
    );
    assert!(err.contains("limits.toml has login"), "{err}");
}
