#!/usr/bin/env python3
"""Redis time of each allowlist call, at 100 000 and 1 000 000 entries (issue 17:
"each call bounded, <= 1 ms of Redis time per call at any list size, measured").

Starts its own redis-server (loopback, nothing saved), fills the allowlist the
way tollgate stores it (scripts/allowlist_fill.py), then sends each call a node
or the admin API makes, as they make it, and reads the Redis time of every
call from SLOWLOG (threshold 0, so every call is logged): a snapshot page
(HSCAN ... COUNT 200), the snapshot's start (lua/allow_snapshot_begin.lua), a
tail read (XREAD COUNT 200 of 200 events), an add (lua/allow_upsert.lua), a
reaper call (lua/allow_reap.lua, 25 due entries), a take from the fleet's page
budget (lua/allow_snapshot_take.lua), one entry's read (HGET), and a restore:
a chunk of 100 staged (lua/allow_restore_stage.lua) and the swap of a staged
list as large as the live one (lua/allow_restore.lua).
Every call's answer is checked (a page must hold entries, a reap must expire
all it was given), so a wrong key cannot produce a fast figure. SLOWLOG's time is the
command's own execution, not the round trip; on a loaded machine it also
holds time the Redis process waited for a CPU, so run it on a quiet one;
Redis runs at nice -15 and SCHED_FIFO where that may be set (as root), which
keeps the other processes from taking its CPU mid-call.

    python3 scripts/allowlist_call_cost.py [SIZES...]     # default 100000 1000000
"""

import os
import re
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from allowlist_fill import ENTRY, allow_key, allow_keys, entry_cidr, fill_commands  # noqa: E402
from bench_procs import kill_all, lua, prioritise_redis, redis, resp, start_redis  # noqa: E402

PAGE, TAIL, REAP, RESTORE = 200, 200, 25, 100  # as src/allowlist/{follower,redis_store}.rs
DUE = 10_000  # entries already due, for the reaper


def pipe(port, cmds):
    out = subprocess.run(["redis-cli", "-p", str(port), "--pipe"], input="".join(resp(*c) for c in cmds),
                         capture_output=True, text=True)
    if "errors: 0" not in out.stdout:
        raise SystemExit(f"fill failed: {out.stdout}{out.stderr}")


def slowlog(port, command):
    """Execution µs of every logged call of `command` (SLOWLOG GET -1 as redis-cli prints it)."""
    out = redis(port, "SLOWLOG", "GET", "-1")
    # Each entry: id, unix time, µs, then the arguments, one value a line.
    lines = out.splitlines()
    times = []
    for i in range(len(lines) - 3):
        if lines[i + 3].upper() == command.upper() and lines[i + 2].isdigit():
            times.append(int(lines[i + 2]))
    return times


