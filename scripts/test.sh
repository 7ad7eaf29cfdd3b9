#!/usr/bin/env bash
# Run tollgate's tests on a fresh machine: install what they need (a real
# redis-server, and nginx, Caddy and HAProxy for the end-to-end proxy tests;
# the tests start their own on free loopback ports; Python grpcio with the
# xds-protos Envoy stubs in a virtualenv, for the independent gRPC client;
# Chromium and chromedriver for the admin page's browser tests), then `cargo test`.
# Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib/need.sh
# (chromium + chromedriver: tests/admin_page.rs drives the admin page in headless Chromium.)
need redis-server:redis-server redis-cli:redis-tools openssl:openssl nginx:nginx-light caddy:caddy haproxy:haproxy python3:python3 \
  chromium:chromium chromedriver:chromium-driver
need_py ensurepip:python3-venv

# tests/grpc_python.rs runs tests/python/envoy_client.py with this interpreter.
venv="$(realpath -m "${CARGO_TARGET_DIR:-target}")/grpc-venv"
if ! "$venv/bin/python" -c 'import grpc, envoy.service.ratelimit.v3.rls_pb2' 2>/dev/null; then
  echo "installing: grpcio xds-protos (into $venv)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'grpcio>=1.60' 'xds-protos>=1.60'
fi
export TOLLGATE_TEST_PYTHON="$venv/bin/python"

cargo test --locked "$@"
