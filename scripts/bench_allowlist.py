#!/usr/bin/env python3
"""The allowlist at scale (issue 17): on this machine, with its own Redis and
release `tollgate serve` processes on loopback, for each list size:

- time to ready of 8 nodes starting at once (a fleet restart: jittered, paged
  snapshots), while a client sends /check traffic to a limited rule on the
  same Redis; the limiter's fallbacks during it (tollgate_decisions_total
  outcome fallback_*);
- the largest single Redis call on the allowlist's keys (SLOWLOG, every call
  logged: Redis 7 logs the commands a script calls as well, and logging them
  adds to the script's own time, so script times here err high);
- node RSS growth over an empty-list node, per entry;
- propagation p99: 100 adds, each timed until all 8 nodes let the address
  through a `require` gate;
- reaper: N entries due in the same second, with one node following: time
  until all are reaped, largest reaper call, exactly one expire event each;
- restore: `allow export` of the largest size, then `allow restore` of that
  file: wall time, the CLI's peak RSS, its largest Redis call.

Usage: scripts/bench_allowlist.py [SIZES...]   (default 100000 1000000)
       PARTS=ipv4,ipv6,reaper,restore (the default: all; IPv6 and restore run the largest size)
Redis runs at nice -15 and SCHED_FIFO where this may raise it (root): see
bench_procs.prioritise_redis; each result says what it got.
Prints a JSON line per size. Run on release builds (cargo build --release).
"""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

from allowlist_fill import allow_key, entry_cidr, fill_commands, hash_tag
from bench_load import work_dir
from bench_procs import BIN, PROCS, free_port, prioritise_redis, spawn, start_redis, wait_for

TOKEN = "bench-admin-token"  # at least 16 bytes, as tollgate requires
NODES = int(os.environ.get("NODES", "8"))
# Long waits: a fleet resyncing a million entries on a shared machine.
WAIT_S = 300
# SLOWLOG logs every call (threshold 0): the limiter's too, a few thousand a
# second, so it must hold a whole resync's worth (checked after each).
SLOWLOG_LEN = 3_000_000

CONFIG = """
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"

[redis]
url = "redis://127.0.0.1:{redis}"
prefix = "{prefix}"
timeout = "25ms"

[client_ip]
trusted_proxies = ["127.0.0.1/32"]

[allowlist]
reap_interval = "1s"

[[rule]]
name = "admin"
match = {{ path_prefix = "/admin" }}
allowlist = "require"

[[rule]]
name = "api"
match = {{ path_prefix = "/api" }}
limits = ["1000000000/h"]
on_redis_error = "allow"

# scripts/bench_propagation.py's bans: an address's 2nd login is limited and banned.
[[rule]]
name = "login"
match = {{ path_prefix = "/login" }}
limits = ["1/h"]
ban = {{ after = 1, within = "1h", for = "1h" }}
"""


