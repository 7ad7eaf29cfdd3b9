#!/usr/bin/env python3
"""tollgate's benchmark harness (run it through scripts/bench.sh).

Everything runs on this machine, on loopback, in one run, so the figures can
be compared with each other as ratios to anchors measured in the same run:
redis-benchmark's EVALSHA of tollgate's fixed_window script (unpipelined and
-P 16), a minimal hyper server answering 200 (the HTTP floor), and the same
plus one EVALSHA per request (bench/anchors). Every load run states the
statuses it expects and the benchmark stops with the reason when an answer
differs (see bench_load.py). Every load is bounded in time. Prints one table
and writes bench/results/<UTC date>.json with the machine and load average.
"""

import datetime
import http.client
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
import urllib.request

from allowlist_fill import allow_key, allow_keys
from bench_load import CONNECTIONS, KEYS, BenchFailure, Target, finish_wrk, loadavg, start_wrk, wrk
from bench_procs import (ADMIN_TOKEN, BIN, ROOT, commandstats, free_port, kill_all, limitador_revision,
                         lua, metric_sum, metrics, redis, redis_cpu, redis_info, resp, rss_kb, fallback_decisions, start_anchor,
                         start_limitador, start_redis, start_tollgate, stop)

SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
DISTINCT = int(os.environ.get("BENCH_DISTINCT_KEYS", "1000000"))  # embedded store, per algorithm
REDIS_DISTINCT = int(os.environ.get("BENCH_REDIS_DISTINCT_KEYS", "200000"))  # Redis store: only the deny cache grows
LIMITADOR_BIN = os.environ.get("LIMITADOR_BIN")
# BENCH_ONLY=activity: only the tracked/untracked pair (results/<date>-activity.json).
ONLY = os.environ.get("BENCH_ONLY")
ALL_200, ALL_429 = {"200"}, {"429"}


def say(msg):
    print(f"bench: {msg}", flush=True)


# === anchors ===


def ceiling(redis_port, pipeline):
    sha = redis(redis_port, "SCRIPT", "LOAD", lua("fixed_window"))
    key = "ceil:rl:{r|__rand_int__}:fw:3600000"
    # One call by hand first: the reply must be the script's {allowed=1, ...}.
    first = redis(redis_port, "EVALSHA", sha, "1", key.replace("__rand_int__", "probe"), "1", "1000000000", "3600000")
    if not first.startswith("1"):
        raise BenchFailure(f"redis-benchmark: the script answered {first!r}, not an allowed reply")
    n = 60_000 * SECONDS * (3 if pipeline > 1 else 1)
    args = ["redis-benchmark", "-p", str(redis_port), "-c", str(CONNECTIONS), "-n", str(n), "-r", str(KEYS), "--csv"]
    if pipeline > 1:
        args += ["-P", str(pipeline)]
    args += ["EVALSHA", sha, "1", key, "1", "1000000000", "3600000"]
    redis(redis_port, "CONFIG", "RESETSTAT")
    load = loadavg()
    out = subprocess.run(args, capture_output=True, text=True).stdout
    rows = [line for line in out.splitlines() if line.startswith('"EVALSHA')]
    if not rows:
        raise BenchFailure(f"redis-benchmark gave no result:\n{out}")
    cols = [c.strip('"') for c in rows[-1].split('","')]
    calls, _, failed = commandstats(redis_port).get("evalsha", (0, 0, 0))
    # Every call must have run the script and answered (an error reply is fast, and a lie).
    if calls < n or failed:
        raise BenchFailure(f"redis-benchmark: {n} EVALSHA sent, Redis counted {calls} calls, {failed} failed")
    return {"rps": float(cols[1]), "p50_ms": float(cols[4]), "p99_ms": float(cols[6]), "requests": n,
            "evalsha_calls_counted": calls, "failed_calls": failed, "loadavg_before": load, "loadavg_after": loadavg()}


def anchors(rp):
    out = {}
    p, port = start_anchor("floor")
    out["http_floor"] = wrk(Target("http floor", port, "/", ALL_200, watch={"anchor": p.pid}), SECONDS)
    stop(p)
    p, port = start_anchor("evalsha", rp)
    out["hyper_evalsha"] = wrk(Target("hyper+EVALSHA", port, "/", ALL_200, watch={"anchor": p.pid, "redis": REDIS_PID}),
                               SECONDS)
    stop(p)
    return out


# === tollgate with Redis ===


