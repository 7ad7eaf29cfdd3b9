//! tollgate: exact distributed rate limits and a distributed IP allowlist for
//! reverse proxies.
//!
//! # Layout
//!
//! A request's path through the code:
//!
//! - `server` binds both listeners, runs the background tasks, and shuts down.
//! - `http` routes; `http/forward_auth.rs` (`/check`, `/check/nginx`) and
//!   `http/api_check.rs` (`POST /v1/check`) read the request into a
//!   `request::RequestView`; `http/response.rs` is the one place a decision or
//!   an error becomes an HTTP response.
//! - `grpc` serves Envoy natively on `server.grpc_listen`: the rate limit
//!   service (RLS v3, rules with a `descriptor`) and ext_authz v3 (the
//!   `/check` decision from Envoy's `AttributeContext`), plus gRPC health.
//! - `client_ip` decides who the client is (trusted proxies, `X-Forwarded-For`).
//! - `client_ip` decides who the client is (trusted proxies, `X-Forwarded-For`);
//!   `net` is the one parser of addresses and networks (it and the allowlist share it).
//! - `path` normalises the request path that rules match and key on.
//! - `decide` applies every matching `rule` (matcher, key template) and
//!   combines their outcomes; it applies `on_redis_error` when Redis fails.
//! - `limiter` runs the algorithms: `limiter/redis_store.rs` calls the Lua
//!   scripts in `lua/`, `limiter/local_store.rs` runs their in-process twins
//!   (`limiter/{fixed_window,sliding_window,sliding_log,gcra}.rs`).
//! - `allowlist` is the distributed IP allowlist: admin writes through
//!   `lua/allow_*.lua`, a follower per node tailing the stream into a
//!   lock-free longest-prefix table (resyncing on gaps, epochs and a Redis
//!   gone backwards, kept in a state file across restarts), the reaper, and
//!   `allowlist/gate.rs`, which `decide` asks about `bypass` / `require`
//!   rules. `tollgate follow` (`cli/follow.rs`) runs the follower alone and
//!   keeps a file equal to the list (`allowlist/export_file.rs`).
//! - `activity` counts heartbeats, active days and tracked rules in memory
//!   and flushes them to Redis once a second (`http/activity_api.rs` reads them).
//! - `keys` builds every Redis key name.
//! - `config` reads and validates the TOML file (`config/raw.rs` shapes,
//!   `config/validate.rs` checks); `rate` parses `"5/m"`.
//! - `cli` is the command line; `main.rs` only wires it together.

pub mod activity;
pub mod allowlist;
pub mod app;
pub mod check;
pub mod cli;
pub mod client_ip;
pub mod config;
pub mod counters;
pub mod decide;
pub mod grpc;
pub mod http;
pub mod keys;
pub mod limiter;
pub mod metrics;
pub mod net;
pub mod path;
pub mod rate;
pub mod redis_conn;
pub mod request;
pub mod rule;
pub mod secret;
pub mod server;

pub use app::App;
pub use server::{run, Listeners};
