"""Load runs for scripts/bench.py: wrk with a Lua script that counts every
answer's status, and a run that FAILS (BenchFailure, with the reason) unless
every answer is one of the statuses the run expects.

Why: an earlier harness sent its /check load to paths the decision port does
not serve, recorded 100 % 404s as `non2xx` and never looked at it. Here a
wrong path, a missing header, a crashed server or a broken body ends the
benchmark instead of producing a figure.
"""

import http.client
import json
import os
import re
import resource
import subprocess
import tempfile
import time

CONNECTIONS = 64
KEYS = 10_000
_WORK = None


def work_dir():
    """This run's scratch directory, made on first use: importing this module
    (bench_procs, bench_tls, the bench_harness test) creates nothing."""
    global _WORK
    if _WORK is None:
        _WORK = tempfile.mkdtemp(prefix="tollgate-bench-")
    return _WORK


class BenchFailure(Exception):
    """A run whose answers are not the ones it expected."""


# Placeholders are @NAME@ (Lua uses both % and braces).
WRK_SCRIPT = r"""
local keys, nthreads, start = @KEYS@, @THREADS@, @START@
local method, path, body = "@METHOD@", "@PATH@", @BODY@
local extra = @EXTRA@
local quota = @QUOTA@          -- answers per thread before it stops (0: run for -d)
local body_check = @BODY_CHECK@ -- substring every 64th body must hold (nil: none)

local threads, next_id = {}, 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

-- Per thread: answers by status, bodies that failed the check (and the first
-- of them, to show in the failure).
counts, bad_body, first_bad = {}, 0, ""
local i, seen = 0, 0

function request()
  -- Thread t takes indices t, t+n, t+2n...: together the threads visit every key.
  local k = ((start + i * nthreads + id) * 7919) % keys
  i = i + 1
  local headers = { ["X-Forwarded-For"] = "198." .. (18 + math.floor(k / 65536)) .. "." .. math.floor(k / 256) % 256 .. "." .. k % 256 }
  for name, v in pairs(extra) do headers[name] = v end
  if body then
    headers["Content-Type"] = "application/json"
    return wrk.format(method, path, headers, string.format(body, k))
  end
  return wrk.format(method, path, headers)
end

function response(status, headers, rbody)
  local s = tostring(status)
  counts[s] = (counts[s] or 0) + 1
  seen = seen + 1
  if body_check and seen % 64 == 1 and not string.find(rbody, body_check, 1, true) then
    bad_body = bad_body + 1
    if first_bad == "" then
      first_bad = (s .. " " .. string.sub(rbody, 1, 300)):gsub('[%c"\\]', "'")
    end
  end
  if quota > 0 and seen >= quota then wrk.thread:stop() end
end

@DELAY@

function done(summary, latency, requests)
  local total, bad, shown = {}, 0, ""
  for _, t in ipairs(threads) do
    for s, n in pairs(t:get("counts")) do total[s] = (total[s] or 0) + n end
    bad = bad + t:get("bad_body")
    if shown == "" then shown = t:get("first_bad") end
  end
  local parts = {}
  for s, n in pairs(total) do table.insert(parts, string.format('"%s":%d', s, n)) end
  local e = summary.errors
  io.write(string.format('JSON {"requests":%d,"duration_us":%d,"p50":%d,"p99":%d,"p999":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},"statuses":{%s},"bad_body":%d,"first_bad":"%s"}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), e.connect, e.read, e.write, e.timeout, table.concat(parts, ","), bad, shown))
end
"""