def check(name, port, uri, expect, watch):
    return Target(name, port, "/check", expect, headers={"X-Forwarded-Uri": uri}, watch=watch)


def v1_check(name, port, watch):
    return Target(name, port, "/v1/check", ALL_200, method="POST", body='{"rule":"allow","key":"user:%d"}',
                  body_check='"allowed":true', watch=watch)


def redis_runs(rp, results):
    # The measured node starts on an allowlist of 100 000 entries.
    prefix = f"rss{free_port()}"
    results["allowlist_entries_loaded"] = load_allowlist(rp, prefix, 100_000)
    tg, port, admin = start_tollgate(rp, prefix)
    watch = {"tollgate": tg.pid, "redis": REDIS_PID}
    results["check_redis_allowed"] = wrk(check("/check Redis allowed", port, "/allow", ALL_200, watch), SECONDS)
    no_fallback(admin, "/check Redis allowed")
    # Every key over its 1/h limit: two passes over every key, then every answer must be 429.
    results["deny_priming"] = prime(check("/check deny priming", port, "/deny", {"200", "429"}, watch),
                                    results["check_redis_allowed"]["rps"])
    results["check_deny_cache"] = wrk(check("/check every key denied", port, "/deny", ALL_429, watch), SECONDS)
    results["v1_check_redis"] = wrk(v1_check("POST /v1/check Redis", port, watch), SECONDS)
    no_fallback(admin, "/check every key denied, POST /v1/check Redis")
    half = results["check_redis_allowed"]["rps"] / 2
    results["check_latency_at_half_peak"] = paced(check("/check paced", port, "/allow", ALL_200, watch), half)
    # The same offered rate on the HTTP floor: this machine's own latency at that load.
    fp, fport = start_anchor("floor")
    results["floor_latency_at_same_rate"] = paced(Target("http floor paced", fport, "/", ALL_200, watch={"anchor": fp.pid}),
                                                  half)
    stop(fp)
    results["redis_cpu_per_decision"] = redis_cpu_per_decision(rp, port, watch)
    no_fallback(admin, "paced /check, Redis CPU per algorithm")
    # Distinct keys seen: each request a new client address, stopped at DISTINCT answers.
    base = rss_kb(tg.pid)
    r = fill(check("/check distinct clients", port, "/allow", ALL_200, watch), REDIS_DISTINCT,
             results["check_redis_allowed"]["rps"])
    results["rss_redis_store"] = {"distinct_keys": REDIS_DISTINCT, "answers": r["requests"], "rss_before_mb": round(base / 1024, 1),
                                  "peak_rss_mb": round(rss_kb(tg.pid, "VmHWM") / 1024, 1)}
    no_fallback(admin, "/check distinct clients")
    stop(tg)


def no_fallback(admin, runs):
    """A Redis-mode run measures Redis decisions: none may come from on_redis_error."""
    n = fallback_decisions(admin)
    if n:
        raise BenchFailure(f"{runs}: {n:.0f} decisions came from on_redis_error (Redis timed out or the "
                           "breaker was open), not from Redis")


