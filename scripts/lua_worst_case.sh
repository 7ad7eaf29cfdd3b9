#!/usr/bin/env bash
# The worst sliding_log call POST /v1/check allows ([api] defaults): N limits of
# L, each key holding L stale members to prune, then a cost of C added to each.
# Prints min/median/max of SLOWLOG's duration over REPS calls of the sliding_log
# script as tollgate runs it (lua/sliding_log.lua, then lua/one_rule.lua). The
# caps are the decision core's (src/check/caps.rs), the same for every surface
# (POST /v1/check, RLS hits_addend, forward-auth, ext_authz), so this is the
# worst call any surface can make.
# usage: scripts/lua_worst_case.sh [L=25] [C=25] [N=4] [REPS=31]
set -euo pipefail
L=${1:-25}; C=${2:-25}; N=${3:-4}; REPS=${4:-31}
cd "$(dirname "$0")/.."
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# Its own --dir: nothing Redis writes lands in the working tree.
DIR=$(mktemp -d)
redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$DIR" >/dev/null &
PID=$!
trap 'kill $PID; rm -rf "$DIR"' EXIT
R="redis-cli -p $PORT"
until $R PING >/dev/null 2>&1; do sleep 0.05; done
SHA=$($R SCRIPT LOAD "$(cat lua/sliding_log.lua; printf '\nlocal M = sliding_log\n'; cat lua/one_rule.lua)")
$R CONFIG SET slowlog-log-slower-than 0 >/dev/null
keys=(); argv=("$C")
for i in $(seq 1 "$N"); do keys+=("m:{k}:$i"); argv+=("$L" "$((1000 * i))"); done
for _ in $(seq 1 "$REPS"); do
  $R DEL "${keys[@]}" >/dev/null
  for k in "${keys[@]}"; do
    $R EVAL "for j=1,tonumber(ARGV[1]) do redis.call('ZADD', KEYS[1], j, 'old-'..j) end" 1 "$k" "$L" >/dev/null
  done
  $R SLOWLOG RESET >/dev/null
  $R EVALSHA "$SHA" "$N" "${keys[@]}" "${argv[@]}" >/dev/null
  # Entry lines: id, timestamp, duration (µs), then the command's words.
  $R SLOWLOG GET 10 | grep -B1 -x EVALSHA | head -1
done | sort -n | awk -v l="$L" -v c="$C" -v n="$N" \
  '{a[NR]=$1} END {printf "sliding_log L=%s C=%s N=%s: min %d us, median %d us, max %d us\n", l, c, n, a[1], a[int(NR/2)+1], a[NR]}'
