#!/usr/bin/env python3
"""List propagation read from the nodes themselves (issue 28), not from a
polling client: every node exports `tollgate_list_apply_lag_seconds{list}`, a
histogram of (the node's Redis-synced clock when it applied a followed event)
− (the time Redis stamped the event: its stream id). Both are whole
milliseconds, so every observation is a whole number of ms; the buckets have
a bound at each ms up to 5 (src/allowlist/status.rs).

For 1, 4 and 16 followers (FOLLOWERS, default "1,4,16"): its own Redis (at
nice -15 and SCHED_FIFO where allowed, as scripts/bench_allowlist.py), one
writer node and that many follower nodes (release `tollgate serve`), then
ENTRIES (default 200) allowlist adds, as many denylist adds and as many
overrides (`PUT /v1/overrides/api/100.64.x.y`, issue 29) through the writer's
admin API, paced (PACE_MS per round of three writes, default 10), each
answer checked (201, 201, 200). Afterwards every follower's histogram is scraped (the delta
over the writes; each follower must have counted every event of both lists)
and the buckets of all followers are summed per list. Reported per list:

- p50 / p99 as the smallest bucket bound holding that share of the
  observations (exact for whole-ms values: "p99 = 2 ms" means 99 % of the
  (event, follower) pairs were applied at most 2 whole ms after Redis
  stamped the event), and the same by linear interpolation inside the bucket
  (the Prometheus histogram_quantile way), for comparison;
- the worst follower's p99 (per node).

These are quantiles over (event, follower) pairs, not of "the last of the N
followers" per event (a histogram per node cannot give that); the worst
node's p99 bounds it from below.

Bans (BANS, default 200): then, on the same fleet, BANS client addresses each
log in twice through the writer's `/check` (a `1/h` rule with `ban = {after =
1, ...}`): the second answer is a 429 and the offence, so the writer's ban
step writes a deny entry (actor `rule:login`) through the denylist's script
and stream; a third request to the writer must be a 403 (the banning replica
refuses the next request), the writer must count BANS bans, and every
follower must apply BANS more deny events. The "ban" row is the deny
histogram's delta over that phase alone: from the moment Redis stamped the
ban (inside the ban step, one script call after the offending decision) to
each follower applying it.

Usage: scripts/bench_propagation.py   (after cargo build --release)
Writes bench/results/<date>-propagation.json.
"""

import datetime
import http.client
import json
import os
import sys
import time
import urllib.request

from bench_allowlist import TOKEN, Redis, check, metric_sum, ready, start_node
from bench_load import loadavg
from bench_procs import PROCS, ROOT, wait_for
import bench as B

ENTRIES = int(os.environ.get("ENTRIES", "200"))
BANS = int(os.environ.get("BANS", "200"))
PACE_MS = float(os.environ.get("PACE_MS", "10"))
FOLLOWERS = [int(x) for x in os.environ.get("FOLLOWERS", "1,4,16").split(",")]
METRIC = "tollgate_list_apply_lag_seconds"


