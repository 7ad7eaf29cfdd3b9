//! What keeps tests apart: a free loopback port, a key prefix no other test
//! uses, and a fresh directory for a test's files (every process a test
//! starts writes only there).

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// Ports handed out for a process to bind later (redis-server, nginx,
/// Caddy, HAProxy): below Linux's ephemeral range (32768–60999), where every
/// `bind(…:0)` of a test's own server and every outgoing connection's source
/// port come from. A port taken from that range could be given to another
/// test's server between our check and the process's bind (a proxy test once
/// reached another test's tollgate that way and got its 404). A Cluster
/// node also binds its bus port, its port + 10 000: 20 000–30 000, which is
/// neither handed out nor ephemeral.
const HANDED_OUT: std::ops::Range<u16> = 10_000..20_000;

/// A free loopback port for a process to bind: never the same twice in this
/// run, never one the kernel hands out for `bind(…:0)`, and free right now.
pub fn free_port() -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(u64::MAX);
    let span = u64::from(HANDED_OUT.end - HANDED_OUT.start);
    // A random start, so two test processes at once are unlikely to collide.
    let _ = NEXT.compare_exchange(
        u64::MAX,
        rand::random::<u64>() % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let port = HANDED_OUT.start + (NEXT.fetch_add(1, Ordering::Relaxed) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {HANDED_OUT:?}");
}

/// A key prefix no other test uses.
pub fn unique_prefix(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "t{}-{}-{}",
        std::process::id(),
        name,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh, empty directory for one test's files.
pub fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tollgate-{}-{name}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
