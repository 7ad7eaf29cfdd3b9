"""The processes scripts/bench.py measures: its own redis-server, tollgate
replicas, the anchors (bench/anchors) and, when LIMITADOR_BIN is set,
Limitador. Everything on loopback, on free ports, killed at exit."""

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

from bench_load import work_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
# TOLLGATE_BIN measures another build (an A/B, or the binary of an earlier commit).
BIN = os.environ.get("TOLLGATE_BIN", os.path.join(TARGET, "release", "tollgate"))
ANCHOR_BIN = os.path.join(TARGET, "anchors", "release", "anchor")
ADMIN_TOKEN = "bench-admin-token"  # at least 16 bytes, as tollgate requires
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


def kill_all():
    for p in PROCS:
        if p.poll() is None:
            p.kill()


def port_open(port):
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


# === Redis ===


def start_redis():
    """A redis-server on a free port, saving nothing, its `--dir` in this run's
    scratch directory (a replica's sync or a SAVE must not land in the tree)."""
    port = free_port()
    p = spawn(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", work_dir()])
    wait_for(lambda: redis(port, "PING") == "PONG", "redis-server")
    return p, port


def prioritise_redis(p):
    """Give a redis-server the CPU first, as if it had a machine of its own:
    nice -15 and SCHED_FIFO at the lowest real-time priority, as the test
    suite's timed Redis (tests/allowlist_scale). On this 2-core machine Redis
    shares the cores with every node and the load generator; at the normal
    priority it waits its turn behind them, and that wait would be counted
    against the calls Redis serves. Says what it could set (root or
    CAP_SYS_NICE is needed); the scripts put that in their results.
    REDIS_PRIORITY=normal leaves it as it is (to measure the difference)."""
    if os.environ.get("REDIS_PRIORITY") == "normal":
        return "normal (REDIS_PRIORITY=normal)"
    nice = subprocess.run(["renice", "-n", "-15", "-p", str(p.pid)], capture_output=True).returncode == 0
    fifo = subprocess.run(["chrt", "-f", "-p", "1", str(p.pid)], capture_output=True).returncode == 0
    return " + ".join([x for x, ok in (("nice -15", nice), ("SCHED_FIFO 1", fifo)) if ok]) or "normal (raising refused)"


def redis(port, *args, stdin=None):
    out = subprocess.run(["redis-cli", "-p", str(port), *args], input=stdin, capture_output=True, text=True)
    return out.stdout.strip()


def redis_info(port, field, section=""):
    m = re.search(rf"^{field}:(\S+)", redis(port, "INFO", *([section] if section else [])), re.M)
    return m.group(1) if m else None


def redis_cpu(port):
    """Redis's own user + system CPU seconds so far."""
    return float(redis_info(port, "used_cpu_user", "cpu")) + float(redis_info(port, "used_cpu_sys", "cpu"))


def commandstats(port):
    """{command: (calls, usec, failed + rejected calls)} from INFO commandstats."""
    out = {}
    for line in redis(port, "INFO", "commandstats").splitlines():
        m = re.match(r"cmdstat_(\S+?):(.*)", line)
        if m:
            f = dict(kv.split("=") for kv in m.group(2).split(","))
            bad = int(f.get("failed_calls", 0)) + int(f.get("rejected_calls", 0))
            out[m.group(1)] = (int(f["calls"]), int(f["usec"]), bad)
    return out


def resp(*args):
    """One command in RESP, for redis-cli --pipe."""
    out = [f"*{len(args)}\r\n"]
    for a in args:
        a = str(a)
        out.append(f"${len(a.encode())}\r\n{a}\r\n")
    return "".join(out)


ALGORITHMS = ("fixed_window", "sliding_window", "sliding_log", "gcra")


def lua(name):
    """A script as tollgate runs it: an algorithm is its module followed by
    lua/one_rule.lua (as src/limiter/redis_store.rs builds it); any other
    name is its file (the list writers after lua/list_upsert.lua, their module)."""
    def read(n):
        with open(os.path.join(ROOT, "lua", f"{n}.lua")) as f:
            return f.read()
    if name in ALGORITHMS:
        return f"{read(name)}\nlocal M = {name}\n{read('one_rule')}"
    if name in ("allow_upsert", "deny_ban"):
        return f"{read('list_upsert')}\n{read(name)}"
    return read(name)


# === tollgate ===

# Every rule matches on the path the proxy reports (X-Forwarded-Uri, the default family); the
# decision port serves /check, /check/nginx, /check/{*path} and /v1/check.
CONFIG = """
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
{grpc}
{redis}
[client_ip]
trusted_proxies = ["127.0.0.1/32"]

# The memory runs hold 1 000 000 clients: above the default bound (64 MiB),
# where new keys would be refused.
[local_store]
max_bytes = 4_000_000_000

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
name = "allow"
match = {{ path_prefix = "/allow" }}
key = "ip"
limits = ["{limit}"]
algorithm = "fixed_window"
{extra}
"""

# One rule per algorithm (Redis CPU per decision, embedded memory per client).
# gcra takes `{gcra_limit}`: its exact arithmetic refuses a burst × period
# past 2^53 µs (1000000000/h is refused; at most 2501999/h), see start_tollgate.
ALGORITHM_RULES = "".join(
    f'\n[[rule]]\nname = "{tag}"\nmatch = {{ path_prefix = "/{tag}" }}\nkey = "ip"\nlimits = ["{{{lim}}}"]\nalgorithm = "{alg}"\n'
    for alg, tag, lim in [("fixed_window", "fw", "limit"), ("sliding_window", "sw", "limit"),
                          ("sliding_log", "sl", "limit"), ("gcra", "gc", "gcra_limit")]
)

# A tracked rule (activity counters, issue 19): the same limit as "allow", so
# a /tracked run against an /allow run isolates the cost of tracking. Redis only
# (the embedded store refuses tracked rules).
TRACKED_RULE = ('\n[[rule]]\nname = "tracked"\nmatch = { path_prefix = "/tracked" }\nkey = "ip"\n'
                'limits = ["{limit}"]\nalgorithm = "fixed_window"\ntrack = true\n')


# Quota leases (issue 30, scripts/bench_hot.py), Redis only: one key far
# below its limit (`/hot`, a 1 s window so slices are taken again each
# second), the same rule without a lease (`/hotnl`), and a key driven at
# about twice its limit (`/near`, 2000/s).
LEASE_RULES = """
[[rule]]
name = "hot"
match = { path_prefix = "/hot/" }
key = "ip"
limits = ["100000000/s"]
algorithm = "fixed_window"
lease = "auto"

[[rule]]
name = "hotnl"
match = { path_prefix = "/hotnl/" }
key = "ip"
limits = ["100000000/s"]
algorithm = "fixed_window"

[[rule]]
name = "near"
match = { path_prefix = "/near/" }
key = "ip"
limits = ["2000/s"]
algorithm = "fixed_window"
lease = "auto"
"""

# Envoy's RLS (grpc_listen set): one descriptor, the client address, as
# bench/grpc_vs_check.rs asks it.
RLS_RULE = """
[[rule]]
name = "rls"
domain = "bench"
descriptor = [{ key = "remote_address" }]
limits = ["1000000000/h"]
"""


def start_tollgate(redis_port, prefix=None, limit="1000000000/h", grpc_port=None):
    port, admin = free_port(), free_port()
    prefix = prefix or f"bench{port}"
    # A generous timeout: on this shared machine a 25 ms stall happens, and a
    # timed-out call is decided by on_redis_error (counted, and a failed run here).
    section = (f'[redis]\nurl = "redis://127.0.0.1:{redis_port}"\nprefix = "{prefix}"\ntimeout = "1s"\n'
               if redis_port else "")
    path = os.path.join(work_dir(), f"tollgate-{port}.toml")
    with open(path, "w") as f:
        extra = ALGORITHM_RULES + (TRACKED_RULE if redis_port else "")
        # Far above any load here, and within gcra's exact range.
        gcra_limit = "2000000/h" if limit == "1000000000/h" else limit
        f.write(CONFIG.format(port=port, admin=admin, redis=section, limit=limit,
                              grpc=f'grpc_listen = "127.0.0.1:{grpc_port}"' if grpc_port else "",
                              extra=extra.replace("{limit}", limit).replace("{gcra_limit}", gcra_limit)
                              + (LEASE_RULES if redis_port else "")
                              + (RLS_RULE if grpc_port else "")))
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


def fallback_decisions(admin):
    """Decisions that did not come from the store (Redis away, timed out, breaker open)."""
    m = metrics(admin)
    return metric_sum(m, "tollgate_decisions_total", outcome="fallback_allowed") + \
        metric_sum(m, "tollgate_decisions_total", outcome="fallback_limited")


def rss_kb(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(rf"{field}:\s+(\d+) kB", f.read()).group(1))


# === anchors ===


def start_anchor(mode, redis_port=None):
    port = free_port()
    args = [ANCHOR_BIN, mode, str(port)] + ([f"redis://127.0.0.1:{redis_port}"] if redis_port else [])
    p = spawn(args)
    wait_for(lambda: port_open(port), f"anchor {mode}")
    return p, port


# === Limitador (optional) ===

LIMITADOR_LIMITS = """- namespace: bench
  name: per_key
  max_value: 1000000000
  seconds: 60
  conditions: []
  variables:
    - descriptors[0].key
"""


def start_limitador(binary, redis_port=None):
    port, rls = free_port(), free_port()
    limits = os.path.join(work_dir(), "limitador-limits.yaml")
    with open(limits, "w") as f:
        f.write(LIMITADOR_LIMITS)
    storage = ["redis", f"redis://127.0.0.1:{redis_port}"] if redis_port else ["memory", "--cache", "100000"]
    p = spawn([binary, "-B", "127.0.0.1", "-P", str(port), "-b", "127.0.0.1", "-p", str(rls), limits, *storage],
              env={**os.environ, "RUST_LOG": "warn"})
    wait_for(lambda: port_open(port), "limitador")
    p.rls_port = rls  # its gRPC RLS (Envoy's ShouldRateLimit), domain "bench"
    return p, port


def limitador_revision(binary):
    out = subprocess.run([binary, "--version"], capture_output=True, text=True)
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "unknown"
