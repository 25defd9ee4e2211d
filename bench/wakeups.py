"""What waking up costs: CPU per wake-up of an otherwise idle process.

    python -m bench.wakeups [--rates 20,200] [--seconds 5] [--cpu 0]

A server that delivers a stream at R batches a second wakes R times a second,
and its CPU per frame carries that cost; a `send()` loop run back to back never
does. This measures it alone, for the two ways to sleep until the next batch
on the clock grid: a bare `epoll.poll(timeout)` loop (what bench/baseline_bare.py
does) and a trio `sleep_until` loop (what sensorstream's sources and the bench's
publisher do). Each is its own child process, pinned to the server's core;
figure = the child's CPU time (getrusage) / wake-ups. The ratio trio / epoll is
taken per rate, from runs next to each other. Nothing else runs in the loops.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import select
import subprocess
import sys
import time

from .common import REPO, SERVER_CPU, cpu_seconds, pin


def _cpu() -> float:
    return sum(cpu_seconds())


def epoll_loop(rate: float, seconds: float) -> dict:
    ep = select.epoll()
    k = math.floor(time.monotonic() * rate) + 1
    end = time.monotonic() + seconds
    n = 0
    c0 = _cpu()
    while True:
        now = time.monotonic()
        if now >= end:
            break
        due = k / rate
        if now >= due:
            k += 1
            n += 1
            continue
        ep.poll(due - now)
    return {"wakeups": n, "us_per_wakeup": 1e6 * (_cpu() - c0) / max(n, 1)}


def trio_loop(rate: float, seconds: float) -> dict:
    import trio

    async def main() -> dict:
        k = math.floor(trio.current_time() * rate) + 1
        end = trio.current_time() + seconds
        n = 0
        c0 = _cpu()
        while trio.current_time() < end:
            await trio.sleep_until(k / rate)
            k += 1
            n += 1
        return {"wakeups": n, "us_per_wakeup": 1e6 * (_cpu() - c0) / max(n, 1)}

    return trio.run(main)


LOOPS = {"epoll": epoll_loop, "trio": trio_loop}


def _child(kind: str, rate: float, seconds: float, cpu: int) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.wakeups", "--child", kind, "--rates", f"{rate:g}",
                          "--seconds", str(seconds), "--cpu", str(cpu)],
                         cwd=REPO, capture_output=True, text=True, timeout=seconds + 60, check=True)
    return json.loads(out.stdout)


def run(rates: list[float], seconds: float, cpu: int = SERVER_CPU, reps: int = 3) -> dict:
    res: dict = {"method": __doc__.strip().splitlines()[0], "seconds": seconds, "rates": {}}
    for rate in rates:
        runs = {"epoll": [], "trio": []}
        for _ in range(reps):
            for kind in ("epoll", "trio"):
                runs[kind].append(_child(kind, rate, seconds, cpu)["us_per_wakeup"])
        ep, tr = sorted(runs["epoll"])[reps // 2], sorted(runs["trio"])[reps // 2]
        res["rates"][f"{rate:g}"] = {"epoll_us": ep, "trio_us": tr, "trio_vs_epoll": tr / ep if ep else None, "runs": runs}
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.wakeups", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="20,200", help="wake-ups a second, comma-separated")
    ap.add_argument("--seconds", type=float, default=5.0, help="per loop and rate")
    ap.add_argument("--reps", type=int, default=3, help="alternating runs of each loop per rate (median)")
    ap.add_argument("--cpu", type=int, default=SERVER_CPU)
    ap.add_argument("--out", default=None, help="also write the result here as JSON")
    ap.add_argument("--child", choices=sorted(LOOPS), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    try:
        rates = [float(r) for r in a.rates.split(",") if r]
    except ValueError:
        ap.error(f"--rates: comma-separated numbers, not {a.rates!r}")
    if not rates or min(rates) <= 0 or a.seconds <= 0 or a.reps < 1:
        ap.error("--rates, --seconds and --reps must be positive")
    if a.child:
        pin(a.cpu)
        print(json.dumps(LOOPS[a.child](rates[0], a.seconds)))
        return
    res = run(rates, a.seconds, a.cpu, a.reps)
    print(f"{'wake-ups/s':>10s} {'epoll µs':>9s} {'trio µs':>8s} {'trio/epoll':>10s}")
    for rate, r in res["rates"].items():
        print(f"{rate:>10s} {r['epoll_us']:9.1f} {r['trio_us']:8.1f} {r['trio_vs_epoll']:10.2f}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
