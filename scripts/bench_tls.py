#!/usr/bin/env python3
"""/check with Redis over TLS vs plain TCP, in the same run, on one machine.

One redis-server listens on a plain port and a TLS port (same data, same
process); two tollgate processes use one each (the TLS one with a private CA
made here by the openssl CLI). wrk drives `/check` on each in turn, rounds
alternating (plain, TLS, plain, TLS, ...) so machine load drifts hit both.
Every request is a limiter call (a 10^9/h rule, 10 000 client keys), and the
status mix of every run is printed, so a ratio is never one of error pages.

Usage: cargo build --release && scripts/bench_tls.py  (BENCH_SECONDS, BENCH_ROUNDS)
"""

import json
import os
import re
import statistics
import subprocess
import sys
import urllib.request

from bench_load import work_dir
from bench_procs import BIN, PROCS, free_port, spawn, stop, wait_for

SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CONNECTIONS = 64


def openssl(*args):
    subprocess.run(["openssl", *args], cwd=work_dir(), check=True, capture_output=True)


def make_pki():
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-days", "2", "-subj", "/CN=bench-ca", "-keyout", "ca.key", "-out", "ca.crt")
    openssl("req", *ec, "-subj", "/CN=server", "-keyout", "server.key", "-out", "server.csr")
    with open(os.path.join(work_dir(), "server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-out", "server.crt", "-extfile", "server.ext")


def start_redis():
    port, tls_port = free_port(), free_port()
    w = lambda n: os.path.join(work_dir(), n)
    spawn(["redis-server", "--port", str(port), "--tls-port", str(tls_port), "--bind", "127.0.0.1",
           "--save", "", "--appendonly", "no", "--dir", work_dir(), "--tls-cert-file", w("server.crt"),
           "--tls-key-file", w("server.key"), "--tls-ca-cert-file", w("ca.crt"), "--tls-auth-clients", "no"])
    ping = lambda: subprocess.run(["redis-cli", "-p", str(port), "PING"], capture_output=True, text=True).stdout
    wait_for(lambda: "PONG" in ping(), "redis-server")
    return port, tls_port


CONFIG = """
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"

[redis]
url = "{url}"
prefix = "{prefix}"
{tls}
[client_ip]
trusted_proxies = ["127.0.0.1/32"]

[[rule]]
name = "bench"
key = "ip"
limits = ["1000000000/h"]
"""


def start_tollgate(url, tls):
    port, admin = free_port(), free_port()
    path = os.path.join(work_dir(), f"tollgate-{port}.toml")
    with open(path, "w") as f:
        f.write(CONFIG.format(port=port, admin=admin, url=url, prefix=f"b{port}", tls=tls))
    spawn([BIN, "serve", "--config", path], env={**os.environ, "RUST_LOG": "warn", "TOLLGATE_ADMIN_TOKEN": "bench-admin-token"})
    wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz").status == 200, "tollgate")
    ready = urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz").read().decode().strip()
    # One request by hand first: the answer the load will repeat.
    curl = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "X-Forwarded-For: 198.18.0.1",
                           f"http://127.0.0.1:{port}/check"], capture_output=True, text=True).stdout
    print(f"  {ready!r}; curl /check -> {curl}")
    if curl != "200":
        sys.exit("bench_tls: /check does not answer 200; refusing to measure")
    return port


WRK_SCRIPT = """
local i = 0
request = function()
  i = i + 1
  local k = (i * 7919) % 10000
  return wrk.format("GET", "/check", { ["X-Forwarded-For"] = "198.18." .. math.floor(k / 256) .. "." .. k % 256 })
end
done = function(summary, latency, requests)
  io.write(string.format("JSON {\\"requests\\":%d,\\"duration_us\\":%d,\\"p50\\":%d,\\"p99\\":%d,\\"non2xx\\":%d,\\"errors\\":%d}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def wrk(port):
    script = os.path.join(work_dir(), "check.lua")
    with open(script, "w") as f:
        f.write(WRK_SCRIPT)
    out = subprocess.run(["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "-s", script,
                          f"http://127.0.0.1:{port}/check"], capture_output=True, text=True).stdout
    m = re.search(r"^JSON (.*)$", out, re.M)
    if not m:
        sys.exit(f"bench_tls: wrk gave no result:\n{out}")
    r = json.loads(m.group(1))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    return r


def main():
    if not os.path.exists(BIN):
        sys.exit(f"bench_tls: build first (cargo build --release): {BIN} is missing")
    make_pki()
    port, tls_port = start_redis()
    print("tollgate over plain TCP:")
    plain = start_tollgate(f"redis://127.0.0.1:{port}", "")
    print("tollgate over TLS:")
    tls = start_tollgate(f"rediss://127.0.0.1:{tls_port}",
                         f'[redis.tls]\nca_file = "{os.path.join(work_dir(), "ca.crt")}"\n')
    runs = {"plain": [], "tls": []}
    for r in range(ROUNDS):
        for name, p in (("plain", plain), ("tls", tls)):
            res = wrk(p)
            runs[name].append(res["rps"])
            print(f"  round {r + 1} {name:5}: {res['rps']:9.0f} req/s  p50 {res['p50'] / 1000:.2f} ms  "
                  f"p99 {res['p99'] / 1000:.2f} ms  status: {res['requests'] - res['non2xx']} x 200, "
                  f"{res['non2xx']} other, {res['errors']} socket errors")
    p, t = statistics.median(runs["plain"]), statistics.median(runs["tls"])
    print(f"median: plain {p:.0f} req/s, TLS {t:.0f} req/s, TLS/plain = {t / p:.2f}")


if __name__ == "__main__":
    try:
        main()
    finally:
        for proc in PROCS:
            stop(proc)