def enc(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Redis:
    def __init__(self):
        p, self.port = start_redis()
        self.priority = prioritise_redis(p)

    def cli(self, *args):
        return subprocess.run(["redis-cli", "-p", str(self.port), *map(str, args)], capture_output=True, text=True).stdout.strip()

    def pipe(self, commands):
        """Send RESP commands pipelined; wait for all replies (a PING at the end)."""
        s = socket.create_connection(("127.0.0.1", self.port))
        buf = []
        for i, c in enumerate(commands):
            buf.append(enc(*c))
            if i % 2000 == 1999:
                s.sendall(b"".join(buf))
                buf = []
        buf.append(enc("PING"))
        s.sendall(b"".join(buf))
        data = b""
        while not data.endswith(b"+PONG\r\n"):
            data += s.recv(1 << 20)
        s.close()

    def slowlog(self, tag):
        """(µs, command) of every logged call on keys with this hash tag."""
        out = subprocess.run(["redis-cli", "-p", str(self.port), "--json", "SLOWLOG", "GET", "-1"], capture_output=True, text=True).stdout
        calls = []
        for e in json.loads(out or "[]"):
            args = " ".join(map(str, e[3]))
            if tag in args:
                calls.append((int(e[2]), args[:100]))
        return calls


def populate(r, prefix, n, expires, v6=False):
    r.pipe(fill_commands(prefix, (entry_cidr(i, v6) for i in range(n)), expires))


def start_node(r, prefix):
    port, admin = free_port(), free_port()
    path = os.path.join(work_dir(), f"tollgate-{port}.toml")
    with open(path, "w") as f:
        f.write(CONFIG.format(port=port, admin=admin, redis=r.port, prefix=prefix))
    p = spawn([BIN, "serve", "--config", path], env={**os.environ, "RUST_LOG": "warn", "TOLLGATE_ADMIN_TOKEN": TOKEN})
    return {"p": p, "port": port, "admin": admin}


def ready(node):
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{node['admin']}/readyz", timeout=2).status == 200
    except Exception:
        return False


def rss_kb(node):
    with open(f"/proc/{node['p'].pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))


def metric_sum(node, name, **labels):
    text = urllib.request.urlopen(f"http://127.0.0.1:{node['admin']}/metrics").read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def check(node, path, ip, conn=None):
    c = conn or http.client.HTTPConnection("127.0.0.1", node["port"], timeout=5)
    c.request("GET", "/check", headers={"X-Forwarded-Uri": path, "X-Forwarded-For": ip})
    r = c.getresponse()
    r.read()
    return r.status


def traffic(nodes, stop, counts):
    if not nodes:
        return
    conns = [http.client.HTTPConnection("127.0.0.1", n["port"], timeout=5) for n in nodes]
    i = 0
    while not stop.is_set():
        k = i % len(nodes)
        try:
            check(nodes[k], "/api/x", f"198.18.{(i >> 8) & 255}.{i & 255}", conns[k])
            counts["sent"] += 1
        except Exception:
            conns[k] = http.client.HTTPConnection("127.0.0.1", nodes[k]["port"], timeout=5)
        i += 1


def fleet(n, v6=False):
    r = Redis()
    r.cli("CONFIG", "SET", "slowlog-log-slower-than", "0")
    r.cli("CONFIG", "SET", "slowlog-max-len", str(SLOWLOG_LEN))
    prefix = "b"
    empty = start_node(r, "empty")
    wait_for(lambda: ready(empty), "empty node", WAIT_S)
    time.sleep(1)
    base_rss = rss_kb(empty)
    t = time.time()
    populate(r, prefix, n, lambda i: 0, v6)
    populate_s = time.time() - t
    r.cli("SLOWLOG", "RESET")
    r.cli("CONFIG", "RESETSTAT")
    nodes = [start_node(r, prefix) for _ in range(NODES)]
    started = time.time()
    wait_for(lambda: all(metric_sum(x, "tollgate_decisions_total") >= 0 for x in nodes), "nodes up", 60)
    stop, counts = threading.Event(), {"sent": 0}
    # nodes[0] gets no traffic: its RSS growth is the allowlist's alone.
    th = threading.Thread(target=traffic, args=(nodes[1:], stop, counts))
    th.start()
    ready_at = {}
    while len(ready_at) < len(nodes):
        for i, x in enumerate(nodes):
            if i not in ready_at and ready(x):
                ready_at[i] = time.time() - started
        time.sleep(0.05)
    stop.set()
    th.join()
    # The resync's calls, read before the baseline's traffic can push them out
    # of SLOWLOG (it keeps the newest SLOWLOG_LEN); checked whole below.
    calls = r.slowlog(hash_tag(prefix))
    logged = int(r.cli("SLOWLOG", "LEN"))
    if logged >= SLOWLOG_LEN:
        sys.exit(f"bench: SLOWLOG filled up ({logged} calls): the resync's first calls are lost; raise SLOWLOG_LEN")
    pages = sum(1 for c in calls if c[1].startswith("HSCAN"))
    # HSCAN's COUNT is a hint: a page holds 200 entries or a few more.
    if pages < 0.9 * NODES * n / 200:
        sys.exit(f"bench: SLOWLOG holds {pages} snapshot pages, too few for {NODES} nodes x {n} entries / 200")
    def fallbacks_now():
        return sum(metric_sum(x, "tollgate_decisions_total", rule="api", outcome=o) for x in nodes for o in ("fallback_allowed", "fallback_limited"))
    fallbacks = fallbacks_now()
    # Baseline: the same traffic for as long again with every node ready and
    # no snapshot running, so that fallbacks the loaded machine causes on its
    # own are not taken for the resyncs'.
    stop, base_counts = threading.Event(), {"sent": 0}
    th = threading.Thread(target=traffic, args=(nodes[1:], stop, base_counts))
    th.start()
    time.sleep(max(ready_at.values()))
    stop.set()
    th.join()
    baseline_fallbacks = fallbacks_now() - fallbacks
    time.sleep(1)
    rss = [rss_kb(nodes[0])]
    largest = max(calls) if calls else (0, "")
    result = {
        "entries": n, "family": "ipv6 /128" if v6 else "ipv4 /32", "nodes": NODES, "redis_priority": r.priority,
        "populate_s": round(populate_s, 1),
        "ready_s": {"min": round(min(ready_at.values()), 2), "max": round(max(ready_at.values()), 2)},
        "checks_during_resync": counts["sent"], "limiter_fallbacks": fallbacks,
        "checks_after_ready (baseline)": base_counts["sent"], "limiter_fallbacks_after_ready (baseline)": baseline_fallbacks,
        "largest_allowlist_call_us": largest[0], "largest_call": largest[1], "slowlog_entries_on_allowlist_keys": len(calls), "snapshot_pages": pages,
        "calls_over_1ms": sum(1 for c in calls if c[0] > 1000),
        "node_rss_mb (no traffic)": round(max(rss) / 1024, 1), "empty_node_rss_mb": round(base_rss / 1024, 1),
        "rss_growth_bytes_per_entry": round((max(rss) - base_rss) * 1024 / n, 1),
    }
    if not v6:
        result["propagation_ms"] = propagation(nodes)
    for x in nodes + [empty]:
        x["p"].terminate()
    return result


def propagation(nodes, adds=100):
    times = []
    for k in range(adds):
        ip = f"203.0.{k // 250}.{k % 250 + 1}"
        body = json.dumps({"cidr": ip, "ttl": "1h"})
        t = time.time()
        req = urllib.request.Request(f"http://127.0.0.1:{nodes[0]['admin']}/v1/allowlist", data=body.encode(), method="POST",
                                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        urllib.request.urlopen(req).read()
        pending = list(nodes)
        while pending:
            pending = [x for x in pending if check(x, "/admin", ip) != 200]
        times.append((time.time() - t) * 1000)
    times.sort()
    return {"p50": round(times[len(times) // 2], 1), "p99": round(times[int(len(times) * 0.99) - 1], 1), "max": round(times[-1], 1)}


def reaper(n):
    r = Redis()
    r.cli("CONFIG", "SET", "slowlog-log-slower-than", "0")
    r.cli("CONFIG", "SET", "slowlog-max-len", str(SLOWLOG_LEN))
    prefix = "r"
    now = int(r.cli("TIME").split()[0]) * 1000
    due = now + 20_000
    populate(r, prefix, n, lambda i: due + i % 1000)
    node = start_node(r, prefix)
    wait_for(lambda: ready(node), "node", WAIT_S)
    r.cli("SLOWLOG", "RESET")
    def redis_ms():
        sec, us = r.cli("TIME").split()
        return int(sec) * 1000 + int(us) // 1000
    while redis_ms() < due:
        time.sleep(0.005)
    # From the first entry's due time (they fall due over one second, and the
    # reaper runs each `reap_interval`, 1 s) until none is left.
    t0 = time.time()
    wait_for(lambda: r.cli("ZCARD", allow_key(prefix, "exp")) == "0", "reaped", 600)
    reaped_s = time.time() - t0
    calls = [c for c in r.slowlog(hash_tag(prefix)) if c[1].startswith("EVALSHA")]
    events = int(r.cli("XLEN", allow_key(prefix, "events")))
    if events != n or int(r.cli("HLEN", allow_key(prefix, "entries"))) != 0:
        sys.exit(f"bench: {events} expire events for {n} entries, or entries left")
    node["p"].terminate()
    redis_s = sum(c[0] for c in calls) / 1e6
    return {"expiring_in_one_second": n, "redis_priority": r.priority, "reaped_within_s_of_first_due": round(reaped_s, 2),
            "reaper_redis_time_s": round(redis_s, 3), "entries_per_redis_s": round(n / redis_s),
            "largest_reaper_call_us": max(c[0] for c in calls), "reaper_calls": len(calls), "expire_events": events}


def restore(n):
    """`tollgate allow export` of n entries, then `tollgate allow restore` of
    that file under another prefix: the restore's wall time and peak RSS
    (/usr/bin/time), its largest Redis call (SLOWLOG), entries checked."""
    r = Redis()
    r.cli("CONFIG", "SET", "slowlog-log-slower-than", "0")
    r.cli("CONFIG", "SET", "slowlog-max-len", str(SLOWLOG_LEN))
    future = (int(r.cli("TIME").split()[0]) + 86_400) * 1000
    populate(r, "x", n, lambda i: future + i % 1000 if i % 10 else 0)
    path = os.path.join(work_dir(), "export.json")
    redis_url = f"redis://127.0.0.1:{r.port}"
    with open(path, "wb") as f:
        subprocess.run([BIN, "allow", "export", "--redis", redis_url, "--prefix", "x"], stdout=f, check=True)
    r.cli("SLOWLOG", "RESET")
    timed = subprocess.run(["/usr/bin/time", "-f", "%e %M", BIN, "allow", "restore", path, "--redis", redis_url,
                            "--prefix", "y"], capture_output=True, text=True)
    if timed.returncode != 0 or f"restored {n} entries" not in timed.stdout + timed.stderr:
        sys.exit(f"bench: restore failed: {timed.stdout}{timed.stderr}")
    wall_s, max_rss_kb = timed.stderr.strip().splitlines()[-1].split()
    if int(r.cli("HLEN", allow_key("y", "entries"))) != n:
        sys.exit("bench: the restored list does not hold every entry")
    # Redis 7 also logs the commands a script calls (threshold 0): count the scripts.
    calls = [c for c in r.slowlog(hash_tag("y")) if c[1].startswith("EVAL")]
    largest = max(calls)
    return {"restore_entries": n, "redis_priority": r.priority, "export_mb": round(os.path.getsize(path) / 1e6, 1),
            "restore_s": float(wall_s), "restore_max_rss_mb": round(int(max_rss_kb) / 1024, 1),
            "restore_calls": len(calls), "largest_restore_call_us": largest[0], "largest_call": largest[1][:60]}


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    sizes = [int(a) for a in sys.argv[1:]] or [100_000, 1_000_000]
    parts = os.environ.get("PARTS", "ipv4,ipv6,reaper,restore").split(",")
    try:
        if "ipv4" in parts:
            for n in sizes:
                print(json.dumps(fleet(n)), flush=True)
        if "ipv6" in parts:
            print(json.dumps(fleet(sizes[-1], v6=True)), flush=True)
        if "reaper" in parts:
            print(json.dumps(reaper(100_000)), flush=True)
        if "restore" in parts:
            print(json.dumps(restore(sizes[-1])), flush=True)
    finally:
        for p in PROCS:
            p.terminate()


if __name__ == "__main__":
    main()
