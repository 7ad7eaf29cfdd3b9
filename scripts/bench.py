#!/usr/bin/env python3
"""tollgate's benchmark harness (run it through scripts/bench.sh).

Everything runs on this machine, on loopback, in one run, so the numbers can be
compared with each other: Redis's own EVALSHA rate for tollgate's fixed_window
script is the ceiling, and tollgate's figures are reported as ratios of it.
Every load is bounded in time. Prints one table and writes
bench/results/<UTC date>.json with the machine it ran on.
"""

import datetime
import http.client
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "tollgate")
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
CONNECTIONS = 64
KEYS = 10_000
WORK = tempfile.mkdtemp(prefix="tollgate-bench-")
PROCS = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"bench: {what} did not come up")


def spawn(args, **kw):
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    PROCS.append(p)
    return p


def stop(p):
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()


# === Redis ===


def start_redis():
    port = free_port()
    spawn(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
    wait_for(lambda: redis(port, "PING") == "PONG", "redis-server")
    return port


def redis(port, *args, stdin=None):
    out = subprocess.run(["redis-cli", "-p", str(port), *args], input=stdin, capture_output=True, text=True)
    return out.stdout.strip()


def redis_info(port, field):
    m = re.search(rf"^{field}:(\S+)", redis(port, "INFO"), re.M)
    return m.group(1) if m else None


def resp(*args):
    """One command in RESP, for redis-cli --pipe."""
    out = [f"*{len(args)}\r\n"]
    for a in args:
        a = str(a)
        out.append(f"${len(a.encode())}\r\n{a}\r\n")
    return "".join(out)


# === tollgate ===

CONFIG = """
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
{redis}
[client_ip]
trusted_proxies = ["127.0.0.1/32"]

[[rule]]
name = "deny"
match = {{ path_prefix = "/deny" }}
key = "ip"
limits = ["1/h"]

[[rule]]
name = "gate"
match = {{ path_prefix = "/gate" }}
allowlist = "require"

[[rule]]
name = "bench"
match = {{ path_prefix = "/allow" }}
key = "ip"
limits = ["1000000000/h"]
"""


ADMIN_TOKEN = "bench-token"


def start_tollgate(redis_port, prefix=None):
    port, admin = free_port(), free_port()
    prefix = prefix or f"bench{port}"
    section = f'[redis]\nurl = "redis://127.0.0.1:{redis_port}"\nprefix = "{prefix}"\n' if redis_port else ""
    path = os.path.join(WORK, f"tollgate-{port}.toml")
    with open(path, "w") as f:
        f.write(CONFIG.format(port=port, admin=admin, redis=section))
    p = spawn([BIN, "serve", "--config", path], env={**os.environ, "RUST_LOG": "warn", "TOLLGATE_ADMIN_TOKEN": ADMIN_TOKEN})
    wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz").status == 200, "tollgate")
    return p, port, admin


def metrics(admin):
    return urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics").read().decode()


def metric_sum(text, name, **labels):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        m = re.search(r"VmHWM:\s+(\d+) kB", f.read())
    return int(m.group(1)) / 1024


# === load ===

WRK_SCRIPT = """
local keys = {keys}
local i = 0
local method, path, body = "{method}", "{path}", {body}
request = function()
  i = i + 1
  local k = (i * 7919) % keys
  local headers = {{ ["X-Forwarded-For"] = "198." .. (18 + math.floor(k / 65536)) .. "." .. math.floor(k / 256) % 256 .. "." .. k % 256 }}
  if body then
    headers["Content-Type"] = "application/json"
    return wrk.format(method, path, headers, string.format(body, k))
  end
  return wrk.format(method, path, headers)
end
{delay}
done = function(summary, latency, requests)
  io.write(string.format("JSON {{\\"requests\\":%d,\\"duration_us\\":%d,\\"p50\\":%d,\\"p99\\":%d,\\"p999\\":%d,\\"non2xx\\":%d,\\"errors\\":%d}}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def wrk(port, path, seconds=SECONDS, keys=KEYS, method="GET", body=None, connections=CONNECTIONS, delay_ms=None):
    script = os.path.join(WORK, f"wrk-{port}-{abs(hash((path, keys, body, delay_ms)))}.lua")
    delay = f"delay = function() return {delay_ms} end" if delay_ms else ""
    with open(script, "w") as f:
        f.write(WRK_SCRIPT.format(keys=keys, method=method, path=path, body=json.dumps(body) if body else "nil", delay=delay))
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", script, f"http://127.0.0.1:{port}{path}"],
        capture_output=True,
        text=True,
    ).stdout
    m = re.search(r"^JSON (.*)$", out, re.M)
    if not m:
        sys.exit(f"bench: wrk gave no result:\n{out}")
    r = json.loads(m.group(1))
    return {
        "rps": r["requests"] / (r["duration_us"] / 1e6),
        "p50_ms": r["p50"] / 1000,
        "p99_ms": r["p99"] / 1000,
        "p999_ms": r["p999"] / 1000,
        "non2xx": r["non2xx"],
        "errors": r["errors"],
        "requests": r["requests"],
    }


def wrk_paced(port, path, rate):
    """Latency at about `rate` requests/s: each connection waits 1 ms after every
    answer (wrk's delay()), so each offers a bounded rate; a short first run
    measures that per-connection rate and sets the number of connections.
    Cheap for the client, unlike a Go load generator that would take a core
    of its own on this 2-core machine."""
    probe_conns = max(2, round(rate / 1000))
    probe = wrk(port, path, seconds=2, connections=probe_conns, delay_ms=1)
    per_conn = max(probe["rps"] / probe_conns, 1.0)
    conns = max(2, round(rate / per_conn))
    r = wrk(port, path, connections=conns, delay_ms=1)
    return {"target_rps": round(rate), "connections": conns, "achieved_rps": r["rps"],
            "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "p999_ms": r["p999_ms"]}


def hey_fixed_rate(port, path, rate):
    """Latency at a fixed offered rate: 64 workers each limited to rate/64 per second."""
    per_worker = max(1, int(rate / CONNECTIONS))
    out = subprocess.run(
        ["hey", "-z", f"{SECONDS}s", "-c", str(CONNECTIONS), "-q", str(per_worker), "-H", "X-Forwarded-For: 198.18.0.1",
         f"http://127.0.0.1:{port}{path}"],
        capture_output=True,
        text=True,
    ).stdout
    pct = {int(p): float(s) * 1000 for p, s in re.findall(r"^\s+(\d+)%% in ([\d.]+) secs".replace("%%", "%"), out, re.M)}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return {"offered_rps": per_worker * CONNECTIONS, "achieved_rps": float(rps.group(1)) if rps else 0.0,
            "p50_ms": pct.get(50), "p99_ms": pct.get(99)}


def ceiling(redis_port, pipeline):
    sha = redis(redis_port, "SCRIPT", "LOAD", open(os.path.join(ROOT, "lua", "fixed_window.lua")).read())
    n = 60_000 * SECONDS // 4
    args = ["redis-benchmark", "-p", str(redis_port), "-c", str(CONNECTIONS), "-n", str(n), "-r", str(KEYS), "--csv"]
    if pipeline > 1:
        args += ["-P", str(pipeline)]
    args += ["EVALSHA", sha, "1", "ceil:rl:{r|__rand_int__}:fw:3600000", "1", "1000000000", "3600000"]
    out = subprocess.run(args, capture_output=True, text=True).stdout
    row = [l for l in out.splitlines() if l.startswith('"EVALSHA')][-1]
    cols = [c.strip('"') for c in row.split('","')]
    return {"rps": float(cols[1]), "p50_ms": float(cols[4]), "p99_ms": float(cols[6])}


def redis_memory_per_counter(redis_port, n=100_000):
    """used_memory delta over n fresh counters of each algorithm, one request each."""
    result = {}
    for alg, tag in [("fixed_window", "fw"), ("sliding_window", "sw"), ("sliding_log", "sl"), ("gcra", "gc")]:
        sha = redis(redis_port, "SCRIPT", "LOAD", open(os.path.join(ROOT, "lua", f"{alg}.lua")).read())
        before = int(redis_info(redis_port, "used_memory"))
        # Keys as tollgate names them: prefix, {rule|client IP}, algorithm, period.
        cmds = "".join(resp("EVALSHA", sha, 1, f"tg:rl:{{login|{bench_ip(i)}}}:{tag}:3600000", 1, 100, 3600000)
                       for i in range(n))
        subprocess.run(["redis-cli", "-p", str(redis_port), "--pipe"], input=cmds, capture_output=True, text=True)
        after = int(redis_info(redis_port, "used_memory"))
        sample = redis(redis_port, "MEMORY", "USAGE", f"tg:rl:{{login|{bench_ip(1)}}}:{tag}:3600000")
        result[alg] = {"bytes_per_counter": round((after - before) / n, 1), "memory_usage_sample": int(sample or 0)}
        redis(redis_port, "FLUSHDB")  # our own throwaway Redis
    # sliding_log grows per admitted request: 10 requests on each of n/10 keys.
    sha = redis(redis_port, "SCRIPT", "LOAD", open(os.path.join(ROOT, "lua", "sliding_log.lua")).read())
    before = int(redis_info(redis_port, "used_memory"))
    cmds = "".join(resp("EVALSHA", sha, 1, f"tg:rl:{{login|{bench_ip(i % (n // 10))}}}:sl:3600000", 1, 100, 3600000)
                   for i in range(n))
    subprocess.run(["redis-cli", "-p", str(redis_port), "--pipe"], input=cmds, capture_output=True, text=True)
    after = int(redis_info(redis_port, "used_memory"))
    result["sliding_log"]["bytes_per_stored_request_at_10_per_key"] = round((after - before) / n, 1)
    redis(redis_port, "FLUSHDB")
    return result


def bench_ip(i):
    """The i-th address of 198.18.0.0/15 (the benchmarking range)."""
    return f"198.{18 + i // 65536}.{i // 256 % 256}.{i % 256}"


def load_allowlist(redis_port, prefix, n):
    """n entries (/32s of 198.18.0.0/15) through the allow_upsert script, pipelined."""
    sha = redis(redis_port, "SCRIPT", "LOAD", open(os.path.join(ROOT, "lua", "allow_upsert.lua")).read())
    tag = f"{prefix}:{{{prefix}:allow}}"
    keys = [f"{tag}:meta", f"{tag}:entries", f"{tag}:exp", f"{tag}:events"]
    cmds = "".join(resp("EVALSHA", sha, 4, *keys, f"{bench_ip(i)}/32", 3_600_000, "bench", "bench", "benchepoch", 604_800_000, 1_000_000)
                   for i in range(n))
    subprocess.run(["redis-cli", "-p", str(redis_port), "--pipe"], input=cmds, capture_output=True, text=True)
    return int(redis(redis_port, "HLEN", keys[1]) or 0)


def propagation(redis_port, adds=100, followers=4):
    """Add on one node -> visible on every follower: time from sending the POST
    until each follower's /check lets the new address through a require gate."""
    prefix = f"prop{free_port()}"
    writer = start_tollgate(redis_port, prefix)
    nodes = [start_tollgate(redis_port, prefix) for _ in range(followers)]
    samples = []
    for n in range(adds):
        ip = f"198.19.{n // 256}.{n % 256}"
        seen = [None] * followers
        go = threading.Event()

        def poll(k, port):
            c = http.client.HTTPConnection("127.0.0.1", port)
            go.wait()
            while time.perf_counter() < deadline:
                c.request("GET", "/check", headers={"X-Forwarded-For": ip, "X-Forwarded-Uri": "/gate"})
                r = c.getresponse()
                r.read()
                if r.status == 200:
                    seen[k] = time.perf_counter()
                    return

        threads = [threading.Thread(target=poll, args=(k, node[1])) for k, node in enumerate(nodes)]
        for t in threads:
            t.start()
        admin = http.client.HTTPConnection("127.0.0.1", writer[2])
        body = json.dumps({"cidr": ip, "ttl": "1h"})
        deadline = time.perf_counter() + 5
        t0 = time.perf_counter()
        go.set()
        admin.request("POST", "/v1/allowlist", body, {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"})
        assert admin.getresponse().status == 201
        for t in threads:
            t.join()
        samples += [(t - t0) * 1000 for t in seen if t is not None]
    for p, _, _ in [writer, *nodes]:
        stop(p)
    samples.sort()
    pick = lambda q: round(samples[min(len(samples) - 1, int(q * len(samples)))], 2)
    return {"adds": adds, "followers": followers, "samples": len(samples), "p50_ms": pick(0.5), "p99_ms": pick(0.99)}


def lookup_bench():
    out = subprocess.run(["cargo", "bench", "--bench", "allowlist_lookup", "--", "--warm-up-time", "1", "--measurement-time", "3"],
                         cwd=ROOT, capture_output=True, text=True).stdout
    found = re.findall(r"allowlist lookup, 100k entries/(.+?)\s+time:\s+\[\S+ \S+ (\S+) (\S+)", out)
    units = {"ns": 1, "µs": 1000, "us": 1000}
    return {name.strip(): round(float(v) * units.get(u, 1), 1) for name, v, u in found}


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.*)$", f.read(), re.M)
            cpu = m.group(1) if m else cpu
    except OSError:
        pass
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    ver = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()
    return {"cores": os.cpu_count(), "cpu": cpu, "kernel": platform.release(), "redis": ver, "tollgate_rev": rev,
            "seconds_per_run": SECONDS, "connections": CONNECTIONS, "keys": KEYS}


def main():
    results = {"machine": machine(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    rp = start_redis()
    print(f"bench: {results['machine']['cores']} cores, {results['machine']['cpu']}; {SECONDS}s per run", flush=True)

    results["ceiling_evalsha"] = ceiling(rp, 1)
    results["ceiling_evalsha_p16"] = ceiling(rp, 16)

    # The measured node starts on an allowlist of 100 000 entries.
    prefix = f"rss{free_port()}"
    results["allowlist_entries_loaded"] = load_allowlist(rp, prefix, 100_000)
    tg, port, admin = start_tollgate(rp, prefix)
    results["check_redis_allowed"] = wrk(port, "/allow")
    m = metrics(admin)
    results["check_redis_allowed"]["fallback_decisions"] = metric_sum(m, "tollgate_decisions_total", outcome="fallback_allowed")
    wrk(port, "/deny", seconds=max(2, SECONDS // 3))  # every key over its limit
    results["check_deny_cache"] = wrk(port, "/deny")
    results["v1_check_redis"] = wrk(port, "/v1/check", method="POST", body='{"rule":"bench","key":"user:%d"}')
    peak = results["check_redis_allowed"]["rps"]
    results["check_latency_at_half_peak"] = wrk_paced(port, "/allow", peak / 2)
    results["check_latency_at_half_peak_hey"] = hey_fixed_rate(port, "/allow", peak / 2)
    # Distinct keys seen: one million requests, each a new client address.
    distinct = int(os.environ.get("BENCH_DISTINCT_KEYS", "1000000"))
    wrk(port, "/allow", seconds=max(SECONDS, int(distinct / max(peak, 1)) + 2), keys=distinct)
    results["rss_redis_store_mb"] = round(peak_rss_mb(tg.pid), 1)
    results["rss_redis_store_distinct_keys"] = distinct
    stop(tg)

    tg, port, admin = start_tollgate(None)
    results["check_embedded_allowed"] = wrk(port, "/allow")
    results["rss_embedded_mb"] = round(peak_rss_mb(tg.pid), 1)
    stop(tg)

    results["allowlist_propagation"] = propagation(rp)
    results["allowlist_lookup_ns"] = lookup_bench()
    results["redis_memory"] = redis_memory_per_counter(rp)

    c = results["ceiling_evalsha"]["rps"]
    results["ratios"] = {
        "check_redis_over_ceiling": round(results["check_redis_allowed"]["rps"] / c, 3),
        "deny_cache_over_ceiling": round(results["check_deny_cache"]["rps"] / c, 3),
        "embedded_over_ceiling": round(results["check_embedded_allowed"]["rps"] / c, 3),
        "v1_check_over_ceiling": round(results["v1_check_redis"]["rps"] / c, 3),
        "deny_over_allowed": round(results["check_deny_cache"]["rps"] / results["check_redis_allowed"]["rps"], 3),
    }

    print_table(results)
    day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    out = os.path.join(ROOT, "bench", "results", f"{day}.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nwritten: {os.path.relpath(out, ROOT)}")


def print_table(r):
    def row(name, d, ratio=None):
        p = lambda k: f"{d[k]:.2f}" if d.get(k) is not None else "-"
        rps = d.get("rps", d.get("achieved_rps", 0))
        print(f"{name:<34} {rps:>10.0f} {p('p50_ms'):>8} {p('p99_ms'):>8} {p('p999_ms'):>8} {ratio or '':>8}")

    print(f"\n{'measurement':<34} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'p99.9ms':>8} {'x ceil':>8}")
    row("Redis EVALSHA fixed_window (ceiling)", r["ceiling_evalsha"], "1.000")
    row("Redis EVALSHA, -P 16", r["ceiling_evalsha_p16"])
    q = r["ratios"]
    row("/check, Redis, all allowed", r["check_redis_allowed"], q["check_redis_over_ceiling"])
    row("/check, every key limited", r["check_deny_cache"], q["deny_cache_over_ceiling"])
    row("POST /v1/check, Redis", r["v1_check_redis"], q["v1_check_over_ceiling"])
    row("/check, embedded store", r["check_embedded_allowed"], q["embedded_over_ceiling"])
    h = r["check_latency_at_half_peak"]
    row(f"/check paced, target {h['target_rps']}/s (wrk)", h)
    h = r["check_latency_at_half_peak_hey"]
    row(f"/check at {h['offered_rps']}/s offered (hey)", h)
    print(f"\npeak RSS: {r['rss_redis_store_mb']} MB (Redis store, {r['allowlist_entries_loaded']} allowlist entries, "
          f"{r['rss_redis_store_distinct_keys']} distinct keys), "
          f"{r['rss_embedded_mb']} MB (embedded)")
    for alg, m in r["redis_memory"].items():
        extra = f", {m['bytes_per_stored_request_at_10_per_key']} B per stored request" if "bytes_per_stored_request_at_10_per_key" in m else ""
        print(f"Redis memory, {alg}: {m['bytes_per_counter']} B per counter (MEMORY USAGE {m['memory_usage_sample']} B){extra}")
    print(f"deny path / allowed path: {q['deny_over_allowed']}")
    p = r["allowlist_propagation"]
    print(f"allowlist add -> visible on {p['followers']} followers: p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms ({p['samples']} samples)")
    print("allowlist lookup, 100k entries (ns): " + ", ".join(f"{k} {v}" for k, v in r["allowlist_lookup_ns"].items()))


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in PROCS:
            if p.poll() is None:
                p.kill()