def buckets(node):
    """{list: [(le, cumulative count)]} of one node's apply lag histogram."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{node['admin']}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if not line.startswith(METRIC + "_bucket{"):
            continue
        labels = dict(kv.split("=", 1) for kv in line[line.index("{") + 1:line.index("}")].split(","))
        lst, le = labels["list"].strip('"'), labels["le"].strip('"')
        out.setdefault(lst, []).append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    return {k: sorted(v) for k, v in out.items()}


def delta(after, before):
    return {lst: [(le, n - dict(before.get(lst, [])).get(le, 0.0)) for le, n in rows] for lst, rows in after.items()}


def quantile(rows, q):
    """(bucket bound, interpolated) q-quantile from cumulative (le, n) rows, in ms."""
    total = rows[-1][1]
    want = q * total
    prev_le, prev_n = 0.0, 0.0
    for le, n in rows:
        if n >= want:
            if le == float("inf"):
                return float("inf"), float("inf")
            frac = (want - prev_n) / (n - prev_n) if n > prev_n else 1.0
            return le * 1000, round((prev_le + (le - prev_le) * frac) * 1000, 3)
        prev_le, prev_n = le, n
    return float("inf"), float("inf")


def add(node, path, cidr):
    body = json.dumps({"cidr": cidr, "ttl": "1h"}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{node['admin']}/v1/{path}", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        if r.status != 201:
            sys.exit(f"bench_propagation: POST /v1/{path} answered {r.status}, expected 201")


def override(node, rule, key):
    """An override through the admin API: `PUT /v1/overrides/{rule}/{key}`."""
    body = json.dumps({"limits": ["100/m"], "ttl": "1h"}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{node['admin']}/v1/overrides/{rule}/{key}", data=body,
                                 method="PUT", headers={"Authorization": f"Bearer {TOKEN}",
                                                        "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        if r.status != 200:
            sys.exit(f"bench_propagation: PUT /v1/overrides/{rule}/{key} answered {r.status}, expected 200")


def bans(writer, nodes, before):
    """Ban BANS addresses through the writer's limiter: (histograms before,
    after, one follower's answer to the last banned address)."""
    conn = http.client.HTTPConnection("127.0.0.1", writer["port"], timeout=5)
    bans_before = metric_sum(writer, "tollgate_bans_total")
    ip = None
    for i in range(BANS):
        ip = f"192.0.{i // 250}.{i % 250 + 1}"
        got = [check(writer, "/login", ip, conn) for _ in range(3)]
        if got != [200, 429, 403]:
            sys.exit(f"bench_propagation: {ip} got {got} from the writer, expected [200, 429, 403] (allowed, limited and banned, then denied)")
        time.sleep(PACE_MS / 1000)
    banned = metric_sum(writer, "tollgate_bans_total") - bans_before
    if banned != BANS:
        sys.exit(f"bench_propagation: the writer counted {banned} bans, expected {BANS}")
    deadline = time.time() + 30
    while True:
        after = [buckets(x) for x in nodes]
        got = [delta(a, b)["deny"][-1][1] for a, b in zip(after, before)]
        if all(g >= BANS for g in got):
            break
        if time.time() > deadline:
            sys.exit(f"bench_propagation: followers applied {got} ban events, expected {BANS} each")
        time.sleep(0.2)
    # What a client sees: the last banned address, asked of a follower (any path).
    status = check(nodes[-1], "/anything", ip)
    if status != 403:
        sys.exit(f"bench_propagation: a follower answered {status} to banned {ip}, expected 403")
    return before, after, {"ip": ip, "path": "/anything", "status": status}


