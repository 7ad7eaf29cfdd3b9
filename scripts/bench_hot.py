#!/usr/bin/env python3
"""Issue 30's figures (hot keys with quota leases, CPU per decision) and
issue 28's decision cost with a 100 000-entry denylist, in one run on this
machine, with the harness of scripts/bench.py (every load run checks its
status mix and sampled bodies and fails otherwise; see bench/README.md).

Parts (BENCH_PARTS, default all, in this order; BENCH_SECONDS per load run,
default 5):

- `hot`: one key (`POST /v1/check {"rule":"hot","key":"tenant:0"}`, a
  `100000000/s` fixed_window rule with `lease = "auto"`, far above the load)
  on 1, 2 and 4 replicas sharing one Redis, and the same key without a lease
  on 1 replica; decisions/s, Redis script calls per decision (EVALSHA + EVAL
  from INFO commandstats over the decisions), tollgate's and Redis's CPU µs
  per decision; against redis-benchmark's unpipelined EVALSHA ceiling
  measured first in the same run.
- `near`: one client on a `2000/s` lease rule (`near`, forward-auth `/check`:
  200 allowed, 429 limited), 2 replicas,
  demand paced to about twice the limit (wrk's delay()); admitted per window
  from Redis's own record (the window's counter, sampled every ~2 ms with
  PEXPIRETIME naming the window) and from the answers; p99 of the decisions.
- `cpu`: tollgate's and Redis's CPU µs per decision for `/check` embedded,
  `/check` Redis (10 000 keys), RLS `ShouldRateLimit` (the load generator of
  bench/grpc_vs_check.rs in its RLS_TARGET mode), and the anchors (HTTP
  floor, hyper + EVALSHA, and with LIMITADOR_BIN Limitador over HTTP and over
  its gRPC RLS with the same generator); the tail: `/check` Redis paced at
  half its peak beside the HTTP floor at the same rate.
- `denylist`: `/check` Redis on a node whose denylist is empty and on one
  holding 100 000 entries (none matching the clients), alternated twice.
- `overrides` (issue 29): the same with 100 000 overrides of the `/allow`
  rule (keys no client has; an overridden key is checked to answer 429 from
  its `deny` override first).

Every run's first request is also made with curl and its answer kept in the
results (bench/results/<date>-hot.json), with the machine and load average.
Run through `BENCH_ONLY=hot scripts/bench.sh` (builds first) or directly
after `cargo build --release` and `cargo bench --bench grpc_vs_check --no-run`.
"""

import datetime
import glob
import json
import os
import socket
import subprocess
import sys
import threading
import time

import bench as B
from allowlist_fill import ENTRY, OVERRIDE_ENTRY, allow_key, entry_cidr, fill_commands
from bench_load import (CONNECTIONS, BenchFailure, Target, children_cpu, cpu_seconds, finish_wrk, loadavg, start_wrk,
                        wrk)
from bench_procs import (ROOT, TARGET, commandstats, free_port, kill_all, metrics, redis,
                         redis_cpu, start_anchor, start_limitador, start_redis, start_tollgate, stop)

SECONDS = B.SECONDS
PARTS = os.environ.get("BENCH_PARTS", "hot,near,cpu,denylist,overrides").split(",")
LIMITADOR_BIN = os.environ.get("LIMITADOR_BIN")
ALL_200 = {"200"}
NEAR_LIMIT = 2000  # LEASE_RULES' `near` rule: 2000/s


def say(msg):
    print(f"bench_hot: {msg}", flush=True)


def curl(port, path, method="GET", headers=None, body=None):
    """One request with curl, its status line, headers and body as text: the
    answer every figure of that run is quoted after."""
    args = ["curl", "-si", "-m", "5", "-X", method, f"http://127.0.0.1:{port}{path}"]
    for k, v in (headers or {}).items():
        args += ["-H", f"{k}: {v}"]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data", body]
    return subprocess.run(args, capture_output=True, text=True).stdout.replace("\r", "")[:700]


