//! Caddy with one of its two tollgate replicas dead: the shipped Caddyfile's
//! passive health check marks it down on its first failed call, and no
//! request tries it again while it is marked (without it, round robin sent
//! every other request to the dead replica first, each paying
//! `lb_try_interval` before the live one was tried).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::scenarios::app_answer;
use super::stack::*;

/// The dead replica's port holds a listener of ours that counts every
/// connection Caddy opens and closes it unanswered (a replica that died
/// behind its socket): 20 sequential requests all reach the app, and the
/// dead replica sees one connection, the one that marked it down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replica_is_marked_down_once_and_not_tried_again() {
    let mut s = Stack::start(Kind::Caddy, CONFIG).await;
    let dead = s.replicas.pop().unwrap();
    let dead_addr = dead.addr;
    dead.stop().await;
    let listener = tokio::net::TcpListener::bind(dead_addr).await.unwrap();
    let attempts = Arc::new(AtomicU64::new(0));
    let counted = attempts.clone();
    let counter = tokio::spawn(async move {
        loop {
            let (conn, _) = listener.accept().await.unwrap();
            counted.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    let c = client_from("127.0.0.12");
    for n in 0..20 {
        let path = if n % 2 == 0 { "/free" } else { "/" };
        let r = c.get(s.proxy.url(path)).send().await.unwrap();
        app_answer(Kind::Caddy, r, &format!("request {n} ({path})")).await;
    }
    counter.abort();
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        1,
        "connections to the dead replica over 20 requests"
    );
}
