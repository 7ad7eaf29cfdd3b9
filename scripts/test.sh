#!/usr/bin/env bash
# Run tollgate's tests on a fresh machine: install what they need (a real
# redis-server, and nginx, Caddy and HAProxy for the end-to-end proxy tests;
# the tests start their own on free loopback ports; Python grpcio with the
# xds-protos Envoy stubs in a virtualenv, for the independent gRPC client, and
# the Python client package with Django, DRF, FastAPI, uvicorn and pytest;
# Chromium and chromedriver for the admin page's browser tests), then `cargo test`.
# Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib/need.sh
# (chromium + chromedriver: tests/admin_page.rs drives the admin page in headless Chromium.)
need redis-server:redis-server redis-cli:redis-tools openssl:openssl nginx:nginx-light caddy:caddy haproxy:haproxy python3:python3 \
  chromium:chromium chromedriver:chromium-driver
need_py ensurepip:python3-venv

# One virtualenv for the Python tests, named in TOLLGATE_TEST_PYTHON:
# tests/grpc_python.rs runs tests/python/envoy_client.py (grpcio, xds-protos);
# tests/python_client.rs runs pytest on tests/python/client/ against the
# package clients/python with its extras (Django + DRF, FastAPI) and uvicorn.
venv="$(realpath -m "${CARGO_TARGET_DIR:-target}")/grpc-venv"
# `python -m pip`: a venv's bin/pip names the interpreter by an absolute path,
# wrong once the target directory was copied (a worktree's warm cache).
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
if ! "$venv/bin/python" -c 'import grpc, envoy.service.ratelimit.v3.rls_pb2' 2>/dev/null; then
  echo "installing: grpcio xds-protos (into $venv)"
  python3 -m venv "$venv"
  "${pip[@]}" 'grpcio>=1.60' 'xds-protos>=1.60'
fi
if ! "$venv/bin/python" -c 'import django, rest_framework, fastapi, uvicorn, pytest, httpx' 2>/dev/null; then
  echo "installing: clients/python[django,fastapi] uvicorn pytest (into $venv)"
  "${pip[@]}" './clients/python[django,fastapi]' 'uvicorn>=0.23' 'pytest>=7'
fi
# The client package itself, reinstalled only when its files changed (the
# stamp is their hash), so the tests always run what clients/python holds.
stamp="$venv/tollgate-client.sha1"
sum="$(find clients/python -type f -not -path '*/__pycache__/*' -not -path '*.egg-info*' -not -path '*/build/*' \
  | LC_ALL=C sort | xargs sha1sum | sha1sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]; then
  echo "installing: clients/python (into $venv)"
  "${pip[@]}" --force-reinstall --no-deps ./clients/python
  echo "$sum" >"$stamp"
fi
export TOLLGATE_TEST_PYTHON="$venv/bin/python"

cargo test --locked "$@"
