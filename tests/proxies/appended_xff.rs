//! Issue #25 through real nginx: a proxy that appends the connection's
//! address to the client's own `X-Forwarded-For` line
//! (`$proxy_add_x_forwarded_for`), and a client that writes a byte >= 0x80
//! there and any `X-Real-IP` it likes. The client stays in its own bucket.

use std::net::SocketAddr;
use std::time::Duration;

use super::stack::{upstream, Proxy, APP_BODY, CONFIG};
use crate::support::nginx as nginx_conf;
use crate::support::{free_port, shared_redis, temp_dir, unique_prefix, TestServer};

/// The shipped nginx.conf, with the one line the issue is about: the
/// client's `X-Forwarded-For` is kept and the connection's address appended.
const SHIPPED_LINE: &str = "proxy_set_header X-Forwarded-For $remote_addr;";
const APPENDING_LINE: &str = "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;";

async fn appending_nginx(tollgate: [SocketAddr; 2], app: SocketAddr) -> Proxy {
    let shipped = include_str!("../../deploy/nginx/nginx.conf");
    assert!(
        shipped.contains(SHIPPED_LINE),
        "the shipped nginx.conf changed"
    );
    let port = free_port();
    let conf = shipped
        .replace(SHIPPED_LINE, APPENDING_LINE)
        .replace("127.0.0.1:8080", &tollgate[0].to_string())
        .replace("127.0.0.1:9080", &tollgate[1].to_string())
        .replace("127.0.0.1:3000", &app.to_string())
        .replace("listen 8000;", &format!("listen 127.0.0.1:{port};"))
        .replace("worker_processes auto;", "worker_processes 1;");
    let child = nginx_conf::command(&temp_dir("nginx-appending"), &conf)
        .spawn()
        .expect("nginx must be installed (scripts/test.sh installs it)");
    let proxy = Proxy::adopt(child, port).await;
    proxy
}

/// `POST /login` from `source` with header lines sent byte for byte; the
/// status and the body.
async fn login(source: &str, port: u16, lines: &[(&str, &[u8])]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse().unwrap(), 0))
        .unwrap();
    let mut conn = socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    let mut req = format!(
        "POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: 0\r\n"
    )
    .into_bytes();
    for (name, value) in lines {
        req.extend_from_slice(name.as_bytes());
        req.extend_from_slice(b": ");
        req.extend_from_slice(value);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    conn.write_all(&req).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer))
        .await
        .expect("nginx answers within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_left_of_the_address_nginx_appended_keeps_the_client_in_its_own_bucket() {
    // `login`: 2 per client address; trusted: 127.0.0.1, nginx's address.
    let prefix = unique_prefix("appended");
    let redis = shared_redis().url();
    let a = TestServer::start(CONFIG, Some(&redis), &prefix).await;
    let b = TestServer::start(CONFIG, Some(&redis), &prefix).await;
    let nginx = appending_nginx([a.addr, b.addr], upstream().await).await;
    let port = nginx.port;

    let client = "127.0.2.9";
    for n in 0..2 {
        let (status, body) = login(client, port, &[]).await;
        assert_eq!((status, body.as_str()), (200, APP_BODY), "login {n}");
    }
    assert_eq!(login(client, port, &[]).await.0, 429);
    // tollgate sees `X-Forwarded-For: \xff, 127.0.2.9` and the client's own
    // X-Real-IP: each of these was a fresh bucket, hence a 200.
    for n in 1..=5 {
        let real_ip = format!("198.51.100.{n}");
        let lines: [(&str, &[u8]); 2] = [
            ("X-Forwarded-For", b"\xff"),
            ("X-Real-IP", real_ip.as_bytes()),
        ];
        let (status, _) = login(client, port, &lines).await;
        assert_eq!(status, 429, "X-Real-IP {real_ip} chose the bucket");
    }
    for lines in [
        &[("X-Forwarded-For", &b"6.6.6.6, \xfe\xff"[..])][..],
        &[
            ("X-Forwarded-For", b"\xff"),
            ("X-Forwarded-For", b"198.51.100.1"),
        ],
    ] {
        let (status, _) = login(client, port, lines).await;
        assert_eq!(status, 429, "{lines:?}");
    }
    // Without X-Real-IP the others did not land in nginx's own bucket
    // (127.0.0.1, 2 logins): three clients, each its own first login.
    for other in ["127.0.2.10", "127.0.2.11", "127.0.2.12"] {
        let (status, body) = login(other, port, &[("X-Forwarded-For", b"\xff")]).await;
        assert_eq!((status, body.as_str()), (200, APP_BODY), "{other}");
    }
}
