#!/usr/bin/env bash
# Run tollgate's tests on a fresh machine: install what they need (a real
# redis-server, and nginx, Caddy and HAProxy for the end-to-end proxy tests;
# the tests start their own on free loopback ports), then `cargo test`.
# Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v nginx >/dev/null 2>&1 || need+=(nginx)
command -v caddy >/dev/null 2>&1 || need+=(caddy)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo test --locked "$@"
