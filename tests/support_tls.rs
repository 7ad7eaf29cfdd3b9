//! Hardened Redis for tests: a private CA and certificates made at test time
//! (the `openssl` CLI), redis-servers that speak only TLS, only a unix
//! socket, or only to an ACL user, and a 3-node TLS Cluster. Every server
//! writes only under its own temp dir (`--dir`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{die_with_parent, free_port, temp_dir};

/// A CA, a server certificate for 127.0.0.1 signed by it, a client
/// certificate signed by it, and a second CA that signed nothing here.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub other_ca: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI must be installed (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA named `name` (P-256 keys: quick to make).
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

/// A leaf certificate `name` signed by `ca`, with extensions `ext`.
fn make_leaf(dir: &Path, ca: &str, name: &str, ext: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.crt"),
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

impl Pki {
    pub fn make(name: &str) -> Pki {
        let dir = temp_dir(&format!("pki-{name}"));
        make_ca(&dir, "ca");
        make_ca(&dir, "other-ca");
        make_leaf(
            &dir,
            "ca",
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        );
        make_leaf(&dir, "ca", "client", "extendedKeyUsage=clientAuth\n");
        Pki {
            ca: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
            other_ca: dir.join("other-ca.crt"),
            dir,
        }
    }

    /// `[redis.tls]` trusting this CA, with the client certificate if `mutual`.
    pub fn tls_section(&self, mutual: bool) -> String {
        let mut s = format!("[redis.tls]\nca_file = \"{}\"\n", self.ca.display());
        if mutual {
            s += &format!(
                "cert_file = \"{}\"\nkey_file = \"{}\"\n",
                self.client_cert.display(),
                self.client_key.display()
            );
        }
        s
    }

    /// redis-server arguments for TLS only on `port`; `mutual`: clients
    /// must present a certificate signed by the CA.
    fn server_args(&self, port: u16, mutual: bool) -> Vec<String> {
        let s = |p: &Path| p.display().to_string();
        vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            s(&self.server_cert),
            "--tls-key-file".into(),
            s(&self.server_key),
            "--tls-ca-cert-file".into(),
            s(&self.ca),
            "--tls-auth-clients".into(),
            if mutual { "yes" } else { "no" }.into(),
        ]
    }
}

/// A redis-server child with its own dir, killed on drop.
pub struct Server {
    pub port: u16,
    pub dir: PathBuf,
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(dir: &Path, args: &[String]) -> Child {
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
    ])
    .arg(dir)
    .args(args)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    die_with_parent(&mut cmd);
    cmd.spawn().expect("redis-server must be installed")
}