def run(followers):
    r = Redis()
    prefix = f"p{followers}"
    writer = start_node(r, prefix)
    nodes = [start_node(r, prefix) for _ in range(followers)]
    wait_for(lambda: ready(writer) and all(ready(x) for x in nodes), f"{followers} followers ready", 120)
    time.sleep(1)
    before = [buckets(x) for x in nodes]
    load = loadavg()
    t0 = time.time()
    for i in range(ENTRIES):
        add(writer, "allowlist", f"203.0.{i // 250}.{i % 250 + 1}")
        time.sleep(PACE_MS / 3000)
        add(writer, "denylist", f"198.51.{i // 250}.{i % 250 + 1}")
        time.sleep(PACE_MS / 3000)
        override(writer, "api", f"100.64.{i // 250}.{i % 250 + 1}")
        time.sleep(PACE_MS / 3000)
    write_s = time.time() - t0
    # Every follower must count every event of both lists (the writes are applied within seconds).
    deadline = time.time() + 30
    while True:
        after = [buckets(x) for x in nodes]
        got = [{lst: rows[-1][1] for lst, rows in delta(a, b).items()} for a, b in zip(after, before)]
        if all(g.get("allow", 0) >= ENTRIES and g.get("deny", 0) >= ENTRIES and g.get("override", 0) >= ENTRIES
               for g in got):
            break
        if time.time() > deadline:
            sys.exit(f"bench_propagation: followers counted {got}, expected {ENTRIES} events per list each")
        time.sleep(0.2)
    # What a client sees: an overridden key, asked of a follower, is under the override's 100/m.
    key = f"100.64.{(ENTRIES - 1) // 250}.{(ENTRIES - 1) % 250 + 1}"
    req = urllib.request.Request(f"http://127.0.0.1:{nodes[-1]['port']}/v1/check",
                                 data=json.dumps({"rule": "api", "key": key}).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        answer = json.loads(resp.read())
    if answer.get("limit") != 100 or answer.get("allowed") is not True:
        sys.exit(f"bench_propagation: a follower answered {answer} for overridden {key}, expected allowed under 100/m")
    ban_before, ban_after, banned_ip = bans(writer, nodes, after)
    out = {"followers": followers, "entries_per_list": ENTRIES, "bans": BANS, "pace_ms": PACE_MS,
           "write_s": round(write_s, 2), "redis_priority": r.priority, "loadavg_before": load,
           "loadavg_after": loadavg(), "banned_ip_on_a_follower": banned_ip,
           "overridden_key_on_a_follower": {"key": key, "answer": answer}}
    for row, lst, a_all, b_all in (("allow", "allow", after, before), ("deny", "deny", after, before),
                                   ("override", "override", after, before), ("ban", "deny", ban_after, ban_before)):
        per_node = [delta(a, b)[lst] for a, b in zip(a_all, b_all)]
        summed = [(le, sum(rows[i][1] for rows in per_node)) for i, (le, _) in enumerate(per_node[0])]
        p50, p50i = quantile(summed, 0.5)
        p99, p99i = quantile(summed, 0.99)
        worst = max(quantile(rows, 0.99)[0] for rows in per_node)
        out[row] = {"observations": summed[-1][1], "p50_ms_bucket": p50, "p50_ms_interpolated": p50i,
                    "p99_ms_bucket": p99, "p99_ms_interpolated": p99i, "worst_follower_p99_ms_bucket": worst,
                    "buckets_ms": {("+Inf" if le == float("inf") else f"{le * 1000:g}"): n for le, n in summed}}
    for x in [writer, *nodes]:
        x["p"].terminate()
    for x in [writer, *nodes]:
        x["p"].wait(10)
    r.cli("SHUTDOWN", "NOSAVE")
    return out


def main():
    results = {"machine": B.machine(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "runs": []}
    print(f"bench_propagation: load average {results['machine']['loadavg_at_start']}", flush=True)
    try:
        for n in FOLLOWERS:
            res = run(n)
            results["runs"].append(res)
            print(json.dumps({k: v for k, v in res.items()}), flush=True)
    finally:
        for p in PROCS:
            if p.poll() is None:
                p.terminate()
    results["machine"]["loadavg_at_end"] = loadavg()
    day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d-%H%M%S")
    out = os.path.join(ROOT, "bench", "results", f"{day}-propagation.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"\n{'followers':>9} {'list':>5} {'p50 ms (bucket / interp.)':>26} {'p99 ms (bucket / interp.)':>26} {'worst node p99':>15}")
    for res in results["runs"]:
        for lst in ("allow", "deny", "override", "ban"):
            d = res[lst]
            print(f"{res['followers']:>9} {lst:>5} {d['p50_ms_bucket']:>12g} / {d['p50_ms_interpolated']:<11g} "
                  f"{d['p99_ms_bucket']:>12g} / {d['p99_ms_interpolated']:<11g} {d['worst_follower_p99_ms_bucket']:>15g}")
    print(f"load average: start {results['machine']['loadavg_at_start']}, end {results['machine']['loadavg_at_end']}")
    print(f"written: {os.path.relpath(out, ROOT)}")


if __name__ == "__main__":
    main()