def measure(n):
    p, port = start_redis()
    print(f"{n:>9} entries  Redis priority: {prioritise_redis(p)}")
    prefix = f"cost{n}"
    meta, entries, exp, events = allow_keys(prefix)
    # DUE entries expired at 1 ms, the rest far in the future.
    pipe(port, fill_commands(prefix, [entry_cidr(i) for i in range(n)], lambda i: 1 if i < DUE else 4_000_000_000_000))
    if int(redis(port, "HLEN", entries)) != n:
        raise SystemExit("the fill did not store every entry")
    upsert, reap, begin, take, stage, restore = (
        redis(port, "SCRIPT", "LOAD", lua(s))
        for s in ("allow_upsert", "allow_reap", "allow_snapshot_begin", "allow_snapshot_take",
                  "allow_restore_stage", "allow_restore"))
    redis(port, "CONFIG", "SET", "slowlog-log-slower-than", "0")
    redis(port, "CONFIG", "SET", "slowlog-max-len", "100000")
    results = {}

    def run(name, command, calls, check):
        redis(port, "SLOWLOG", "RESET")
        for _ in range(calls):
            check(call())
        t = slowlog(port, command)
        if len(t) < calls:
            raise SystemExit(f"{name}: SLOWLOG holds {len(t)} of {calls} calls")
        results[name] = {"calls": len(t), "median_us": statistics.median(t), "max_us": max(t)}

    # Adds first (one new entry, then refreshes): they also write the 200 events the tail read reads.
    call = lambda: redis(port, "EVALSHA", upsert, "5", *allow_keys(prefix), allow_key(prefix, "lost"), "203.0.113.7/32",
                         "86400000", "login", "bench", "cost", "604800000", "1000000", "0")
    run("add (allow_upsert.lua)", "EVALSHA", TAIL, lambda r: r.splitlines()[0].isdigit() or fail("upsert", r))
    call = lambda: redis(port, "EVALSHA", begin, "2", meta, entries)
    run("snapshot start (allow_snapshot_begin.lua)", "EVALSHA", 20, lambda r: r.splitlines()[4] == str(n + 1) or fail("begin", r))
    # The fleet budget's take before each page (40 a 100 ms window: 400 pages a second).
    call = lambda: redis(port, "EVALSHA", take, "1", allow_key(prefix, "snapshot_budget"), "40", "100")
    run("page budget take (allow_snapshot_take.lua)", "EVALSHA", 200, lambda r: r.isdigit() or fail("take", r))
    cursor = ["0"]

    def page():
        out = redis(port, "HSCAN", entries, cursor[0], "COUNT", str(PAGE)).splitlines()
        cursor[0] = out[0]
        return out
    call = page
    run(f"snapshot page (HSCAN COUNT {PAGE})", "HSCAN", 200, lambda r: len(r) > 1 or fail("hscan", r))
    call = lambda: redis(port, "XREAD", "COUNT", str(TAIL), "STREAMS", events, "0-0")
    run(f"tail read (XREAD COUNT {TAIL})", "XREAD", 20, lambda r: r.count("upsert") == TAIL or fail("xread", r[:200]))
    call = lambda: redis(port, "EVALSHA", reap, "4", *allow_keys(prefix), str(REAP), "cost", "604800000", "1000000")
    run(f"reaper call (allow_reap.lua, {REAP} due)", "EVALSHA", DUE // REAP // 2, lambda r: r == str(REAP) or fail("reap", r))
    call = lambda: redis(port, "HGET", entries, entry_cidr(n - 1))
    run("one entry (HGET)", "HGET", 100, lambda r: r.startswith('{"expires_at"') or fail("hget", r))
    # A restore: chunks of RESTORE staged under a token, then the swap of a
    # whole staged list of n entries (the live list copied in, untimed: COPY
    # is not an EVALSHA) in place of the live one.
    staged = [allow_key(prefix, f"restore:cost:{k}") for k in ("entries", "exp")]
    chunk = [0]

    def stage_chunk():
        base = n + chunk[0] * RESTORE
        chunk[0] += 1
        args = []
        for i in range(base, base + RESTORE):
            args += [entry_cidr(i), ENTRY % (4_000_000_000_000, "cost"), "4000000000000"]
        return redis(port, "EVALSHA", stage, "2", *staged, "3600000", *args)
    call = stage_chunk
    run(f"restore stage (allow_restore_stage.lua, {RESTORE} entries)", "EVALSHA", 20,
        lambda r: r.splitlines()[1] == "0" or fail("stage", r))

    def swap():
        for live, tmp in zip((entries, exp), staged):
            redis(port, "COPY", live, tmp, "REPLACE")
        return redis(port, "EVALSHA", restore, "7", *allow_keys(prefix), *staged, allow_key(prefix, "lost"), "f" * 16,
                     str(int(redis(port, "HLEN", staged[0]))), "cost", "604800000", "1000000", "restore", "", "", "",
                     "any", "", "")
    call = swap
    run(f"restore swap (allow_restore.lua, {n} entries)", "EVALSHA", 3, lambda r: r.splitlines()[1] == "1" or fail("restore", r))
    p.kill()
    return results


def fail(what, reply):
    raise SystemExit(f"{what}: unexpected answer {reply!r}")


def main():
    sizes = [int(s) for s in sys.argv[1:]] or [100_000, 1_000_000]
    load = open("/proc/loadavg").read().split()[:3]
    print(f"load average {' '.join(load)}; Redis {redis_version()}")
    try:
        for n in sizes:
            for name, r in measure(n).items():
                print(f"{n:>9} entries  {name:<44} {r['calls']:>4} calls  median {r['median_us']:>6} µs  max {r['max_us']:>6} µs")
    finally:
        kill_all()


def redis_version():
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    m = re.search(r"v=(\S+)", out)
    return m.group(1) if m else "?"


if __name__ == "__main__":
    main()
