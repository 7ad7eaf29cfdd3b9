//! Real parts for tests, one module per thing they start. Every server a test
//! starts is a real process (or an in-process tollgate) on loopback, writing
//! only under its own temp dir; tests isolate themselves by key prefix.
//!
//! The names are re-exported here, so tests write `crate::support::Name`.

#![allow(dead_code)]

/// The allowlist from outside: keys, the gate, admin writes, listings, tables.
pub mod allowlist;
/// The `tollgate` binary as a process: one-shot commands and `tollgate serve`.
pub mod binary;
/// Headless Chromium through chromedriver (fantoccini), a fresh profile per browser; screenshots.
pub mod browser;
/// A 3-master Redis Cluster, and forming one.
pub mod cluster;
/// A free port, a unique key prefix, a fresh temp dir.
pub mod isolation;
/// Reading `/metrics`: a scrape and one sample.
pub mod metrics;
/// nginx with every file it writes in the test's dir.
pub mod nginx;
/// Certificates made at test time.
pub mod pki;
/// Child processes tied to the test binary; waiting for one to exit.
pub mod process;
/// One `redis-server` (the starter every test Redis goes through) and the shared one.
pub mod redis;
/// A master, a replica and a sentinel.
pub mod sentinel;
/// A tollgate server inside the test process.
pub mod server;
/// Both stores, and an `App` over either without listeners.
pub mod stores;
/// TLS, unix-socket and ACL Redis; a TLS Cluster and Sentinel.
pub mod tls;
/// `eventually` and its blocking twin.
pub mod wait;

pub use browser::Browser;
pub use cluster::{shared_cluster, RedisCluster};
pub use isolation::{free_port, temp_dir, unique_prefix};
pub use metrics::{metric, scrape};
#[allow(unused_imports)] // for tests that spawn their own processes
pub use process::{die_with_parent, on_process_thread};
pub use redis::{shared_redis, RedisServer};
pub use sentinel::SentinelSet;
#[allow(unused_imports)] // ADMIN_TOKEN: for tests that build their own admin requests
pub use server::{TestServer, ADMIN_TOKEN};
pub use stores::{app_for, StoreKind, BOTH_STORES};
#[allow(unused_imports)] // wait_for: for blocking callers
pub use wait::{eventually, wait_for};