def fill(t, clients, rate, per_client=1):
    """`per_client` requests for each of `clients` fresh clients. Each wrk
    thread stops after its share of answers, but wrk still waits out -d, so
    -d is sized from `rate` (the measured peak) and, when the machine was
    slower than that, further passes continue the key sequence where the
    answers stopped (at most a few keys near a pass boundary are skipped)."""
    total, done, passes = clients * per_client, 0, []
    while done < total:
        if len(passes) == 6:
            raise BenchFailure(f"{t.describe()}: {done} answers after 6 passes, fewer than the {total} needed")
        left = total - done
        r = wrk(t, int(left / max(rate, 1000) * 1.2) + 2, keys=clients, quota=(left + 1) // 2, start=done)
        passes.append(r)
        done += r["requests"]
    out = dict(passes[0])
    out["requests"] = done
    out["statuses"] = {s: sum(p["statuses"].get(s, 0) for p in passes) for s in set().union(*(p["statuses"] for p in passes))}
    out["passes"] = len(passes)
    return out


def prime(t, rate):
    """Put every one of the KEYS clients over a 1/h limit: two fills (a pass
    boundary may skip a key; two passes with different boundaries will not)."""
    first = fill(t, KEYS, rate)
    second = fill(t, KEYS, rate)
    if second["statuses"].get("200", 0) > first["passes"] * 64:
        raise BenchFailure(f"{t.describe()}: the second priming pass still had {second['statuses']['200']} first hits")
    return {"first_pass": first["statuses"], "second_pass": second["statuses"]}


def paced(t, rate):
    """Latency at about `rate` requests/s: each connection waits 1 ms after every
    answer (wrk's delay()), so each offers a bounded rate; a 2 s probe run
    measures that per-connection rate and sets the number of connections."""
    probe_conns = max(2, round(rate / 1000))
    probe = wrk(t, 2, connections=probe_conns, delay_ms=1)
    per_conn = max(probe["rps"] / probe_conns, 1.0)
    conns = max(2, round(rate / per_conn))
    r = wrk(t, SECONDS, connections=conns, delay_ms=1)
    return {"target_rps": round(rate), **r}


def redis_cpu_per_decision(rp, port, watch):
    """Redis CPU per decision, per algorithm: script time from INFO commandstats,
    and the whole redis-server process (network, parsing) from INFO cpu."""
    out = {}
    for alg, tag in [("fixed_window", "fw"), ("sliding_window", "sw"), ("sliding_log", "sl"), ("gcra", "gc")]:
        redis(rp, "CONFIG", "RESETSTAT")
        cpu0 = redis_cpu(rp)
        r = wrk(check(f"/check {alg}", port, f"/{tag}", ALL_200, watch), max(2, SECONDS // 2))
        cpu = redis_cpu(rp) - cpu0
        stats = commandstats(rp)
        decisions = r["statuses"]["200"] + 1  # + the probe
        calls, usec, failed = stats.get("evalsha", (0, 0, 0))
        if failed:
            raise BenchFailure(f"/check {alg}: {failed} EVALSHA calls failed in Redis")
        out[alg] = {"decisions": decisions, "evalsha_calls": calls, "script_us_per_decision": round(usec / decisions, 2),
                    "redis_process_us_per_decision": round(cpu * 1e6 / decisions, 2),
                    "other_commands": {k: v for k, v in stats.items() if k not in ("evalsha", "config", "info")},
                    "rps": r["rps"]}
    return out


# === activity: a tracked rule against an untracked one ===


def activity_runs(rp):
    """/check on a tracked rule (`track = true`) against the same rule
    untracked, on one node, alternated (untracked, tracked, untracked,
    tracked) so a noisy neighbour weighs on both alike. Then the summary must
    count exactly the tracked answers: a tracking that counted nothing would
    be fast, and a lie."""
    prefix = f"act{free_port()}"
    tg, port, admin = start_tollgate(rp, prefix)
    watch = {"tollgate": tg.pid, "redis": REDIS_PID}
    runs = {"untracked": [], "tracked": []}
    for _ in range(2):
        runs["untracked"].append(wrk(check("/check untracked rule", port, "/allow", ALL_200, watch), SECONDS))
        runs["tracked"].append(wrk(check("/check tracked rule", port, "/tracked", ALL_200, watch), SECONDS))
    no_fallback(admin, "/check tracked and untracked")
    # Each run: its probe, the answers wrk counted, and at most one request
    # per connection cut at the end (answered by tollgate, not counted by wrk).
    answered = sum(r["statuses"].get("200", 0) + 1 for r in runs["tracked"])
    slack = CONNECTIONS * len(runs["tracked"])
    counted = None
    for _ in range(50):  # the flush runs every second
        time.sleep(0.2)
        req = urllib.request.Request(f"http://127.0.0.1:{admin}/v1/activity/summary?rule=tracked&hours=2",
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        counted = json.loads(urllib.request.urlopen(req).read())["total"]
        if counted >= answered:
            break
    lost = metric_sum(metrics(admin), "tollgate_activity_lost_total")
    stop(tg)
    if not (answered <= counted <= answered + slack) or lost:
        raise BenchFailure(f"activity: {answered} tracked answers (+ at most {slack} cut by wrk), "
                           f"the summary counted {counted}, {lost:.0f} lost")
    mean = lambda rs: sum(r["rps"] for r in rs) / len(rs)
    pairs = [round(t["rps"] / u["rps"], 3) for u, t in zip(runs["untracked"], runs["tracked"])]
    return {"untracked": runs["untracked"], "tracked": runs["tracked"], "tracked_answers": answered,
            "summary_total": counted, "ratio_per_pair": pairs,
            "ratio": round(mean(runs["tracked"]) / mean(runs["untracked"]), 3)}


# === scale: replicas sharing one Redis ===


def scale(rp):
    out = {}
    for n in (1, 2, 4):
        nodes = [start_tollgate(rp, "scale") for _ in range(n)]
        watch = {f"tollgate{i}": p.pid for i, (p, _, _) in enumerate(nodes)}
        watch["redis"] = REDIS_PID
        threads = 2 if n == 1 else 1
        procs = [(t, start_wrk(t, SECONDS, connections=CONNECTIONS // n, threads=threads))
                 for t in [check(f"/check replica {i} of {n}", port, "/allow", ALL_200, watch if i == 0 else {})
                           for i, (_, port, _) in enumerate(nodes)]]
        runs = [finish_wrk(t, p) for t, p in procs]
        for _, _, admin in nodes:
            no_fallback(admin, f"{n} replicas")
        total = sum(r["rps"] for r in runs)
        secs = runs[0]["seconds"]
        cpu = runs[0]["cpu_seconds"]
        out[str(n)] = {"rps": round(total, 1), "per_replica_rps": [r["rps"] for r in runs],
                       "statuses": [r["statuses"] for r in runs],
                       "cores_used": {"redis": round(cpu.get("redis", 0) / secs, 2),
                                      "tollgate_all": round(sum(v for k, v in cpu.items() if k.startswith("tollgate")) / secs, 2),
                                      "wrk_all": round(sum(r["cpu_seconds"]["wrk"] for r in runs) / secs, 2)},
                       "loadavg_after": runs[-1]["loadavg_after"]}
        for p, _, _ in nodes:
            stop(p)
    return out


# === embedded store ===


def embedded_runs(results):
    tg, port, admin = start_tollgate(None)
    watch = {"tollgate": tg.pid}
    results["check_embedded_allowed"] = wrk(check("/check embedded allowed", port, "/allow", ALL_200, watch), SECONDS)
    prime(check("/check embedded deny priming", port, "/deny", {"200", "429"}, watch),
          results["check_embedded_allowed"]["rps"])
    results["check_embedded_denied"] = wrk(check("/check embedded every key denied", port, "/deny", ALL_429, watch), SECONDS)
    results["v1_check_embedded"] = wrk(v1_check("POST /v1/check embedded", port, watch), SECONDS)
    stop(tg)


def embedded_memory(rate):
    """Process memory per client in the embedded store: RSS growth over DISTINCT
    fresh clients (one request each) on a node with one 100/h rule; for
    sliding_log also per extra stored entry (10 more on DISTINCT/10 clients)."""
    out = {}
    for alg, tag in [("fixed_window", "fw"), ("gcra", "gc"), ("sliding_log", "sl")]:
        tg, port, _ = start_tollgate(None, limit="100/h")
        t = check(f"/check embedded {alg} distinct clients", port, f"/{tag}", ALL_200, {"tollgate": tg.pid})
        wrk(t, 2, keys=1000, quota=500)  # warm up: threads, pools, allocator
        before = rss_kb(tg.pid)
        r = fill(t, DISTINCT, rate)
        after = rss_kb(tg.pid)
        out[alg] = {"clients": DISTINCT, "answers": r["requests"], "rss_before_mb": round(before / 1024, 1),
                    "rss_after_mb": round(after / 1024, 1), "bytes_per_client": round((after - before) * 1024 / DISTINCT, 1),
                    "rps": r["rps"]}
        if alg == "sliding_log":
            # 10 more entries on each of DISTINCT/10 clients: all within 100/h.
            extra = fill(t, DISTINCT // 10, rate, per_client=10)
            grown = rss_kb(tg.pid)
            out[alg]["extra_entries"] = extra["statuses"]["200"]
            out[alg]["bytes_per_extra_entry"] = round((grown - after) * 1024 / extra["statuses"]["200"], 1)
        stop(tg)
    return out


# === Limitador (optional, LIMITADOR_BIN) ===


def limitador(rp, binary):
    out = {"revision": limitador_revision(binary)}
    body = '{"namespace":"bench","values":{"key":"k%d"},"delta":1}'
    for mode, redis_port in [("redis", rp), ("memory", None)]:
        p, port = start_limitador(binary, redis_port)
        watch = {"limitador": p.pid, **({"redis": REDIS_PID} if redis_port else {})}
        out[mode] = wrk(Target(f"Limitador {mode}", port, "/check_and_report", ALL_200, method="POST", body=body,
                               watch=watch), SECONDS)
        stop(p)
    return out


# === allowlist ===


def bench_ip(i):
    """The i-th address of 198.18.0.0/15 (the benchmarking range)."""
    return f"198.{18 + i // 65536}.{i // 256 % 256}.{i % 256}"


def load_allowlist(redis_port, prefix, n):
    """n entries (/32s of 198.18.0.0/15) through the allow_upsert script, pipelined."""
    sha = redis(redis_port, "SCRIPT", "LOAD", lua("allow_upsert"))
    keys = allow_keys(prefix)
    lost = allow_key(prefix, "lost")
    cmds = "".join(resp("EVALSHA", sha, 5, *keys, lost, f"{bench_ip(i)}/32", 3_600_000, "bench", "bench", "benchepoch",
                        604_800_000, 1_000_000, 0)
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
                if r.status != 403:
                    raise BenchFailure(f"propagation: /check on the gate answered {r.status}, expected 403 or 200")

        threads = [threading.Thread(target=poll, args=(k, node[1])) for k, node in enumerate(nodes)]
        for t in threads:
            t.start()
        admin = http.client.HTTPConnection("127.0.0.1", writer[2])
        body = json.dumps({"cidr": ip, "ttl": "1h"})
        deadline = time.perf_counter() + 5
        t0 = time.perf_counter()
        go.set()
        admin.request("POST", "/v1/allowlist", body, {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"})
        status = admin.getresponse().status
        if status != 201:
            raise BenchFailure(f"propagation: POST /v1/allowlist answered {status}, expected 201")
        for t in threads:
            t.join()
        samples += [(t - t0) * 1000 for t in seen if t is not None]
    for p, _, _ in [writer, *nodes]:
        stop(p)
    if len(samples) != adds * followers:
        raise BenchFailure(f"propagation: {adds * followers - len(samples)} adds never became visible within 5 s")
    samples.sort()
    pick = lambda q: round(samples[min(len(samples) - 1, int(q * len(samples)))], 2)
    return {"adds": adds, "followers": followers, "samples": len(samples), "p50_ms": pick(0.5), "p99_ms": pick(0.99)}


def lookup_bench():
    out = subprocess.run(["cargo", "bench", "--bench", "allowlist_lookup", "--", "--warm-up-time", "1", "--measurement-time", "3"],
                         cwd=ROOT, capture_output=True, text=True).stdout
    found = re.findall(r"allowlist lookup, 100k entries/(.+?)\s+time:\s+\[\S+ \S+ (\S+) (\S+)", out)
    units = {"ns": 1, "µs": 1000, "us": 1000}
    return {name.strip(): round(float(v) * units.get(u, 1), 1) for name, v, u in found}


def redis_memory_per_counter(redis_port, n=100_000):
    """used_memory delta over n fresh counters of each algorithm, one request
    each; fails when Redis does not then hold exactly n keys (a script that
    refused its arguments would otherwise measure nothing)."""
    result = {}
    # Our own throwaway Redis, every tollgate stopped: start empty, so DBSIZE
    # counts exactly these counters (earlier runs' keys would expire meanwhile).
    redis(redis_port, "FLUSHDB")
    for alg, tag in [("fixed_window", "fw"), ("sliding_window", "sw"), ("sliding_log", "sl"), ("gcra", "gc")]:
        sha = redis(redis_port, "SCRIPT", "LOAD", lua(alg))
        # gcra takes a burst after each limit and period (lua/gcra.lua).
        limit = (100, 3600000, 100) if alg == "gcra" else (100, 3600000)
        before = int(redis_info(redis_port, "used_memory"))
        # Keys as tollgate names them: prefix, {rule|client IP}, algorithm, period.
        cmds = "".join(resp("EVALSHA", sha, 1, f"tg:rl:{{login|{bench_ip(i)}}}:{tag}:3600000", 1, *limit)
                       for i in range(n))
        subprocess.run(["redis-cli", "-p", str(redis_port), "--pipe"], input=cmds, capture_output=True, text=True)
        after = int(redis_info(redis_port, "used_memory"))
        keys = int(redis(redis_port, "DBSIZE"))
        if keys != n:
            probe = redis(redis_port, "EVALSHA", sha, "1", "tg:rl:{probe}:x", "1", *map(str, limit))
            raise BenchFailure(f"Redis memory, {alg}: {keys} keys after {n} calls; one call answers {probe!r}")
        sample = redis(redis_port, "MEMORY", "USAGE", f"tg:rl:{{login|{bench_ip(1)}}}:{tag}:3600000")
        result[alg] = {"bytes_per_counter": round((after - before) / n, 1), "memory_usage_sample": int(sample or 0)}
        redis(redis_port, "FLUSHDB")  # our own throwaway Redis
    # sliding_log grows per admitted request: 10 requests on each of n/10 keys.
    sha = redis(redis_port, "SCRIPT", "LOAD", lua("sliding_log"))
    before = int(redis_info(redis_port, "used_memory"))
    cmds = "".join(resp("EVALSHA", sha, 1, f"tg:rl:{{login|{bench_ip(i % (n // 10))}}}:sl:3600000", 1, 100, 3600000)
                   for i in range(n))
    subprocess.run(["redis-cli", "-p", str(redis_port), "--pipe"], input=cmds, capture_output=True, text=True)
    after = int(redis_info(redis_port, "used_memory"))
    stored = sum(int(redis(redis_port, "ZCARD", f"tg:rl:{{login|{bench_ip(i)}}}:sl:3600000") or 0) for i in (0, 1, 2))
    if stored != 30:
        raise BenchFailure(f"Redis memory, sliding_log: {stored} entries on 3 sampled keys, expected 30")
    result["sliding_log"]["bytes_per_stored_request_at_10_per_key"] = round((after - before) / n, 1)
    redis(redis_port, "FLUSHDB")
    return result


# === the run ===


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.*)$", f.read(), re.M)
            cpu = m.group(1) if m else cpu
    except OSError:
        pass
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    ver = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()
    return {"cores": os.cpu_count(), "cpu": cpu, "kernel": platform.release(), "redis": ver,
            "tollgate_rev": rev + ("+dirty" if dirty else ""), "tollgate_bin": BIN, "seconds_per_run": SECONDS,
            "connections": CONNECTIONS, "keys": KEYS, "loadavg_at_start": loadavg(),
            "note": "shared machine: other jobs may run; compare ratios within this run"}


REDIS_PID = None


def main():
    global REDIS_PID
    results = {"machine": machine(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    say(f"{results['machine']['cores']} cores, {results['machine']['cpu']}; {SECONDS}s per run; "
        f"load average {results['machine']['loadavg_at_start']}")
    rproc, rp = start_redis()
    REDIS_PID = rproc.pid

    if ONLY == "activity":
        say("activity only: tracked rule against untracked")
        results["activity"] = activity_runs(rp)
        results["machine"]["loadavg_at_end"] = loadavg()
        print_activity(results)
        day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
        out = os.path.join(ROOT, "bench", "results", f"{day}-activity.json")
        with open(out, "w") as f:
            json.dump(results, f, indent=2)
        print(f"\nwritten: {os.path.relpath(out, ROOT)}")
        return
    say("anchors")
    results["ceiling_evalsha"] = ceiling(rp, 1)
    results["ceiling_evalsha_p16"] = ceiling(rp, 16)
    results.update(anchors(rp))
    say("tollgate with Redis")
    redis_runs(rp, results)
    say("activity: tracked rule against untracked")
    results["activity"] = activity_runs(rp)
    say("replicas sharing one Redis")
    results["scale"] = scale(rp)
    say("embedded store")
    embedded_runs(results)
    results["embedded_memory"] = embedded_memory(results["check_embedded_allowed"]["rps"])
    if LIMITADOR_BIN:
        say("Limitador")
        results["limitador"] = limitador(rp, LIMITADOR_BIN)
    say("allowlist")
    results["allowlist_propagation"] = propagation(rp)
    if not os.environ.get("BENCH_SKIP_LOOKUP"):
        results["allowlist_lookup_ns"] = lookup_bench()
    results["redis_memory"] = redis_memory_per_counter(rp)
    results["machine"]["loadavg_at_end"] = loadavg()
    results["targets"] = targets(results)

    print_table(results)
    day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    out = os.path.join(ROOT, "bench", "results", f"{day}.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nwritten: {os.path.relpath(out, ROOT)}")


def targets(r):
    """Issue 12's targets, each a ratio within this run: of req/s, and (steadier
    on a shared machine) of server CPU per answer, the anchor's over ours."""
    rps = lambda k: r[k]["rps"]
    # Server-side CPU per answer: every watched process but the load generator.
    cpu = lambda k: sum(v for n, v in r[k].get("cpu_us_per_request", {}).items() if n != "wrk") or None
    rows = [
        ("/check Redis / redis-benchmark unpipelined", "check_redis_allowed", "ceiling_evalsha", 1.0),
        ("/check Redis / hyper+EVALSHA", "check_redis_allowed", "hyper_evalsha", 1.0),
        ("/check embedded / HTTP floor", "check_embedded_allowed", "http_floor", 0.85),
        ("/check all denied (Redis, deny cache) / HTTP floor", "check_deny_cache", "http_floor", 0.85),
        ("/check all denied (embedded) / HTTP floor", "check_embedded_denied", "http_floor", 0.85),
        ("POST /v1/check / /check (Redis)", "v1_check_redis", "check_redis_allowed", 0.9),
        ("POST /v1/check / /check (embedded)", "v1_check_embedded", "check_embedded_allowed", 0.9),
    ]
    out = []
    for name, mine, anchor, need in rows:
        v = rps(mine) / rps(anchor)
        row = {"target": name, "ratio": round(v, 3), "needed": need, "holds": v >= need}
        if cpu(mine) and cpu(anchor):
            row["cpu_ratio"] = round(cpu(anchor) / cpu(mine), 3)
        out.append(row)
    if "activity" in r:
        v = r["activity"]["ratio"]
        out.append({"target": "/check tracked rule / untracked (activity counters)", "ratio": v, "needed": 0.95,
                    "holds": v >= 0.95})
    p99 = r["check_latency_at_half_peak"]["p99_ms"]
    out.append({"target": "p99 ms at half peak (/check Redis)", "value": p99, "needed_at_most": 2.0, "holds": p99 <= 2.0,
                "http_floor_p99_ms_at_same_rate": r["floor_latency_at_same_rate"]["p99_ms"]})
    for alg in ("fixed_window", "gcra"):
        b = r["embedded_memory"][alg]["bytes_per_client"]
        out.append({"target": f"embedded bytes per {alg} client", "value": b, "needed_at_most": 100, "holds": b <= 100})
    b = r["embedded_memory"]["sliding_log"]["bytes_per_extra_entry"]
    out.append({"target": "embedded bytes per extra sliding_log entry", "value": b, "needed_at_most": 16, "holds": b <= 16})
    if "limitador" in r:
        for mine, theirs, need in [("v1_check_redis", "redis", 2.5), ("v1_check_embedded", "memory", 1.5)]:
            v = rps(mine) / r["limitador"][theirs]["rps"]
            out.append({"target": f"POST /v1/check / Limitador {theirs}", "ratio": round(v, 3), "needed": need, "holds": v >= need})
    return out


def print_activity(r):
    a = r["activity"]
    for i, (u, t) in enumerate(zip(a["untracked"], a["tracked"])):
        for name, d in ((f"untracked ({i + 1})", u), (f"tracked ({i + 1})", t)):
            print(f"/check {name:<16} {d['rps']:>9.0f} req/s  p50 {d['p50_ms']:.2f} ms  p99 {d['p99_ms']:.2f} ms  {d['statuses']}")
    print(f"tracked / untracked: {a['ratio']} (per pair {a['ratio_per_pair']}); "
          f"summary counted {a['summary_total']} of {a['tracked_answers']} tracked answers")
    print(f"load average: start {r['machine']['loadavg_at_start']}, end {r['machine']['loadavg_at_end']}")


def print_table(r):
    def row(name, d, ratio=""):
        p = lambda k: f"{d[k]:.2f}" if d.get(k) is not None else "-"
        st = ",".join(f"{s}:{n}" for s, n in d.get("statuses", {}).items())
        us = d.get("cpu_us_per_request", {})
        server = next((v for k, v in us.items() if k not in ("wrk", "redis")), None)
        cpu = f"{server:.1f}" if server is not None else "-"
        red = f"{us['redis']:.1f}" if "redis" in us else "-"
        print(f"{name:<40} {d['rps']:>9.0f} {p('p50_ms'):>7} {p('p99_ms'):>7} {cpu:>8} {red:>8} {ratio:>16}  {st}")

    floor, ceil, hev = r["http_floor"]["rps"], r["ceiling_evalsha"]["rps"], r["hyper_evalsha"]["rps"]
    print(f"\n{'run':<40} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'srv µs/r':>8} {'redis µs':>8} {'ratio':>16}  statuses")
    row("redis-benchmark EVALSHA (unpipelined)", r["ceiling_evalsha"], "ceiling")
    row("redis-benchmark EVALSHA -P 16", r["ceiling_evalsha_p16"], f"{r['ceiling_evalsha_p16']['rps'] / ceil:.2f} x ceil")
    row("hyper 200 (HTTP floor)", r["http_floor"], "floor")
    row("hyper + EVALSHA", r["hyper_evalsha"], f"{hev / ceil:.2f} x ceil")
    row("/check Redis, allowed", r["check_redis_allowed"], f"{r['check_redis_allowed']['rps'] / hev:.2f} x hyper+EV")
    row("/check Redis, every key denied", r["check_deny_cache"], f"{r['check_deny_cache']['rps'] / floor:.2f} x floor")
    row("POST /v1/check Redis", r["v1_check_redis"], f"{r['v1_check_redis']['rps'] / ceil:.2f} x ceil")
    row("/check embedded, allowed", r["check_embedded_allowed"], f"{r['check_embedded_allowed']['rps'] / floor:.2f} x floor")
    row("/check embedded, every key denied", r["check_embedded_denied"], f"{r['check_embedded_denied']['rps'] / floor:.2f} x floor")
    row("POST /v1/check embedded", r["v1_check_embedded"], f"{r['v1_check_embedded']['rps'] / floor:.2f} x floor")
    h = r["check_latency_at_half_peak"]
    row(f"/check paced at {h['target_rps']}/s", h, f"{h['connections']} conns")
    h = r["floor_latency_at_same_rate"]
    row(f"HTTP floor paced at {h['target_rps']}/s", h, f"{h['connections']} conns")
    if "limitador" in r:
        for mode in ("redis", "memory"):
            row(f"Limitador {mode}", r["limitador"][mode])
    if "activity" in r:
        a = r["activity"]
        for i, (u, t) in enumerate(zip(a["untracked"], a["tracked"])):
            row(f"/check untracked rule ({i + 1})", u)
            row(f"/check tracked rule ({i + 1})", t, f"{t['rps'] / u['rps']:.3f} x untracked")
    print("\nreplicas sharing one Redis: " + "; ".join(
        f"{n}: {s['rps']:.0f}/s (cores: redis {s['cores_used']['redis']}, tollgate {s['cores_used']['tollgate_all']}, "
        f"wrk {s['cores_used']['wrk_all']})" for n, s in r["scale"].items()))
    print("Redis CPU per decision (script / whole process, µs): " + ", ".join(
        f"{a} {c['script_us_per_decision']} / {c['redis_process_us_per_decision']}" for a, c in r["redis_cpu_per_decision"].items()))
    print("embedded memory per client (B): " + ", ".join(f"{a} {m['bytes_per_client']}" for a, m in r["embedded_memory"].items())
          + f"; per extra sliding_log entry {r['embedded_memory']['sliding_log']['bytes_per_extra_entry']}")
    rs = r["rss_redis_store"]
    print(f"peak RSS, Redis store, {r['allowlist_entries_loaded']} allowlist entries, {rs['distinct_keys']} distinct clients: "
          f"{rs['peak_rss_mb']} MB")
    for alg, m in r["redis_memory"].items():
        extra = f", {m['bytes_per_stored_request_at_10_per_key']} B per stored request" if "bytes_per_stored_request_at_10_per_key" in m else ""
        print(f"Redis memory, {alg}: {m['bytes_per_counter']} B per counter (MEMORY USAGE {m['memory_usage_sample']} B){extra}")
    p = r["allowlist_propagation"]
    print(f"allowlist add -> visible on {p['followers']} followers: p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms ({p['samples']} samples)")
    if "allowlist_lookup_ns" in r:
        print("allowlist lookup, 100k entries (ns): " + ", ".join(f"{k} {v}" for k, v in r["allowlist_lookup_ns"].items()))
    print("\ntargets (ratios in this run):")
    for t in r["targets"]:
        v = t.get("ratio", t.get("value"))
        need = f">= {t['needed']}" if "needed" in t else f"<= {t['needed_at_most']}"
        by_cpu = f"; by server CPU per answer {t['cpu_ratio']}" if "cpu_ratio" in t else ""
        if "http_floor_p99_ms_at_same_rate" in t:
            by_cpu = f"; the HTTP floor's p99 at the same rate: {t['http_floor_p99_ms_at_same_rate']} ms"
        print(f"  {'holds ' if t['holds'] else 'MISSES'} {t['target']}: {v} (need {need}){by_cpu}")
    print(f"load average: start {r['machine']['loadavg_at_start']}, end {r['machine']['loadavg_at_end']}")


if __name__ == "__main__":
    try:
        main()
    except BenchFailure as e:
        sys.exit(f"bench: FAILED: {e}")
    finally:
        kill_all()
