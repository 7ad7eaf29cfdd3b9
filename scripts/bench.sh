#!/usr/bin/env bash
# tollgate's benchmark harness: installs the load tools, builds a release
# binary and the anchors (bench/anchors, a cargo workspace of its own), then
# runs every measurement in one go on this machine (its own Redis and tollgate
# on loopback ports) and writes bench/results/<date>.json. Any run whose
# answers are not the statuses it expects stops the benchmark with the reason.
#   scripts/bench.sh                        # a few minutes
#   BENCH_SECONDS=3 scripts/bench.sh        # shorter load runs (default 5)
#   BENCH_DISTINCT_KEYS=200000 ...          # fewer clients in the embedded memory runs (default 1 000 000)
#   BENCH_REDIS_DISTINCT_KEYS=...           # clients in the Redis-store RSS run (default 200 000)
#   LIMITADOR_BIN=/path/limitador-server ...  # also measure Limitador (bench/README.md)
#   BENCH_SKIP_LOOKUP=1 ...                 # skip the criterion allowlist lookup bench
#   BENCH_ONLY=activity ...                 # only /check on a tracked rule against an untracked one
#   BENCH_ONLY=hot ...                      # issue 30: hot keys with leases, CPU per decision; issue 28: denylist cost
#                                           # (scripts/bench_hot.py; BENCH_PARTS=hot,near,cpu,denylist)
#   BENCH_ONLY=propagation ...              # issue 28: list propagation from each node's apply-lag histogram
#                                           # (scripts/bench_propagation.py; FOLLOWERS=1,4,16)
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib/need.sh
need redis-server:redis-server redis-benchmark:redis-tools wrk:wrk

target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --locked --bin tollgate
CARGO_TARGET_DIR="$target/anchors" cargo build --release --locked --manifest-path bench/anchors/Cargo.toml
case "${BENCH_ONLY:-}" in
  hot)
    # The RLS load generator (bench/grpc_vs_check.rs, RLS_TARGET mode).
    CARGO_TARGET_DIR="$target" cargo bench --locked --bench grpc_vs_check --no-run
    CARGO_TARGET_DIR="$target" exec python3 scripts/bench_hot.py "$@" ;;
  propagation)
    CARGO_TARGET_DIR="$target" exec python3 scripts/bench_propagation.py "$@" ;;
esac
CARGO_TARGET_DIR="$target" exec python3 scripts/bench.py "$@"
