//! `tollgate allow export --from-node ADMIN_URL`: a node's own table, read
//! from its admin listener (`GET /v1/allowlist/export`, bearer token), for
//! when Redis lost the allowlist and an operator restores it by hand.
//!
//! One plain HTTP/1.1 GET (the admin listener speaks plain HTTP); the token
//! comes from the config's admin token variable and is never printed.

use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{AUTHORIZATION, HOST};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;

/// Connecting, asking and reading the whole document: a million entries
/// are about 100 MB, read in seconds.
const TIMEOUT: Duration = Duration::from_secs(120);

/// The export document of `kind`'s list `url`'s node serves
/// (`/v1/<noun>/export`), or why not (every reason names the URL or the status).
pub async fn fetch(
    url: &str,
    token: Option<&str>,
    kind: crate::allowlist::kind::ListKind,
) -> Result<String, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("--from-node {url:?}: not a URL ({e})"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "--from-node {url:?}: expected http://HOST:PORT (a node's admin listener)"
        ));
    }
    let Some(authority) = uri.authority().cloned() else {
        return Err(format!("--from-node {url:?}: no host"));
    };
    let token = token.ok_or("the node's admin API needs its bearer token: set the variable `server.admin_token_env` names (TOLLGATE_ADMIN_TOKEN by default)")?;
    let base = uri.path().trim_end_matches('/');
    let tail = format!("/v1/{}/export", kind.noun());
    let path = format!("{base}{tail}");
    let asked = async {
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(80);
        let stream = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        tokio::spawn(conn);
        let req = Request::get(path.as_str())
            .header(HOST, authority.as_str())
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("{url}: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{url}: {e}"))?
            .to_bytes();
        let text = String::from_utf8_lossy(&body).into_owned();
        if !status.is_success() {
            return Err(format!("{url}{tail}: {status}: {}", text.trim()));
        }
        Ok(text)
    };
    tokio::time::timeout(TIMEOUT, asked)
        .await
        .map_err(|_| format!("{url}: no answer within {TIMEOUT:?}"))?
}