/// Wait until `ping` (a redis-cli invocation) answers PONG.
fn wait_pong(what: &str, ping: impl Fn() -> Command) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(out) = ping().output() {
            if String::from_utf8_lossy(&out.stdout).contains("PONG") {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Server {
    /// TLS only (no plain port), certificates from `pki`.
    pub fn tls(pki: &Pki, mutual: bool) -> Server {
        let port = free_port();
        let dir = temp_dir("redis-tls");
        let child = spawn(&dir, &pki.server_args(port, mutual));
        let server = Server { port, dir, child };
        wait_pong("TLS redis-server", || server.cli(pki, &["PING"]));
        server
    }

    /// A unix socket only (no TCP port).
    pub fn unix() -> Server {
        let dir = temp_dir("redis-unix");
        let sock = dir.join("redis.sock").display().to_string();
        let child = spawn(
            &dir,
            &[
                "--port".into(),
                "0".into(),
                "--unixsocket".into(),
                sock.clone(),
                "--unixsocketperm".into(),
                "700".into(),
            ],
        );
        let server = Server {
            port: 0,
            dir,
            child,
        };
        wait_pong("unix-socket redis-server", || {
            let mut c = Command::new("redis-cli");
            c.args(["-s", &sock, "PING"]);
            c
        });
        server
    }

    /// Plain TCP, where the default user is off and `user` logs in with `password`.
    pub fn acl(user: &str, password: &str) -> Server {
        let port = free_port();
        let dir = temp_dir("redis-acl");
        std::fs::write(
            dir.join("users.acl"),
            format!("user default off\nuser {user} on >{password} ~* &* +@all\n"),
        )
        .unwrap();
        let child = spawn(
            &dir,
            &[
                "--port".into(),
                port.to_string(),
                "--aclfile".into(),
                dir.join("users.acl").display().to_string(),
            ],
        );
        let server = Server { port, dir, child };
        wait_pong("ACL redis-server", || {
            let mut c = Command::new("redis-cli");
            c.args([
                "-p",
                &port.to_string(),
                "--user",
                user,
                "--pass",
                password,
                "--no-auth-warning",
                "PING",
            ]);
            c
        });
        server
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    /// redis-cli over TLS with the client certificate.
    pub fn cli(&self, pki: &Pki, args: &[&str]) -> Command {
        let mut c = Command::new("redis-cli");
        c.args(["-p", &self.port.to_string(), "--tls", "--cacert"])
            .arg(&pki.ca)
            .arg("--cert")
            .arg(&pki.client_cert)
            .arg("--key")
            .arg(&pki.client_key)
            .args(args);
        c
    }
}

/// Three TLS masters in a Cluster (`tls-cluster yes`: the bus and the
/// addresses CLUSTER SLOTS gives out are TLS too).
pub struct TlsCluster {
    pub nodes: Vec<Server>,
}

impl TlsCluster {
    pub fn start(pki: &Pki) -> TlsCluster {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let dir = temp_dir("redis-tls-cluster");
            let mut args = pki.server_args(port, false);
            args.extend(
                [
                    "--tls-cluster",
                    "yes",
                    "--tls-replication",
                    "yes",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-require-full-coverage",
                    "no",
                ]
                .map(String::from),
            );
            let child = spawn(&dir, &args);
            let node = Server { port, dir, child };
            wait_pong("TLS cluster node", || node.cli(pki, &["PING"]));
            nodes.push(node);
        }
        let mut create = nodes[0].cli(pki, &["--cluster", "create"]);
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        for n in &nodes {
            loop {
                let out = n.cli(pki, &["CLUSTER", "INFO"]).output().unwrap();
                let info = String::from_utf8_lossy(&out.stdout);
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "TLS cluster not ok: {info}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        TlsCluster { nodes }
    }

    /// `[redis] cluster = [...]` over rediss://, with `[redis.tls]`.
    pub fn config_section(&self, pki: &Pki, timeout: &str) -> String {
        let list: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"{}\"", n.tls_url()))
            .collect();
        format!(
            "[redis]\ncluster = [{}]\ntimeout = \"{timeout}\"\n{}",
            list.join(", "),
            pki.tls_section(false)
        )
    }
}

/// A TLS master that needs `password`, and one TLS sentinel watching it as
/// "mymaster" (it reaches the master over TLS, with `auth-pass`).
pub struct TlsSentinel {
    pub master: Server,
    pub sentinel: Server,
}

impl TlsSentinel {
    pub fn start(pki: &Pki, password: &str) -> TlsSentinel {
        let mport = free_port();
        let mdir = temp_dir("redis-tls-master");
        let mut args = pki.server_args(mport, false);
        args.extend(["--requirepass".to_string(), password.to_string()]);
        let master = Server {
            port: mport,
            dir: mdir.clone(),
            child: spawn(&mdir, &args),
        };
        wait_pong("TLS master", || {
            let mut c = master.cli(pki, &["--pass", password, "--no-auth-warning", "PING"]);
            c.env_remove("REDISCLI_AUTH");
            c
        });
        let sport = free_port();
        let sdir = temp_dir("redis-tls-sentinel");
        let conf = sdir.join("sentinel.conf");
        let p = |p: &Path| p.display().to_string();
        std::fs::write(
            &conf,
            format!(
                "port 0\ntls-port {sport}\nbind 127.0.0.1\ndir {}\ntls-cert-file {}\ntls-key-file {}\n\
                 tls-ca-cert-file {}\ntls-auth-clients no\ntls-replication yes\n\
                 sentinel monitor mymaster 127.0.0.1 {mport} 1\nsentinel auth-pass mymaster {password}\n",
                p(&sdir),
                p(&pki.server_cert),
                p(&pki.server_key),
                p(&pki.ca),
            ),
        )
        .unwrap();
        let mut cmd = Command::new("redis-server");
        cmd.arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        die_with_parent(&mut cmd);
        let sentinel = Server {
            port: sport,
            dir: sdir,
            child: cmd.spawn().unwrap(),
        };
        wait_pong("TLS sentinel", || sentinel.cli(pki, &["PING"]));
        TlsSentinel { master, sentinel }
    }
}
