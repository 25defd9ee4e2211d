"""The Redis bus (`--bus`): what the hop through Redis costs, against the in-process hub, in the same run.

    python -m bench.bus [--quick]

One redis-server (started here, on a free port, no persistence). Cases, each
with its baseline measured in the same run:

- latency: one publisher process and one gateway process (bench.server_proc
  --role publisher / gateway), load-generator clients on the gateway; against
  the in-process server (--role local) with the same clients. Receipt time
  minus the batch's last sample time (which is its publish time), p50 / p99.
- gateway CPU per delivered frame: the gateway's own CPU time over the frames it
  wrote, against the in-process server's (whose figure also includes encoding
  and publishing, which a gateway does not do: the comparison favours neither
  side by much, both are dominated by the writes).
- publisher CPU per batch: the publisher process (no clients) over the batches
  it wrote to Redis, and Redis commands per batch (from INFO commandstats).
- two gateways: frames per CPU-second of each of two gateways serving at once
  (each its own clients), against one gateway alone: what a second core adds.
- mass resume: 1,000 clients connect to a gateway at once, each resuming the
  stream 2 s (40 batches) back; time until every one of them has its first live
  batch, and how many history reads the gateway made for them.

The machine has 2 cores shared with other work: server processes are pinned
to CPU 0, load generators to CPU 1, Redis and the publisher float. Absolute
figures drift; compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

from .common import CLIENT_CPU, SERVER_CPU, Child, cpu_delta, merge_reports, pct

SIZES = {
    "full": {"clients": 500, "rate": 20.0, "warm": 1.0, "window": 4.0, "reps": 3, "resumers": 1000},
    "quick": {"clients": 200, "rate": 20.0, "warm": 1.0, "window": 2.0, "reps": 1, "resumers": 1000},
}


class Redis:
    def __init__(self):
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = tempfile.mkdtemp(prefix="bench-redis-")
        self.proc = subprocess.Popen([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                      "--dir", self.dir, "--loglevel", "warning"], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def commands(self) -> tuple[int, int]:
        """Commands Redis has executed and the µs it spent in them (INFO commandstats, summed;
        a PUBLISH's time includes writing the message to every subscriber)."""
        out = subprocess.run(["redis-cli", "-p", str(self.port), "info", "commandstats"], capture_output=True, text=True).stdout
        calls = usec = 0
        for line in out.splitlines():
            if line.startswith("cmdstat_"):
                f = dict(part.split("=") for part in line.split(":", 1)[1].split(","))
                calls += int(f["calls"])
                usec += int(f["usec"])
        return calls, usec

    def close(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _server(role: str, bus: str | None, cpu: int | None) -> Child:
    args = ["--role", role] + (["--bus", bus] if bus else []) + (["--cpu", str(cpu)] if cpu is not None else [])
    c = Child("bench.server_proc", args, name=role)
    c.hello = c.read(60)
    return c


def _loadgen(port: int, n: int) -> Child:
    lg = Child("bench.loadgen", ["--port", str(port), "--clients", str(n), "--cpu", str(CLIENT_CPU), "--busy-poll"], name="loadgen")
    r = lg.read(300)
    assert r["ready"] == n, r
    return lg


def _window(server: Child, lgs: list[Child], warm: float, window: float) -> dict:
    time.sleep(warm)
    for lg in lgs:
        lg.cmd("reset")
    s0 = server.cmd("stats")
    time.sleep(window)
    s1 = server.cmd("stats")
    rep = merge_reports([lg.cmd("report", 120) for lg in lgs])
    frames = s1["frames_sent"] - s0["frames_sent"]
    cpu = cpu_delta(s0, s1)
    lat = rep["lat_last"]
    return {"frames": frames, "cpu_s": cpu, "us_per_frame": 1e6 * cpu / frames if frames else None,
            "received": rep["frames"], "p50_ms": pct(lat, 50) and 1e3 * pct(lat, 50), "p99_ms": pct(lat, 99) and 1e3 * pct(lat, 99),
            "fps": frames / max(1e-9, s1["wall"] - s0["wall"])}


def _mass_resume(port: int, n: int, epoch: str, seq: int) -> dict:
    """n raw clients (bench.loadgen, --parallel n: all handshakes at once), each resuming
    `seq`: seconds from the first connect until every one has its first live batch."""
    lg = Child("bench.loadgen", ["--port", str(port), "--clients", str(n), "--cpu", str(CLIENT_CPU), "--parallel", str(n),
                                 "--resume", f"{epoch}:{seq}"], name="resumers")
    try:
        lg.read(300)
        deadline = time.monotonic() + 60
        while True:
            rep = lg.cmd("report", 120)
            if len(rep["live_times"]) >= n or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        lg.close()
    t = rep["live_times"]
    return {"clients": n, "live": len(t), "all_live_s": max(t) if t else None, "p50_live_s": float(np.median(t)) if t else None,
            "replayed_frames": rep["frames"] - len(t)}


def _catalog(port: int) -> dict:
    import trio
    import trio_websocket

    async def main():
        async with trio_websocket.open_websocket("127.0.0.1", port, "/ws", use_ssl=False) as ws:
            return json.loads(await ws.get_message())

    return {s["id"]: s for s in trio.run(main)["streams"]}


def run(size: str = "full") -> dict:
    p = SIZES[size]
    res: dict = {"method": __doc__.strip().splitlines()[0], "params": p}
    redis = Redis()
    children: list[Child] = []
    try:
        # ---- the in-process hub and the bus (one publisher, one gateway), alive together and
        # measured in alternating windows (only one of them publishing at a time), so the
        # machine's other tenants weigh on both alike; ratios are taken per pair of windows.
        local = _server("local", None, SERVER_CPU)
        children.append(local)
        lg_local = _loadgen(local.hello["port"], p["clients"])
        children.append(lg_local)
        pub = _server("publisher", redis.url, None)
        children.append(pub)
        gw = _server("gateway", redis.url, SERVER_CPU)
        children.append(gw)
        pub.cmd(f"publish {p['rate']:g}")
        time.sleep(1.0)
        lg = _loadgen(gw.hello["port"], p["clients"])
        children.append(lg)
        pub.cmd("publish 0")
        windows = {"local": [], "bus": []}
        pubw = []
        for _ in range(p["reps"]):
            local.cmd(f"publish {p['rate']:g}")
            windows["local"].append(_window(local, [lg_local], p["warm"], p["window"]))
            local.cmd("publish 0")
            pub.cmd(f"publish {p['rate']:g}")
            c0, q0 = pub.cmd("stats"), redis.commands()
            windows["bus"].append(_window(gw, [lg], p["warm"], p["window"]))
            c1, q1 = pub.cmd("stats"), redis.commands()
            pub.cmd("publish 0")
            batches = c1["published"] - c0["published"]
            pubw.append({"batches": batches, "us_per_batch": 1e6 * cpu_delta(c0, c1) / max(1, batches),
                         "redis_commands_per_batch": (q1[0] - q0[0]) / max(1, batches),
                         "redis_us_per_batch": (q1[1] - q0[1]) / max(1, batches)})
        lg_local.close()
        local.close()
        res["windows"] = windows
        med = lambda xs: float(np.median([x for x in xs if x is not None]))  # noqa: E731
        res["local"] = {k: med([w[k] for w in windows["local"]]) for k in ("us_per_frame", "p50_ms", "p99_ms", "fps")}
        res["bus"] = {k: med([w[k] for w in windows["bus"]]) for k in ("us_per_frame", "p50_ms", "p99_ms", "fps")}
        res["cpu_ratio_pairs"] = [b["us_per_frame"] / a["us_per_frame"] for a, b in zip(windows["local"], windows["bus"])]
        res["publisher"] = {k: med([w[k] for w in pubw]) for k in ("us_per_batch", "redis_commands_per_batch", "redis_us_per_batch")}
        pub.cmd(f"publish {p['rate']:g}")

        # ---- a second gateway, on the other core, with its own clients
        gw2 = _server("gateway", redis.url, CLIENT_CPU)
        children.append(gw2)
        lg2 = _loadgen(gw2.hello["port"], p["clients"])
        children.append(lg2)
        time.sleep(p["warm"])
        for x in (lg, lg2):
            x.cmd("reset")
        a0, b0 = gw.cmd("stats"), gw2.cmd("stats")
        time.sleep(p["window"])
        a1, b1 = gw.cmd("stats"), gw2.cmd("stats")
        fa, fb = a1["frames_sent"] - a0["frames_sent"], b1["frames_sent"] - b0["frames_sent"]
        ca, cb = cpu_delta(a0, a1), cpu_delta(b0, b1)
        one = res["bus"]["us_per_frame"]
        res["two_gateways"] = {"frames": [fa, fb], "us_per_frame": [1e6 * ca / max(1, fa), 1e6 * cb / max(1, fb)],
                               # Capacity of two cores over one: frames per CPU-second of the pair, scaled to
                               # two saturated cores, over one gateway's frames per CPU-second.
                               "capacity_ratio": (2 * (fa + fb) / max(1e-9, ca + cb)) / (1e6 / one) if one else None}
        lg2.close()
        gw2.close()
        lg.close()

        # ---- mass resume: a gateway died; its clients all come to a fresh one (history not yet mirrored)
        gw.close()
        gw3 = _server("gateway", redis.url, SERVER_CPU)
        children.append(gw3)
        cat = _catalog(gw3.hello["port"])
        s0 = gw3.cmd("stats")
        info = cat["bench/s"]
        head = pub.cmd("stats")["published"]
        res["mass_resume"] = _mass_resume(gw3.hello["port"], p["resumers"], info["epoch"], max(0, head - 41))
        s1 = gw3.cmd("stats")
        res["mass_resume"]["history_reads"] = s1["bus"]["history_reads"] - s0["bus"]["history_reads"]
        pub.cmd("publish 0")
    finally:
        for c in children:
            try:
                c.close()
            except Exception:
                pass
        redis.close()
    loc, bus = res["local"], res["bus"]
    res["summary"] = {
        "added_latency_ms": {"p50": bus["p50_ms"] - loc["p50_ms"], "p99": bus["p99_ms"] - loc["p99_ms"]},
        "latency_ms": {"local": [loc["p50_ms"], loc["p99_ms"]], "bus": [bus["p50_ms"], bus["p99_ms"]]},
        "gateway_cpu_ratio": float(np.median(res["cpu_ratio_pairs"])),
        "frames_per_core_s": {"gateway": 1e6 / bus["us_per_frame"], "local": 1e6 / loc["us_per_frame"]},
    }
    return res


def table(res: dict) -> str:
    s, loc, bus = res["summary"], res["local"], res["bus"]
    pb, two, mr = res["publisher"], res["two_gateways"], res["mass_resume"]
    rows = [
        ("latency p50 / p99, ms (bus vs in-process)", f"{bus['p50_ms']:.2f} / {bus['p99_ms']:.2f}",
         f"{loc['p50_ms']:.2f} / {loc['p99_ms']:.2f}", f"+{s['added_latency_ms']['p50']:.2f} / +{s['added_latency_ms']['p99']:.2f} ms"),
        ("server CPU per delivered frame, µs (gateway vs in-process)", f"{bus['us_per_frame']:.2f}", f"{loc['us_per_frame']:.2f}",
         f"{s['gateway_cpu_ratio']:.2f} (target ≤ 1.1)"),
        ("publisher CPU per batch, µs; Redis commands, Redis µs per batch", f"{pb['us_per_batch']:.0f}; {pb['redis_commands_per_batch']:.2f}, {pb['redis_us_per_batch']:.1f}", "", ""),
        ("two gateways: CPU per frame each, µs; capacity vs one", " / ".join(f"{x:.2f}" for x in two["us_per_frame"]),
         f"{bus['us_per_frame']:.2f}", f"{two['capacity_ratio']:.2f} (target ≥ 1.8)"),
        (f"mass resume: {mr['clients']} clients all live, s (p50); history reads", f"{mr['all_live_s']:.2f} ({mr['p50_live_s']:.2f}); {mr['history_reads']}",
         "", "target ≤ 5 s"),
    ]
    w = max(len(r[0]) for r in rows)
    lines = [f"{'metric':<{w}}  {'bus':>24}  {'baseline':>16}  ratio"]
    lines += [f"{a:<{w}}  {b:>24}  {c:>16}  {d}" for a, b, c, d in rows]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    res = run("quick" if a.quick else "full")
    print(table(res))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1, default=float)


if __name__ == "__main__":
    sys.exit(main())
