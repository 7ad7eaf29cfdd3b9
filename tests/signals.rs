//! The real binary under signals: SIGHUP reloads (a broken file keeps the
//! running rules), SIGTERM drains and exits 0.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{eventually, free_port};

struct Binary {
    child: Child,
    port: u16,
    admin_port: u16,
    file: PathBuf,
    /// Its stderr: the log.
    log: PathBuf,
}

impl Binary {
    async fn start(name: &str, config: &str) -> Binary {
        let dir = std::env::temp_dir().join(format!("tollgate-signals-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{name}.toml"));
        std::fs::write(&file, config).unwrap();
        let log = dir.join(format!("{name}.log"));
        let (port, admin_port) = (free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["serve", "--config", file.to_str().unwrap()])
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--admin-listen",
                &format!("127.0.0.1:{admin_port}"),
            ])
            .env_remove("TOLLGATE_REDIS_URL")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let b = Binary {
            child,
            port,
            admin_port,
            file,
            log,
        };
        let ready = format!("http://127.0.0.1:{}/readyz", b.admin_port);
        eventually(Duration::from_secs(10), || {
            let url = ready.clone();
            async move { reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
        b
    }

    async fn status(&self, uri: &str) -> u16 {
        reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/check{uri}", self.port))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the log has a line containing `text`; that line.
    async fn log_line(&self, text: &str) -> String {
        eventually(Duration::from_secs(5), || async {
            self.log().contains(text)
        })
        .await;
        self.log()
            .lines()
            .find(|l| l.contains(text))
            .unwrap()
            .to_string()
    }

    fn signal(&self, sig: libc::c_int) {
        assert_eq!(
            unsafe { libc::kill(self.child.id() as libc::pid_t, sig) },
            0
        );
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const RULE_A: &str =
    "[[rule]]\nname = \"a\"\nmatch = { path_prefix = \"/a\" }\nlimits = [\"1/h\"]\n";
const RULE_B: &str =
    "[[rule]]\nname = \"b\"\nmatch = { path_prefix = \"/b\" }\nlimits = [\"1/h\"]\n";

#[tokio::test]
async fn sighup_applies_a_new_file_and_keeps_the_old_rules_when_the_file_is_broken() {
    let b = Binary::start("hup", RULE_A).await;
    assert_eq!(b.status("/a").await, 200);
    assert_eq!(b.status("/a").await, 429);

    std::fs::write(&b.file, "[[rule]]\nname = \"a\"\nlimits = [\"5/x\"]\n").unwrap();
    b.signal(libc::SIGHUP);
    b.log_line("reload rejected").await;
    assert!(b.log().contains("rule[0].limits[0]"), "{}", b.log());
    assert_eq!(
        b.status("/a").await,
        429,
        "a broken file replaced the running rules"
    );
    assert_eq!(b.status("/b").await, 200);
    assert_eq!(b.status("/b").await, 200, "no rule for /b yet");

    std::fs::write(&b.file, RULE_B).unwrap();
    b.signal(libc::SIGHUP);
    eventually(Duration::from_secs(5), || async {
        b.status("/a").await == 200
    })
    .await;
    assert_eq!(b.status("/b").await, 200);
    assert_eq!(b.status("/b").await, 429, "the new rule applies");
    let reloaded = b.log_line("config reloaded").await;
    assert!(
        reloaded.contains(r#"added=["b"]"#) && reloaded.contains(r#"removed=["a"]"#),
        "{reloaded}"
    );
}

#[tokio::test]
async fn a_reload_logs_each_changed_limit_and_its_counters_carry_over() {
    let b = Binary::start("hup-change", RULE_A).await;
    assert_eq!(b.status("/a").await, 200);
    assert_eq!(b.status("/a").await, 429);
    // Same algorithm and period, a higher count: the client's one use carries over.
    std::fs::write(&b.file, RULE_A.replace("1/h", "2/h")).unwrap();
    b.signal(libc::SIGHUP);
    let changed = b.log_line("rule changed").await;
    assert!(
        changed.contains("rule=a")
            && changed.contains("limits [1/h]")
            && changed.contains("limits [2/h]"),
        "{changed}"
    );
    assert!(b
        .log_line("config reloaded")
        .await
        .contains(r#"changed=["a"]"#));
    assert_eq!(b.status("/a").await, 200, "one more under 2/h");
    assert_eq!(b.status("/a").await, 429, "the first use still counts");
}

#[tokio::test]
async fn sigterm_stops_the_server_and_exits_0() {
    let mut b = Binary::start("term", RULE_A).await;
    assert_eq!(b.status("/a").await, 200);
    b.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(status) = b.child.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(code, Some(0));
}
