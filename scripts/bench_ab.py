#!/usr/bin/env python3
"""A/B of tollgate builds on the embedded hot path, as bench/README's "What each
change bought" measures it: rounds of the HTTP floor, then for each binary a
fresh node with `/check` allowed, `/check` every key denied (after a priming
run) and `POST /v1/check`, each run checked like every bench run (all 200 /
all 429, bodies sampled; bench_load.py). Prints, per run kind, the req/s of
every round with its median and ratio to the floor's median, and the server's
CPU µs per answer (sorted). Builds run alternately, so a noisy machine hits
them alike; compare CPU per answer first.

    python3 scripts/bench_ab.py ROUNDS SECONDS BIN [BIN...]
    e.g. python3 scripts/bench_ab.py 3 4 /tmp/tollgate-before target/release/tollgate
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_procs as bp  # noqa: E402
from bench import ALL_200, ALL_429, check, prime, v1_check  # noqa: E402
from bench_load import Target, wrk  # noqa: E402


def main():
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    rounds, secs = int(sys.argv[1]), int(sys.argv[2])
    bins = {os.path.basename(b).replace("tollgate-", ""): b for b in sys.argv[3:]}
    res = {}
    try:
        for _ in range(rounds):
            p, port = bp.start_anchor("floor")
            res.setdefault("floor", []).append(wrk(Target("floor", port, "/", ALL_200, watch={"anchor": p.pid}), secs))
            bp.stop(p)
            for tag, b in bins.items():
                bp.BIN = b
                tg, port, _ = bp.start_tollgate(None)
                w = {"tollgate": tg.pid}
                res.setdefault(f"{tag} allow", []).append(wrk(check("allow", port, "/allow", ALL_200, w), secs))
                prime(check("priming", port, "/deny", {"200", "429"}, w), 30000)
                res.setdefault(f"{tag} deny", []).append(wrk(check("deny", port, "/deny", ALL_429, w), secs))
                res.setdefault(f"{tag} v1", []).append(wrk(v1_check("v1", port, w), secs))
                bp.stop(tg)
    finally:
        bp.kill_all()
    floor = sorted(r["rps"] for r in res["floor"])[len(res["floor"]) // 2]
    for name, runs in res.items():
        rps = sorted(r["rps"] for r in runs)
        cpu = sorted(round(list(r["cpu_us_per_request"].values())[0], 1) for r in runs)
        med = rps[len(rps) // 2]
        print(f"{name:14s} req/s {[round(x) for x in rps]} median {med:.0f} = {med / floor:.3f} x floor; "
              f"server CPU µs/answer {cpu}")


if __name__ == "__main__":
    main()
