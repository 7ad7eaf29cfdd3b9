//! tollgate: exact distributed rate limits and a distributed IP allowlist for
//! reverse proxies.
//!
//! # Layout
//!
//! Layers point one way: a module names only modules below it. From the top:
//! `main.rs` → `server` → `grpc` → `http` → `decide` → `app` → `check`,
//! `cli` → `allowlist` → `config`, `counters` → `rule` → `keys` → `limiter`
//! → `redis_conn` (connections, URL redaction, `StoreError`), `request`,
//! `client_ip` → `secret`, `path`, `rate`, `named`, `net`, `metrics`,
//! `plural`.
//!
//! ## A request
//!
//! 1. `server` binds the listeners, runs the background tasks, shuts down.
//! 2. `http.rs` routes; `http/observe.rs` labels every route by its template
//!    and gives it a request id. `http/forward_auth.rs` (`/check`,
//!    `/check/nginx`, `/check/{*path}`) reads the proxy's headers into a
//!    `request::RequestView` (`request/forwarded.rs`, `path` normalises the
//!    path, `client_ip` finds the client behind trusted proxies);
//!    `http/api_check.rs` (`POST /v1/check`) reads a typed body
//!    (`http/body.rs`). `grpc` does the same for Envoy (RLS v3, ext_authz v3).
//! 3. `decide.rs` (`App::decide`): the denylist first, then allowlist gates
//!    (`allowlist/gate.rs` asks the nodes' lock-free tables), then every
//!    matching `rule` (matcher, key template) with its limits, together.
//! 4. `check.rs` (`Limiter::check`, the App's `limiter`): one limiter call: the deny cache, the
//!    breaker (`limiter/breaker.rs`, per slot on a cluster), the store
//!    (`limiter/redis_store.rs` runs `lua/*.lua`; `limiter/local_store.rs`
//!    their in-process twins), and on a `StoreError` the rule's
//!    `on_redis_error`.
//! 5. `http/response.rs` is the one place a decision or an error becomes an
//!    HTTP answer (the gRPC services reuse its headers).
//!
//! ## An allowlist change
//!
//! 1. `http/allowlist_api.rs` (`POST`/`DELETE /v1/allowlist`) or
//!    `cli/allow.rs` (`tollgate allow`) checks the input
//!    (`allowlist/input.rs`, `allowlist/cidr.rs`), then `Allowlist` writes
//!    it through `allowlist/redis_store.rs`: one `lua/allow_*.lua` call moves
//!    the entry, `seq` and a stream event together (`allowlist/local.rs`
//!    without Redis).
//! 2. On every node, `allowlist/follower.rs` tails the stream (`XREAD`),
//!    reads each `allowlist/event.rs`, applies it to `allowlist/table.rs`
//!    (longest prefix, `allowlist/family.rs`) and publishes the table; it
//!    resyncs from a snapshot on gaps, epochs and a Redis gone backwards, and
//!    keeps the table in `allowlist/state_file.rs` across restarts.
//! 3. The next request's `allowlist/gate.rs` sees it. `allowlist/reaper.rs`
//!    expires due entries (an `expire` event each); `tollgate follow`
//!    (`cli/follow.rs`) runs the follower alone and keeps a file equal to the
//!    list (`allowlist/export_file.rs`).
//!
//! The denylist is the same machinery with another `allowlist/kind.rs`
//! `ListKind` (its own keys and stream, `/v1/denylist`, `tollgate deny`).
//! A rule's `ban` (`rule/ban.rs`) turns its limited answers into deny
//! entries: `ban.rs` runs the step from `decide.rs` (`App::decided`), and
//! `allowlist/ban.rs` counts and bans in one step (`lua/deny_ban.lua`).
//! Per-client overrides are a third kind with another member
//! (`allowlist/member.rs`: a (rule, key) pair with limits, `overrides/`), and
//! `check/overridden.rs` is where every limiter call looks its (rule, key)
//! up (`check` → `overrides` → `allowlist`). One edge points up:
//! `overrides/input.rs`, the admin side's validation, applies the caps of
//! `check/caps.rs` to an override's rates (the same caps every charge meets).
//!
//! ## Everything else
//!
//! - `keys` builds every Redis key name; `rate` parses `"5/m"`.
//! - `fleet` registers this replica in Redis (a beat every 2 s) and counts
//!   the live ones: what `on_redis_error = "local"` divides a limit by.
//! - `activity` counts heartbeats, active days and tracked rules in memory
//!   and flushes them to Redis once a second (`http/activity_api.rs` reads them).
//! - `config` reads and validates the TOML file (`config/raw.rs` shapes,
//!   `config/validate.rs` checks, every problem with its key and line).
//! - `counters` shows and resets one key's counters (`/v1/limits`,
//!   `tollgate limits`).
//! - The admin listener: `http/admin.rs` (health, `/metrics`),
//!   `http/status_api.rs` (`/v1/status`, `/v1/rules`), `http/admin_page.rs`
//!   (the page), `http/limits_api.rs`, `http/allowlist_api.rs`,
//!   `http/overrides_api.rs`.

pub mod activity;
pub mod allowlist;
pub(crate) mod app;
pub mod ban;
pub(crate) mod check;
pub mod cli;
pub mod client_ip;
pub mod config;
pub(crate) mod counters;
pub(crate) mod decide;
pub(crate) mod fleet;
pub(crate) mod grpc;
pub mod http;
pub mod keys;
pub mod limiter;
pub(crate) mod metrics;
pub(crate) mod named;
pub(crate) mod net;
pub mod overrides;
pub(crate) mod path;
pub(crate) mod plural;
pub mod rate;
pub mod redis_conn;
pub(crate) mod report;
pub mod request;
pub mod rule;
pub mod secret;
pub mod server;

pub use app::App;
pub use server::{run, Listeners};
