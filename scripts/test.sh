#!/usr/bin/env bash
# Run tollgate's tests on a fresh machine: install what they need (a real
# redis-server, and nginx, Caddy and HAProxy for the end-to-end proxy tests;
# the tests start their own on free loopback ports), then `cargo test`.
# Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib/need.sh
need redis-server:redis-server redis-cli:redis-tools nginx:nginx-light caddy:caddy haproxy:haproxy python3:python3

cargo test --locked "$@"