def script_calls(rp):
    """Script calls (EVALSHA + EVAL) and every command Redis counted so far."""
    s = commandstats(rp)
    scripts = sum(s.get(c, (0, 0, 0))[0] for c in ("evalsha", "eval"))
    failed = sum(s.get(c, (0, 0, 0))[2] for c in ("evalsha", "eval"))
    others = {k: v[0] for k, v in s.items() if k not in ("evalsha", "eval", "info", "config")}
    return scripts, failed, others


def v1(name, port, rule, expect=ALL_200, body_check='"allowed":true', watch=None):
    return Target(name, port, "/v1/check", expect, method="POST", body='{"rule":"%s","key":"tenant:%%d"}' % rule,
                  body_check=body_check, watch=watch)


def group(targets, seconds, watch, keys, threads, delay_ms=None, conns=None):
    """Load several replicas at once (one wrk each, CONNECTIONS split between
    them); CPU seconds of `watch` and of every wrk over the whole group."""
    before = {n: cpu_seconds(pid) for n, pid in watch.items()}
    wrk0 = children_cpu()
    per = conns or max(1, CONNECTIONS // len(targets))
    procs = [(t, start_wrk(t, seconds, keys=keys, connections=per, threads=threads, delay_ms=delay_ms)) for t in targets]
    runs = [finish_wrk(t, p) for t, p in procs]
    cpu = {n: cpu_seconds(pid) - before[n] for n, pid in watch.items()}
    cpu["wrk"] = children_cpu() - wrk0
    return runs, cpu


# === 1. one hot key, 1/2/4 replicas ===


def hot(rp, ceiling):
    out = {}
    for n, rule in [(1, "hotnl"), (1, "hot"), (2, "hot"), (4, "hot")]:
        label = f"{n} replica(s), {'lease' if rule == 'hot' else 'no lease'}"
        prefix = f"{rule}{n}x{free_port()}"
        nodes = [start_tollgate(rp, prefix) for _ in range(n)]
        time.sleep(2.5)  # the fleet registry beats every 2 s: each replica sees the others
        watch = {f"tollgate{i}": p.pid for i, (p, _, _) in enumerate(nodes)}
        watch["redis"] = B.REDIS_PID
        targets = [v1(f"hot key, {label}, replica {i}", port, rule) for i, (_, port, _) in enumerate(nodes)]
        shown = curl(nodes[0][1], "/v1/check", "POST", body=f'{{"rule":"{rule}","key":"tenant:0"}}')
        redis(rp, "CONFIG", "RESETSTAT")
        r0 = redis_cpu(rp)
        runs, cpu = group(targets, SECONDS, watch, keys=1, threads=2 if n == 1 else 1)
        redis_s = redis_cpu(rp) - r0
        scripts, failed, others = script_calls(rp)
        for _, _, admin in nodes:
            B.no_fallback(admin, label)
        if failed:
            raise BenchFailure(f"{label}: {failed} script calls failed in Redis")
        decisions = sum(r["statuses"].get("200", 0) + 1 for r in runs)  # + each wrk's probe
        secs = max(r["seconds"] for r in runs)
        tg = sum(v for k, v in cpu.items() if k.startswith("tollgate"))
        out[label] = {
            "replicas": n, "lease": rule == "hot", "decisions": decisions, "rps": round(decisions / secs, 1),
            "x_ceiling": round(decisions / secs / ceiling["rps"], 3),
            "script_calls": scripts, "calls_per_decision": round(scripts / decisions, 5), "other_commands": others,
            "tollgate_us_per_decision": round(tg * 1e6 / decisions, 2),
            "redis_us_per_decision": round(redis_s * 1e6 / decisions, 2),
            "wrk_us_per_decision": round(cpu["wrk"] * 1e6 / decisions, 2),
            "cores_used": {"tollgate_all": round(tg / secs, 2), "redis": round(redis_s / secs, 2),
                           "wrk_all": round(cpu["wrk"] / secs, 2)},
            "p99_ms": max(r["p99_ms"] for r in runs), "statuses": [r["statuses"] for r in runs],
            "bad_bodies": sum(r["bad_bodies"] for r in runs), "curl": shown,
            "loadavg_before": runs[0]["loadavg_before"], "loadavg_after": runs[-1]["loadavg_after"],
        }
        say(f"{label}: {out[label]['rps']:.0f}/s, {out[label]['calls_per_decision']} calls/decision, "
            f"tollgate {out[label]['tollgate_us_per_decision']} µs + Redis {out[label]['redis_us_per_decision']} µs")
        for p, _, _ in nodes:
            stop(p)
    return out


# === 2. near the limit ===


class WindowWatch:
    """Samples the hot key's fixed_window counter in Redis every ~2 ms
    (GET and PEXPIRETIME in one MULTI): per window (named by its end, the
    key's absolute expiry) the highest count Redis held: the units charged in
    it, and every admitted unit was charged first (leases take before they
    give). A window's last ~2 ms may escape the samples: its count is then
    read low, never high."""

    def __init__(self, rp, key):
        self.rp, self.key, self.windows, self.stop = rp, key, {}, threading.Event()
        self.t = threading.Thread(target=self.run)
        self.t.start()

    def run(self):
        s = socket.create_connection(("127.0.0.1", self.rp))
        cmd = (f"*1\r\n$5\r\nMULTI\r\n*2\r\n$3\r\nGET\r\n${len(self.key)}\r\n{self.key}\r\n"
               f"*2\r\n$11\r\nPEXPIRETIME\r\n${len(self.key)}\r\n{self.key}\r\n*1\r\n$4\r\nEXEC\r\n").encode()
        f = s.makefile("rb")
        while not self.stop.is_set():
            s.sendall(cmd)
            for _ in range(3):
                f.readline()  # +OK, +QUEUED, +QUEUED
            f.readline()  # *2
            head = f.readline()
            count = None
            if head.startswith(b"$") and head.strip() != b"$-1":
                count = int(f.readline())
            end = int(f.readline()[1:])
            if count is not None and end > 0:
                self.windows[end] = max(self.windows.get(end, 0), count)
            time.sleep(0.002)
        s.close()

    def finish(self):
        self.stop.set()
        self.t.join()
        return [self.windows[k] for k in sorted(self.windows)]


def near(rp):
    n = 2
    prefix = f"near{free_port()}"
    nodes = [start_tollgate(rp, prefix) for _ in range(n)]
    time.sleep(2.5)
    watch = {f"tollgate{i}": p.pid for i, (p, _, _) in enumerate(nodes)}
    watch["redis"] = B.REDIS_PID
    # Forward-auth `/check` (200 allowed, 429 limited; one matching rule, so
    # leased): POST /v1/check answers 200 with "allowed":false when limited.
    mk = lambda i, port: B.check(f"near the limit, replica {i}", port, "/near/x", {"200", "429"}, watch)
    # Calibrate: 2 s at 10 ms between answers per connection, then set the
    # connections for about 2 × the limit.
    probe_runs, _ = group([mk(i, port) for i, (_, port, _) in enumerate(nodes)], 2, watch, keys=1, threads=1,
                          delay_ms=10, conns=8)
    per_conn = sum(r["rps"] for r in probe_runs) / (8 * n)
    conns = max(1, round(2 * NEAR_LIMIT / per_conn / n))
    # The counter as src/keys.rs names it (limit_base + the period in ms).
    key = f"{prefix}:rl:{{near|198.18.0.0}}:fw:1000"  # wrk's one client (keys=1)
    time.sleep(1.1)  # the calibration's last window ends: every window watched below is the run's
    shown = curl(nodes[0][1], "/check", headers={"X-Forwarded-For": "198.18.0.0", "X-Forwarded-Uri": "/near/x"})
    redis(rp, "CONFIG", "RESETSTAT")
    ww = WindowWatch(rp, key)
    runs, cpu = group([mk(i, port) for i, (_, port, _) in enumerate(nodes)], SECONDS, watch, keys=1, threads=1,
                      delay_ms=10, conns=conns)
    counts = ww.finish()
    scripts, failed, _ = script_calls(rp)
    for _, _, admin in nodes:
        B.no_fallback(admin, "near the limit")
    secs = max(r["seconds"] for r in runs)
    admitted = sum(r["statuses"].get("200", 0) for r in runs)
    limited = sum(r["statuses"].get("429", 0) for r in runs)
    full = counts[1:-1]  # windows wholly inside the run
    out = {"limit_per_s": NEAR_LIMIT, "replicas": n, "connections_per_replica": conns, "seconds": secs,
           "demand_per_s": round((admitted + limited) / secs, 1), "admitted_per_s": round(admitted / secs, 1),
           "admitted_share_of_limit_from_answers": round(admitted / secs / NEAR_LIMIT, 3),
           "admitted_total": admitted, "charged_total_redis": sum(counts),
           # Units Redis counted that no answer admitted: left on leases at window ends.
           "stranded_total": sum(counts) - admitted,
           "redis_count_per_window": counts, "max_window_count": max(counts) if counts else None,
           "min_full_window_count": min(full) if full else None,
           "windows_over_limit": sum(1 for c in counts if c > NEAR_LIMIT),
           "full_windows_under_90pct": sum(1 for c in full if c < 0.9 * NEAR_LIMIT),
           "script_calls": scripts, "calls_per_admitted": round(scripts / max(admitted, 1), 4),
           "p50_ms": max(r["p50_ms"] for r in runs), "p99_ms": max(r["p99_ms"] for r in runs),
           "statuses": [r["statuses"] for r in runs], "curl": shown,
           "loadavg_before": runs[0]["loadavg_before"], "loadavg_after": runs[-1]["loadavg_after"]}
    if out["windows_over_limit"] or not counts or admitted > sum(counts):
        raise BenchFailure(f"near the limit: Redis counted {counts} per window, limit {NEAR_LIMIT}")
    say(f"near the limit: demand {out['demand_per_s']}/s, admitted {out['admitted_per_s']}/s, windows {counts}, "
        f"p99 {out['p99_ms']} ms")
    for p, _, _ in nodes:
        stop(p)
    return out


# === 3. CPU per decision ===


def per_decision(r, server):
    """(server µs, Redis µs) per answer from a bench_load result."""
    us = r["cpu_us_per_request"]
    return us.get(server), us.get("redis")


def grpc_bin():
    b = os.environ.get("GRPC_BENCH_BIN")
    if b:
        return b
    found = [p for p in glob.glob(os.path.join(TARGET, "release", "deps", "grpc_vs_check-*"))
             if os.access(p, os.X_OK) and not p.endswith(".d")]
    if not found:
        raise BenchFailure("no grpc_vs_check binary: run `cargo bench --bench grpc_vs_check --no-run` first")
    return max(found, key=os.path.getmtime)


def rls(name, target_port, watch, key, seconds):
    """The RLS load generator of bench/grpc_vs_check.rs against a running
    server: decisions/s and the watched processes' CPU per decision. The
    generator panics (and this run fails) on any answer but OK."""
    before = {n: cpu_seconds(pid) for n, pid in watch.items()}
    load = loadavg()
    env = {**os.environ, "RLS_TARGET": f"127.0.0.1:{target_port}", "RLS_KEY": key, "BENCH_SECONDS": str(seconds)}
    out = subprocess.run([grpc_bin()], capture_output=True, text=True, env=env)
    cpu = {n: cpu_seconds(pid) - before[n] for n, pid in watch.items()}
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode != 0 or not lines:
        raise BenchFailure(f"{name}: the RLS generator failed (exit {out.returncode}): {out.stdout[-500:]} {out.stderr[-800:]}")
    r = json.loads(lines[-1])
    d = r["decisions"]
    return {"rps": r["per_s"], "decisions": d, "seconds": round(r["seconds"], 2), "all_ok": r["all_ok"],
            "cpu_us_per_request": {n: round(v * 1e6 / d, 1) for n, v in cpu.items()},
            "loadavg_before": load, "loadavg_after": loadavg()}


def cpu_table(rp, results):
    out = {}
    out.update(B.anchors(rp))
    g = free_port()
    tg, port, admin = start_tollgate(rp, f"cpu{free_port()}", grpc_port=g)
    watch = {"tollgate": tg.pid, "redis": B.REDIS_PID}
    out["curl_check_redis"] = curl(port, "/check", headers={"X-Forwarded-For": "198.18.0.1", "X-Forwarded-Uri": "/allow"})
    out["check_redis"] = wrk(B.check("/check Redis allowed", port, "/allow", ALL_200, watch), SECONDS)
    out["rls_redis"] = rls("RLS tollgate", g, watch, "remote_address", SECONDS)
    B.no_fallback(admin, "/check Redis, RLS")
    half = out["check_redis"]["rps"] / 2
    out["check_redis_paced_half_peak"] = B.paced(B.check("/check paced", port, "/allow", ALL_200, watch), half)
    B.no_fallback(admin, "/check paced")
    stop(tg)
    fp, fport = start_anchor("floor")
    out["floor_paced_same_rate"] = B.paced(Target("http floor paced", fport, "/", ALL_200, watch={"anchor": fp.pid}), half)
    stop(fp)
    tg, port, _ = start_tollgate(None)
    out["curl_check_embedded"] = curl(port, "/check", headers={"X-Forwarded-For": "198.18.0.1", "X-Forwarded-Uri": "/allow"})
    out["check_embedded"] = wrk(B.check("/check embedded allowed", port, "/allow", ALL_200, {"tollgate": tg.pid}), SECONDS)
    stop(tg)
    if LIMITADOR_BIN:
        p, lport = start_limitador(LIMITADOR_BIN, rp)
        lw = {"limitador": p.pid, "redis": B.REDIS_PID}
        body = '{"namespace":"bench","values":{"key":"k%d"},"delta":1}'
        out["curl_limitador_http"] = curl(lport, "/check_and_report", "POST", body='{"namespace":"bench","values":{"key":"k1"},"delta":1}')
        out["limitador_http_redis"] = wrk(Target("Limitador HTTP, Redis", lport, "/check_and_report", ALL_200, method="POST",
                                                 body=body, watch=lw), SECONDS)
        out["limitador_rls_redis"] = rls("RLS Limitador", p.rls_port, lw, "key", SECONDS)
        stop(p)
    return out


# === 5. a 100 000-entry denylist against none ===


def denylist(rp, entries=100_000):
    return list_cost(rp, "deny", (entry_cidr(i) for i in range(entries)), entries, ENTRY,
                     "tollgate_denylist_entries", denied_status=403)


def overrides(rp, entries=100_000):
    """Issue 29: the same with 100 000 overrides of the `allow` rule for keys
    no client of the load has (11.x.y.z; the clients are 198.18.x.y): every
    decision looks its (rule, key) up and misses. An overridden key is
    checked first: `deny` answers 429 without a limiter call."""
    members = (f"allow/{entry_cidr(i)[:-3]}" for i in range(entries))
    return list_cost(rp, "override", members, entries, OVERRIDE_ENTRY.replace('["100/m"]', '"deny"'),
                     "tollgate_overrides_entries", denied_status=429)


def list_cost(rp, tag, members, entries, entry, gauge_name, denied_status):
    """`/check` Redis on a node whose list `tag` is empty and on one holding
    `entries` (filled in Redis, loaded by the node's snapshot), twice each."""
    full, empty = f"{tag}full{free_port()}", f"{tag}empty{free_port()}"
    now = int(redis(rp, "TIME").split()[0]) * 1000
    cmds = fill_commands(full, members, lambda i: now + 3_600_000, tag=tag, entry=entry)
    pipe(rp, cmds)
    held = int(redis(rp, "HLEN", allow_key(full, "entries", tag)) or 0)
    if held != entries:
        raise BenchFailure(f"{tag} fill: {held} entries in Redis, expected {entries}")
    nodes = {"empty": start_tollgate(rp, empty), "100k": start_tollgate(rp, full)}
    for name, (_, _, admin) in nodes.items():
        deadline = time.time() + 60
        want = entries if name == "100k" else 0
        while gauge(admin, gauge_name) != want:
            if time.time() > deadline:
                raise BenchFailure(f"{tag} {name}: the node holds "
                                   f"{gauge(admin, gauge_name)} entries, expected {want}")
            time.sleep(0.2)
    # A listed client is refused (the list is live), the benchmark's clients are not on it.
    denied = curl(nodes["100k"][1], "/check", headers={"X-Forwarded-For": "11.0.0.7", "X-Forwarded-Uri": "/allow"})
    if not denied.startswith(f"HTTP/1.1 {denied_status}"):
        raise BenchFailure(f"{tag}: a listed client answered {denied[:200]!r}, not {denied_status}")
    out = {"entries": entries, "curl_listed": denied,
           "curl_allowed": curl(nodes["100k"][1], "/check", headers={"X-Forwarded-For": "198.18.0.1", "X-Forwarded-Uri": "/allow"}),
           "runs": []}
    for _ in range(2):
        for name, (p, port, admin) in nodes.items():
            r = wrk(B.check(f"/check Redis, {tag} {name}", port, "/allow", ALL_200, {"tollgate": p.pid, "redis": B.REDIS_PID}),
                    SECONDS)
            B.no_fallback(admin, f"{tag} {name}")
            out["runs"].append({tag: name, **r})
    for name in nodes:
        rs = [r for r in out["runs"] if r[tag] == name]
        out[name] = {"rps_mean": round(sum(r["rps"] for r in rs) / len(rs), 1),
                     "tollgate_us_mean": round(sum(r["cpu_us_per_request"]["tollgate"] for r in rs) / len(rs), 2),
                     "redis_us_mean": round(sum(r["cpu_us_per_request"]["redis"] for r in rs) / len(rs), 2)}
    for p, _, _ in nodes.values():
        stop(p)
    return out


def gauge(admin, name):
    """The value of an unlabelled metric named exactly `name` (None: absent)."""
    for line in metrics(admin).splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    return None


def pipe(rp, commands):
    """RESP commands pipelined on one connection; waits for every reply."""
    from bench_allowlist import enc
    s = socket.create_connection(("127.0.0.1", rp))
    s.sendall(b"".join(enc(*c) for c in commands) + enc("PING"))
    data = b""
    while not data.endswith(b"+PONG\r\n"):
        data += s.recv(1 << 20)
    s.close()


# === the run ===


def ceiling_with_cpu(rp):
    r0 = redis_cpu(rp)
    c = B.ceiling(rp, 1)
    c["redis_us_per_call"] = round((redis_cpu(rp) - r0) * 1e6 / c["evalsha_calls_counted"], 2)
    return c


def main():
    results = {"machine": B.machine(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "parts": PARTS}
    say(f"{results['machine']['cores']} cores, {results['machine']['cpu']}; {SECONDS}s per run; "
        f"load average {results['machine']['loadavg_at_start']}")
    rproc, rp = start_redis()
    B.REDIS_PID = rproc.pid
    results["ceiling_evalsha"] = ceiling_with_cpu(rp)
    say(f"redis-benchmark EVALSHA unpipelined: {results['ceiling_evalsha']['rps']:.0f}/s, "
        f"Redis {results['ceiling_evalsha']['redis_us_per_call']} µs per call")
    if "hot" in PARTS:
        results["hot"] = hot(rp, results["ceiling_evalsha"])
    if "near" in PARTS:
        results["near"] = near(rp)
    if "cpu" in PARTS:
        results["cpu"] = cpu_table(rp, results)
    if "denylist" in PARTS:
        results["denylist"] = denylist(rp)
    if "overrides" in PARTS:
        results["overrides"] = overrides(rp)
    results["ceiling_evalsha_again"] = ceiling_with_cpu(rp)
    results["machine"]["loadavg_at_end"] = loadavg()
    day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d-%H%M%S")
    out = os.path.join(ROOT, "bench", "results", f"{day}-hot.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    print_table(results)
    print(f"\nwritten: {os.path.relpath(out, ROOT)}")


def print_table(r):
    c = r["ceiling_evalsha"]
    print(f"\nceiling (redis-benchmark EVALSHA, unpipelined): {c['rps']:.0f}/s at start, "
          f"{r['ceiling_evalsha_again']['rps']:.0f}/s at end; Redis {c['redis_us_per_call']} µs per call")
    if "hot" in r:
        print(f"\n{'hot key':<28} {'dec/s':>8} {'x ceil':>7} {'calls/dec':>10} {'tg µs':>7} {'redis µs':>8} {'wrk µs':>7} {'p99':>6}")
        for name, h in r["hot"].items():
            print(f"{name:<28} {h['rps']:>8.0f} {h['x_ceiling']:>7.2f} {h['calls_per_decision']:>10.5f} "
                  f"{h['tollgate_us_per_decision']:>7.1f} {h['redis_us_per_decision']:>8.2f} {h['wrk_us_per_decision']:>7.1f} "
                  f"{h['p99_ms']:>6.2f}")
    if "near" in r:
        n = r["near"]
        print(f"\nnear the limit ({n['limit_per_s']}/s, {n['replicas']} replicas): demand {n['demand_per_s']}/s, "
              f"admitted {n['admitted_per_s']}/s ({n['admitted_share_of_limit_from_answers']} of the limit), "
              f"Redis per window {n['redis_count_per_window']} (stranded {n['stranded_total']} of {n['charged_total_redis']}), p50 {n['p50_ms']} ms, p99 {n['p99_ms']} ms, "
              f"{n['calls_per_admitted']} calls per admitted")
    if "cpu" in r:
        print(f"\n{'CPU per decision':<34} {'dec/s':>8} {'server µs':>10} {'redis µs':>9} {'total':>7} {'p99 ms':>7}")
        rows = [("HTTP floor", "http_floor", "anchor"), ("hyper + EVALSHA", "hyper_evalsha", "anchor"),
                ("/check embedded", "check_embedded", "tollgate"), ("/check Redis (10 000 keys)", "check_redis", "tollgate"),
                ("RLS gRPC, Redis", "rls_redis", "tollgate"),
                ("/check Redis paced at half peak", "check_redis_paced_half_peak", "tollgate"),
                ("HTTP floor paced, same rate", "floor_paced_same_rate", "anchor"),
                ("Limitador HTTP, Redis", "limitador_http_redis", "limitador"),
                ("Limitador RLS, Redis", "limitador_rls_redis", "limitador")]
        for name, k, srv in rows:
            if k not in r["cpu"]:
                continue
            d = r["cpu"][k]
            s, rd = per_decision(d, srv)
            tot = (s or 0) + (rd or 0)
            p99 = f"{d['p99_ms']:.2f}" if "p99_ms" in d else "-"
            print(f"{name:<34} {d['rps']:>8.0f} {s or 0:>10.1f} {rd or 0:>9.1f} {tot:>7.1f} {p99:>7}")
        if "hot" in r:
            h = r["hot"]["1 replica(s), lease"]
            print(f"{'hot key, lease, 1 replica':<34} {h['rps']:>8.0f} {h['tollgate_us_per_decision']:>10.1f} "
                  f"{h['redis_us_per_decision']:>9.2f} {h['tollgate_us_per_decision'] + h['redis_us_per_decision']:>7.1f}")
    for part in ("denylist", "overrides"):
        if part in r:
            d = r[part]
            print(f"\n{part}: empty {d['empty']}; 100 000 entries {d['100k']}")
    print(f"load average: start {r['machine']['loadavg_at_start']}, end {r['machine']['loadavg_at_end']}")


if __name__ == "__main__":
    try:
        main()
    except BenchFailure as e:
        sys.exit(f"bench_hot: FAILED: {e}")
    finally:
        kill_all()
