//! nginx started by tests, with every file it writes inside the test's dir.
//! Debian's build compiles in absolute temp paths and an access log under
//! /var (`nginx -V`), which `-p` does not move: they are set here instead.

use std::path::Path;
use std::process::{Command, Stdio};

/// Directives for the `http { }` block: request-body and proxy temp files
/// and the access log under `dir`.
pub fn http_scratch(dir: &Path) -> String {
    let d = dir.display();
    ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .iter()
        .map(|t| format!("{t}_temp_path {d}/tmp/{t};\n"))
        .chain([format!("access_log {d}/logs/access.log;\n")])
        .collect()
}

/// Main-context directives for `-g`: in the foreground, pid and error log under `dir`.
pub fn globals(dir: &Path) -> String {
    format!(
        "daemon off; pid {0}/nginx.pid; error_log {0}/logs/error.log;",
        dir.display()
    )
}

/// `conf_text` written to `dir/nginx.conf` with `http_scratch` at the top of
/// its `http {` block (creating `logs/` and `tmp/`), and the command that runs
/// it (output discarded).
pub fn command(dir: &Path, conf_text: &str) -> Command {
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    assert!(
        conf_text.contains("http {"),
        "an nginx.conf with an http block"
    );
    let conf = dir.join("nginx.conf");
    let text = conf_text.replacen("http {", &format!("http {{\n{}", http_scratch(dir)), 1);
    std::fs::write(&conf, text).unwrap();
    let mut cmd = Command::new("nginx");
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .arg("-g")
        .arg(globals(dir))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}
