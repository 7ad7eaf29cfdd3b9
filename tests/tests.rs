//! tollgate's integration tests: every module listed here, except the
//! allowlist at scale, which has a binary of its own (`tests/scale.rs`).
//! All of them talk to a real `redis-server` that `support` starts on a free
//! loopback port; each test uses its own key prefix, never FLUSHDB.

/// Real parts, one module per thing they start: redis-server, Cluster,
/// Sentinel, TLS Redis, tollgate in process or as a binary, nginx; prefixes,
/// temp dirs, metrics, the allowlist from outside, eventually().
mod support;
/// Today's name for `support::tls` (hardened Redis), kept for existing imports.
use support::tls as support_tls;

/// Activity counters with two replicas: heartbeats and presence, active days,
/// tracked rules' summaries, the path bound, a Redis outage, bad input.
mod activity;
/// Counters admin API and CLI: auth, unknown rules, show and reset.
mod admin_counters;
/// The admin page in a real browser: sign-in and a wrong token, replicas seeing each
/// other's changes, a bad CIDR, removal, TTL countdown, the chart, notes as text, CSP.
mod admin_page;
/// `GET /v1/status` and `/v1/rules`: the token, health (Redis, allowlist freshness), decision counts, rules.
mod admin_status;
/// Each algorithm against both stores: exact limit, retry_after, no charge on
/// denial, cost, all-or-nothing limits, TTLs, window roll-over.
mod algorithms;
/// The distributed allowlist: three servers on one Redis, admin API, stream
/// events, expiry, longest-prefix matches, bad input, embedded store, `tollgate allow`.
mod allowlist;
/// `tollgate allow export` / `restore`: a 10 000-entry round trip, bad input writes nothing.
mod allowlist_export;
/// Redis lost the allowlist (restarted empty, flushed, failed over, nodes from state files): one
/// node puts it back with no 403 meanwhile; writes refused until then; `clear`; a node's export.
mod allowlist_fleet_restore;
/// Redis lost under the allowlist (flushed, restarted empty, killed): fail-static, state files, convergence.
mod allowlist_outage;
/// The allowlist's history going wrong (trimmed, rewritten, unknown events, backwards): resync to the listing.
mod allowlist_resync;
/// Bans that follow from a rule: one per offence across replicas, escalation, the next request
/// refused everywhere, shadow, exempt entries and precedence, the embedded store, config errors.
mod bans;
/// The benchmark harness's probe and run checks against a real tollgate (it once measured 404s).
mod bench_harness;
/// No client can hurt Redis or the process: `POST /v1/check` caps (400 naming
/// the field), shadow and decision counts there, bounded keys, connection limits and timeouts.
mod bounds;
/// `tollgate` the binary: `config check` output, errors naming keys, exit codes.
mod cli;
/// Client IP through HTTP: trusted and untrusted X-Forwarded-For, mapped IPv4, IPv6 /64;
/// who may describe the original request (one header family, trusted peers only).
mod client_ip;
/// A real Redis Cluster (3 masters) and a Sentinel: exact per key, a dead master, a failover.
mod cluster;
/// `tollgate serve` following its config file: a ConfigMap's `..data` swap
/// applies, a broken file changes nothing and is reported, no answer from a
/// half-loaded config, `--no-watch` and SIGHUP, the status's config hash.
mod config_watch;
/// The decision core's guarantees on every surface: a cost past the caps is
/// refused (JSON, RLS, both stores) and writes nothing, random triples stay
/// within them; a request's rules are charged all or nothing (one Redis, the
/// embedded store, a Cluster).
mod core_guarantees;
/// The deny cache: no Redis calls for a denied key; resets reach every replica.
mod deny_cache;
/// The IP denylist on the allowlist's machinery: every node refuses a denied client (403
/// `denied`, Retry-After) before any rule, deny beats allow, expiry, bad input, Redis
/// killed, a trimmed stream, FLUSHALL, the state file, `tollgate deny`, `follow --list deny`.
mod denylist;
/// deploy/ files no engine here runs (compose, Envoy, Traefik, k8s, systemd) parse and hold their promises.
mod deploy_files;
/// Each Lua script against its in-process twin on random (cost, pause) sequences.
mod differential;
/// Several replicas and many concurrent clients on one key: exactly the limit.
mod exactness;
/// The fleet registry: three replicas see each other in `/v1/status`; Redis killed, one
/// client's `local` fallback total across them stays within the limit; dead replicas drop
/// out after the TTL; a Redis back empty never lowers the count; a Cluster.
mod fleet;
/// `tollgate follow --export`: the file follows adds, removes and expiry; reload commands; signals.
mod follow;
/// gcra's burst: from a rule and from POST /v1/check, on both stores; refused where it means nothing.
mod gcra_burst;
/// Envoy's gRPC services (tonic client): RLS v3 descriptors, hits, overrides,
/// exactness, Redis down; ext_authz v3 allowed/429/403, spoofed sources; health.
mod grpc;
/// Python grpcio with the xds-protos package's Envoy stubs: an independent client of both services.
mod grpc_python;
/// The decision API on a real socket: statuses, headers, JSON bodies.
mod http_api;
/// Quota leases on one hot key: at most the limit per window on Redis's record and at least
/// 90 % of it, script calls far below decisions, cold keys unchanged, Redis killed mid-run.
mod leases;
/// Per-client overrides on the lists' machinery: set on one node, enforced by every node; a
/// raise keeps the spent count; lower, unlimited, deny, TTL, remove; bad input writes nothing;
/// Redis killed; FLUSHALL put back with the limits; the state file; the embedded store;
/// `tollgate override` and `limits show`.
mod overrides;
/// Property tests (proptest): parsers and handlers never panic, never answer 5xx.
mod properties;
/// nginx, Caddy and HAProxy from deploy/ in front of two replicas: the client's view.
mod proxies;
/// The Python client package (clients/python): DRF throttles and FastAPI
/// dependency/middleware in two real worker processes each share one limit;
/// Retry-After, fallback with tollgate down, heartbeats, bad settings.
mod python_client;
/// Redis answering with an error (OOM, ACL, a replica, BUSY, a script error):
/// the breaker or its refusing state, one log line each way, on_redis_error.
mod redis_errors;
/// Managed Redis: TLS (private CA, mutual, wrong CA), unix socket, ACL password file and its rotation, TLS Cluster.
mod redis_tls;
/// A reload that changes every setting: each live one applies, each
/// restart-only one is listed in `GET /v1/status` under `restart_pending`.
mod reload;
/// Rules that count reported outcomes: requests only check them, `POST
/// /v1/report` (and a proxy's `POST /report`, by upstream status) charges
/// them; trusted peers only; bad reports charge nothing.
mod reported;
/// Redis killed, stalled, restarted, scripts flushed: on_redis_error and the breaker.
mod resilience;
/// Running the Lua scripts at a time the test chooses (a test clock).
mod script_clock;
/// Lua edge cases at chosen times: member names after a prune, big costs, GCRA backlog, lost TTLs, memory.
mod script_edges;
/// Shadow mode and the metrics exposition.
mod shadow_and_metrics;
/// The binary under signals: SIGHUP reload, SIGTERM shutdown.
mod signals;
/// `tollgate serve` starting or refusing to: the admin token as the
/// environment holds it, an open admin API, a port taken, the first log lines.
mod startup;
/// Sustained load on short limits (100/s, 7/200ms): every algorithm, three replicas, 60 connections.
mod sustained;
/// Who is hurting: the keys a rule limited most often, merged across replicas
/// through Redis (API, CLI), bad queries named.
mod top_limited;
