#!/usr/bin/env python3
"""Redis's cost of the ban step (issue 28), against a decision's, in one run.

A banning rule adds one script call to each of its limited answers
(`lua/deny_ban.lua` after `lua/list_upsert.lua`, as src/allowlist/redis_store.rs
composes it); allowed answers and rules without `ban` add nothing. This
measures, on its own Redis (started here), Redis's CPU per call
(`INFO commandstats` usec_per_call of EVALSHA, one phase at a time, after
`CONFIG RESETSTAT`) for:

- `decision`: a fixed_window decision (`lua/fixed_window.lua` + `one_rule.lua`),
  N distinct keys: the call every decision makes, for scale;
- `ban_count`: the ban step of a limited answer that is not (yet) an offence
  (`after` = 1 000 000; N distinct addresses: HGET, lost check, INCR, PEXPIRE);
- `ban_offence`: the ban step that bans (`after` = 1; N distinct addresses:
  the count, then the upsert's writes and one XADD on the denylist's stream);
- `deny_upsert`: a manual deny entry (`allow_upsert.lua` on the denylist), for
  comparison with `ban_offence`.

Every reply is checked (the decision allowed; `counted` 1; `banned` with seq
1..N in order; the upsert's seq), and the stream must hold N ban events with
actor `rule:bench`: a run that measured anything else fails.

Usage: python3 scripts/bench_ban_step.py   (N=20000 by default)
Writes bench/results/<date>-ban-step.json.
"""

import datetime
import json
import os
import sys

from bench_allowlist import Redis
from bench_load import loadavg
from bench_procs import PROCS, ROOT, lua
import bench as B

N = int(os.environ.get("N", "20000"))
BATCH = 1000


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def read_reply(f):
    line = f.readline()
    kind, rest = line[:1], line[1:-2]
    if kind in (b"+", b":"):
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data.decode()
    if kind == b"*":
        return [read_reply(f) for _ in range(int(rest))]
    raise RuntimeError(f"unexpected reply {line!r}")


class Conn:
    def __init__(self, port):
        import socket
        self.s = socket.create_connection(("127.0.0.1", port))
        self.f = self.s.makefile("rb")

    def call(self, *args):
        self.s.sendall(resp(*args))
        return read_reply(self.f)

    def pipe(self, commands):
        self.s.sendall(b"".join(resp(*c) for c in commands))
        return [read_reply(self.f) for _ in commands]


def evalsha_usec(c):
    for line in c.call("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_evalsha:"):
            fields = dict(kv.split("=") for kv in line.split(":", 1)[1].split(","))
            return int(fields["calls"]), float(fields["usec_per_call"])
    return 0, 0.0


def phase(c, name, commands, check):
    c.call("CONFIG", "RESETSTAT")
    replies = []
    for i in range(0, len(commands), BATCH):
        replies += c.pipe(commands[i:i + BATCH])
    calls, usec = evalsha_usec(c)
    if calls != len(commands):
        sys.exit(f"bench_ban_step: {name}: Redis counted {calls} EVALSHA calls, sent {len(commands)}")
    for i, r in enumerate(replies):
        problem = check(i, r)
        if problem:
            sys.exit(f"bench_ban_step: {name}: reply {i} {r!r}: {problem}")
    print(f"{name:>12}: {calls} calls, {usec:.2f} µs of Redis per call", flush=True)
    return {"calls": calls, "usec_per_call": usec}


def main():
    r = Redis()
    c = Conn(r.port)
    sha = {n: c.call("SCRIPT", "LOAD", lua(n)) for n in ("fixed_window", "deny_ban", "allow_upsert")}
    tag = "{b:deny}"
    lists = [f"b:{tag}:meta", f"b:{tag}:entries", f"b:{tag}:exp", f"b:{tag}:events", f"b:{tag}:lost"]
    ret, cap = 604800000, 1000000
    load = loadavg()
    out = {"machine": B.machine(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "n": N, "redis_priority": r.priority, "loadavg_before": load}

    addr = lambda i: f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}/32"
    decisions = [("EVALSHA", sha["fixed_window"], 1, f"b:rl:{{d|k{i}}}:fw:60000", 1, 100, 60000) for i in range(N)]
    out["decision"] = phase(c, "decision", decisions,
                            lambda i, r: None if r[0] == "1" else "expected allowed")

    def ban(i, after, prefix):
        cidr = addr(i)
        return ("EVALSHA", sha["deny_ban"], 7, *lists, f"b:{tag}:ban:{prefix}:{cidr}:count",
                f"b:{tag}:ban:{prefix}:{cidr}:offences", cidr, after, 600000, 900000, 4, 604800000,
                2592000000, "bench", "rule:bench", "e0", ret, cap, "0")

    out["ban_count"] = phase(c, "ban_count", [ban(i, 1000000, "c") for i in range(N)],
                             lambda i, r: None if r == ["counted", "1"] else "expected counted 1")
    out["ban_offence"] = phase(c, "ban_offence", [ban(i, 1, "o") for i in range(N)],
                               lambda i, r: None if r[0] == "banned" and r[1] == str(i + 1) else f"expected banned, seq {i + 1}")
    upserts = [("EVALSHA", sha["allow_upsert"], 5, *lists, addr(N + i), 900000, "manual", "bench", "e0", ret, cap, "0")
               for i in range(N)]
    out["deny_upsert"] = phase(c, "deny_upsert", upserts,
                               lambda i, r: None if r[0] == str(N + i + 1) else f"expected seq {N + i + 1}")
    # The stream holds every ban, by its actor.
    events = c.call("XRANGE", lists[3], "-", "+")
    bans = sum(1 for _, fields in events if "rule:bench" in fields)
    if bans != N:
        sys.exit(f"bench_ban_step: the stream holds {bans} ban events, expected {N}")
    out["loadavg_after"] = loadavg()
    r.cli("SHUTDOWN", "NOSAVE")
    for p in PROCS:
        if p.poll() is None:
            p.terminate()
    day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d-%H%M%S")
    path = os.path.join(ROOT, "bench", "results", f"{day}-ban-step.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
    d = out["decision"]["usec_per_call"]
    for k in ("ban_count", "ban_offence", "deny_upsert"):
        print(f"{k:>12}: {out[k]['usec_per_call'] / d:.2f} × a decision's Redis CPU")
    print(f"load average {load} → {out['loadavg_after']}; written: {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
