#!/usr/bin/env bash
# tollgate's benchmark harness: installs the load tools, builds a release
# binary, then runs every measurement in one go on this machine (its own Redis
# and tollgate on loopback ports) and writes bench/results/<date>.json.
#   scripts/bench.sh                  # about 3 minutes
#   BENCH_SECONDS=5 scripts/bench.sh  # shorter runs
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-benchmark >/dev/null 2>&1 || need+=(redis-tools)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v hey >/dev/null 2>&1 || need+=(hey)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build --release --locked --bin tollgate
exec python3 scripts/bench.py "$@"