def lua_str(s):
    return "nil" if s is None else json.dumps(s)


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def cpu_seconds(pid):
    """user + system CPU seconds of one process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Target:
    """Where one load goes and what it must answer.

    `expect` is the set of statuses allowed (as strings: {"200"} means all
    200); `body_check` a substring every 64th body must contain; `watch`
    names processes ({name: pid}) whose CPU time is recorded and which must
    still be alive after the run."""

    def __init__(self, name, port, path, expect, method="GET", headers=None, body=None,
                 body_check=None, watch=None):
        self.name, self.port, self.path, self.expect = name, port, path, set(expect)
        self.method, self.headers, self.body = method, headers or {}, body
        self.body_check, self.watch = body_check, watch or {}

    def describe(self):
        return f"{self.name} ({self.method} :{self.port}{self.path} {self.headers or ''})"


def probe(t, key=1):
    """One request with curl-like detail: fail before loading if it is already wrong."""
    c = http.client.HTTPConnection("127.0.0.1", t.port, timeout=5)
    ip = f"198.18.{key // 256 % 256}.{key % 256}"
    headers = {"X-Forwarded-For": ip, **t.headers}
    body = None
    if t.body is not None:
        body = t.body % key
        headers["Content-Type"] = "application/json"
    try:
        c.request(t.method, t.path, body=body, headers=headers)
        r = c.getresponse()
        text = r.read().decode(errors="replace")
    except OSError as e:
        raise BenchFailure(f"{t.describe()}: probe request failed: {e}") from e
    shown = f"{r.status} {dict(r.getheaders())} {text[:200]!r}"
    if str(r.status) not in t.expect:
        raise BenchFailure(f"{t.describe()}: expected status {sorted(t.expect)}, probe answered {shown}")
    if t.body_check and t.body_check not in text:
        raise BenchFailure(f"{t.describe()}: body lacks {t.body_check!r}: {shown}")
    return {"status": r.status, "body": text[:200]}


def wrk(t, seconds, keys=KEYS, connections=CONNECTIONS, threads=2, delay_ms=None, quota=0, check=True, start=0):
    """One wrk run against `t`; returns its figures, raises BenchFailure when
    an answer is not expected. `quota` stops each thread after that many
    answers; `start` shifts the sequence of client keys (to continue a fill)."""
    proc = start_wrk(t, seconds, keys, connections, threads, delay_ms, quota, start)
    return finish_wrk(t, proc, check)


def start_wrk(t, seconds, keys=KEYS, connections=CONNECTIONS, threads=2, delay_ms=None, quota=0, start=0):
    p = probe(t)
    script = os.path.join(work_dir(), f"wrk-{t.port}-{time.monotonic_ns()}.lua")
    extra = "{" + ", ".join(f"[{json.dumps(k)}] = {json.dumps(v)}" for k, v in t.headers.items()) + "}"
    fill = {
        "@KEYS@": str(keys), "@THREADS@": str(threads), "@START@": str(start), "@METHOD@": t.method, "@PATH@": t.path,
        "@BODY@": lua_str(t.body), "@EXTRA@": extra, "@QUOTA@": str(quota),
        "@BODY_CHECK@": lua_str(t.body_check),
        "@DELAY@": f"function delay() return {delay_ms} end" if delay_ms else "",
    }
    text = WRK_SCRIPT
    for k, v in fill.items():
        text = text.replace(k, v)
    with open(script, "w") as f:
        f.write(text)
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "-s", script, f"http://127.0.0.1:{t.port}{t.path}"]
    before = {name: cpu_seconds(pid) for name, pid in t.watch.items()}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.bench = {"probe": p, "cpu_before": before, "load_before": loadavg(), "children_cpu": children_cpu(),
                  "threads": threads, "connections": connections}
    return proc


def finish_wrk(t, proc, check=True):
    out, err = proc.communicate()
    info = proc.bench
    m = re.search(r"^JSON (.*)$", out, re.M)
    if not m:
        raise BenchFailure(f"{t.describe()}: wrk gave no result:\n{out}\n{err}")
    r = json.loads(m.group(1))
    alive = {name: os.path.exists(f"/proc/{pid}") for name, pid in t.watch.items()}
    cpu = {name: round(cpu_seconds(pid) - info["cpu_before"][name], 2)
           for name, pid in t.watch.items() if alive[name]}
    cpu["wrk"] = round(children_cpu() - info["children_cpu"], 2)
    result = {
        "rps": round(r["requests"] / (r["duration_us"] / 1e6), 1),
        "p50_ms": r["p50"] / 1000,
        "p99_ms": r["p99"] / 1000,
        "p999_ms": r["p999"] / 1000,
        "requests": r["requests"],
        "statuses": dict(sorted(r["statuses"].items())),
        "expected_statuses": sorted(t.expect),
        "errors": r["errors"],
        "bad_bodies": r["bad_body"],
        "first_bad_body": r.get("first_bad", ""),
        "seconds": round(r["duration_us"] / 1e6, 2),
        "threads": info["threads"],
        "connections": info["connections"],
        "loadavg_before": info["load_before"],
        "loadavg_after": loadavg(),
        "cpu_seconds": cpu,
        # CPU per answer: steadier than req/s when other jobs share the cores.
        "cpu_us_per_request": {name: round(v * 1e6 / max(r["requests"], 1), 1) for name, v in cpu.items()},
        "probe": info["probe"],
    }
    if check:
        verify(t, result, alive)
    return result


def verify(t, r, alive):
    dead = [name for name, ok in alive.items() if not ok]
    problems = []
    if dead:
        problems.append(f"process(es) {dead} died during the run")
    if r["requests"] == 0:
        problems.append("no answers at all")
    unexpected = {s: n for s, n in r["statuses"].items() if s not in t.expect}
    if unexpected:
        problems.append(f"unexpected statuses {unexpected} (all answers: {r['statuses']})")
    counted = sum(r["statuses"].values())
    if counted != r["requests"]:
        problems.append(f"{r['requests']} answers but {counted} statuses counted")
    errors = {k: v for k, v in r["errors"].items() if v}
    if errors:
        problems.append(f"socket errors {errors}")
    if r["bad_bodies"]:
        problems.append(f"{r['bad_bodies']} sampled bodies lack {t.body_check!r} (the first: {r.get('first_bad_body', '')!r})")
    if problems:
        raise BenchFailure(f"{t.describe()}: expected only {sorted(t.expect)}: " + "; ".join(problems))
