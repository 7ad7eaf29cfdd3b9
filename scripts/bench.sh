#!/usr/bin/env bash
# tollgate's benchmark harness: installs the load tools, builds a release
# binary, then runs every measurement in one go on this machine (its own Redis
# and tollgate on loopback ports) and writes bench/results/<date>.json.
#   scripts/bench.sh                  # about 3 minutes
#   BENCH_SECONDS=5 scripts/bench.sh  # shorter runs
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib/need.sh
need redis-server:redis-server redis-benchmark:redis-tools wrk:wrk hey:hey

cargo build --release --locked --bin tollgate
exec python3 scripts/bench.py "$@"
