"""Fan-out cost: server CPU time per delivered data frame.

Both servers (sensorstream and the websockets `broadcast()` baseline) run at the
same time, each with its own clients, and take turns publishing: one measured
window for sensorstream, one for the baseline, repeated. The server reads its
own CPU time (getrusage) at the start and end of each window; the figure is
CPU seconds / frames written to clients in that window. The ratio is taken per
pair of neighbouring windows, then the median over pairs, so slow drifts in
what the machine's other tenants do cancel out.

Cases: one stream (100 clients x 200 batches/s, 1,000 x 20/s), and clients
subscribed to three streams that close their batches on the same clock grid,
as the server's default streams do (500 clients x 3 streams x 20/s): there
sensorstream writes each client a tick's three frames at once, and the baseline
calls broadcast() once per frame, as its users do.

Also reported: the bare send() floor (the same 1 KiB frame written to every
client socket in a tight loop inside the server process, no server logic),
measured right after each of sensorstream's windows, and with one stream
(nothing to coalesce) the server's CPU per frame against it: per window against
its own floor, then the median. With one stream also, as a diagnostic, the same
bare writes paced at the window's cadence (one round of writes per 1/rate s,
publishing stopped; the write loops' own CPU): the floor for writing at that
rate, which is higher than the back-to-back one (cold caches after each sleep).

And with one stream, two more servers with clients of their own, measured as
the servers are (whole-process CPU over a window, per frame): the bare server
(bench/baseline_bare.py: wakes on the same grid, frames each batch once, writes
it to every socket in a bare loop, nothing else), the floor of a *server* at
that cadence; and sensorstream with its fan-out replaced by that same bare loop
(`--flat-fanout`, everything else running: trio, keepalive, readers), which
shows how much of the gap per-client fan-out code could ever close. Their
windows sit next to sensorstream's: websockets, sensorstream, bare, flat.
"""

from __future__ import annotations

import contextlib
import time

from .common import Cluster, cpu_delta, median, row

SIZES = {
    # cases: (clients, streams each client gets), at frames_per_s frames written in all.
    "full": {"cases": ((100, 1), (1000, 1), (500, 3)), "frames_per_s": 20_000, "multi_frames_per_s": 30_000,
             "reps": 5, "warm": 1.0, "window": 5.0, "paced": 2.0},
    # Windows of 5 s = one keepalive ping round (every 5 s), so each window carries the same share of it.
    "quick": {"cases": ((1000, 1), (500, 3)), "frames_per_s": 20_000, "multi_frames_per_s": 30_000,
              "reps": 1, "warm": 0.5, "window": 5.0, "paced": 1.0},
    "smoke": {"cases": ((10, 1), (10, 3)), "frames_per_s": 500, "multi_frames_per_s": 600, "reps": 1, "warm": 0.2, "window": 0.5, "paced": 0.3},
}


# sensorstream with the fan-out replaced by a bare write loop (bench/server_proc.py);
# its writes are not the sessions' own, so heartbeats must not fill the gap.
FLAT = ("--flat-fanout", "--heartbeat", "1000")


def _pairs(a: list[dict], b: list[dict]) -> list[float]:
    """Per rep, a's CPU per frame over b's, from neighbouring windows."""
    return [x["us_per_frame"] / y["us_per_frame"] for x, y in zip(a, b) if x["us_per_frame"] and y["us_per_frame"]]


def _window(c: Cluster, rate: float, warm: float, window: float) -> dict:
    c.publish(rate)
    time.sleep(warm)
    c.reset()
    s0 = c.stats()
    time.sleep(window)
    s1 = c.stats()
    rep = c.report()
    c.publish(0)
    frames = s1["frames_sent"] - s0["frames_sent"]
    cpu = cpu_delta(s0, s1)
    wall = s1["wall"] - s0["wall"]
    out = {"frames": frames, "cpu_s": cpu, "wall_s": wall, "us_per_frame": 1e6 * cpu / frames if frames else None,
           "server_core_pct": 100 * cpu / wall, "published": s1["published"] - s0["published"],
           "received": rep["frames"], "loadgen_cpu_pct": 100 * rep["cpu"] / wall, "dropped": s1["dropped"] - s0["dropped"]}
    if "publish_cpu" in s1 and frames:
        # CPU inside hub.publish (encode, and handing each client its frame), per frame written.
        out["publish_us_per_frame"] = 1e6 * (s1["publish_cpu"] - s0["publish_cpu"]) / frames
    if s1.get("writes") is not None and frames:
        out["frames_per_write"] = frames / max(1, s1["writes"] - s0["writes"])
    return out


def _per_window(windows: list[dict], floors: list[dict], key: str) -> list[float]:
    """Each window's CPU per frame against the floor `key` measured right after it."""
    return [x["us_per_frame"] / f[key] for x, f in zip(windows, floors) if x["us_per_frame"] and f.get(key)]


def run(size: str = "full") -> dict:
    p = SIZES[size]
    results = {"method": __doc__.strip().splitlines()[0], "params": p, "cases": {}}
    for n, streams in p["cases"]:
        total = p["frames_per_s"] if streams == 1 else p["multi_frames_per_s"]
        rate = total / n / streams
        case = {"clients": n, "streams": streams, "batches_per_s": rate, "windows": {"sensorstream": [], "websockets": []}}
        with contextlib.ExitStack() as stack:
            ours = stack.enter_context(Cluster("sensorstream", n, timestamps=False, streams=streams))
            base = stack.enter_context(Cluster("websockets", n, timestamps=False, streams=streams))
            order = [("websockets", base), ("sensorstream", ours)]
            if streams == 1:
                case["windows"].update(bare=[], flat=[])
                order.append(("bare", stack.enter_context(Cluster("bare", n, timestamps=False))))
                order.append(("flat", stack.enter_context(Cluster("sensorstream", n, timestamps=False, server_flags=FLAT))))
            case["connected"] = {impl: c.ready for impl, c in order}
            case["placement"] = {impl: c.placement for impl, c in order}
            floors = []
            for _ in range(p["reps"]):
                for impl, c in order:
                    case["windows"][impl].append(_window(c, rate, p["warm"], p["window"]))
                    if impl == "sensorstream":
                        # The floor right after each window, so each window has its own
                        # (the machine's other tenants drift by tens of % within minutes).
                        f = ours.srv.cmd("floor 5" if size != "smoke" else "floor 2")
                        if streams == 1:
                            # The same bare writes at the window's own cadence (one round per
                            # 1/rate s): a write costs more after 50 ms of sleep than in a
                            # loop run back to back, and this is the floor for that cadence.
                            f.update(ours.srv.cmd(f"pfloor {rate:g} {p['paced']}", 60))
                        floors.append(f)
                    time.sleep(0.2)
            floor = {"floor_us": median([f.get("floor_us") for f in floors]), "runs": floors}
        w = case["windows"]
        vs_floor = _per_window(w["sensorstream"], floor["runs"], "floor_us")
        pairs = _pairs(w["sensorstream"], w["websockets"])
        us_ours = median([x["us_per_frame"] for x in w["sensorstream"]])
        us_base = median([x["us_per_frame"] for x in w["websockets"]])
        f_us = floor.get("floor_us")
        case["summary"] = {
            "us_per_frame": {"sensorstream": us_ours, "websockets": us_base},
            "frames_per_core_s": {"sensorstream": 1e6 / us_ours if us_ours else None, "websockets": 1e6 / us_base if us_base else None},
            "ratio": median(pairs),
            "ratio_per_pair": pairs,
            "publish_us_per_frame": median([x.get("publish_us_per_frame") for x in w["sensorstream"]]),
            "frames_per_write": median([x.get("frames_per_write") for x in w["sensorstream"]]),
            "send_floor_us": f_us,
            # Per window against its own floor, then the median: as for the websockets ratio.
            "vs_floor": median(vs_floor),
            "vs_floor_per_window": vs_floor,
            "paced_floor_us": median([f.get("pfloor_loop_us") for f in floor["runs"]]),
            "vs_paced_floor": median(_per_window(w["sensorstream"], floor["runs"], "pfloor_loop_us")),
            "delivered": {k: sum(x["received"] for x in v) / max(1, sum(x["frames"] for x in v)) for k, v in w.items()},
        }
        if streams == 1:
            vs_bare, flat_vs_bare = _pairs(w["sensorstream"], w["bare"]), _pairs(w["flat"], w["bare"])
            case["summary"].update({
                "bare_us_per_frame": median([x["us_per_frame"] for x in w["bare"]]),
                "flat_us_per_frame": median([x["us_per_frame"] for x in w["flat"]]),
                "vs_bare": median(vs_bare), "vs_bare_per_pair": vs_bare,
                "flat_vs_bare": median(flat_vs_bare), "flat_vs_bare_per_pair": flat_vs_bare,
                "bare_vs_floor": median(_per_window(w["bare"], floor["runs"], "floor_us")),
            })
        key = str(n) if streams == 1 else f"{n}x{streams}"
        results["cases"][key] = case
    return results


def rows(res: dict) -> list[dict]:
    out = []
    for case in res["cases"].values():
        s = case["summary"]
        r = s["ratio"]
        us = s["us_per_frame"]
        n, k = case["clients"], case.get("streams", 1)
        if k == 1:
            sec = f"fan-out, {n} clients x {case['batches_per_s']:g}/s, one stream"
            out.append(row(sec, "server CPU per delivered frame", us["sensorstream"], us["websockets"], "",
                           None, "us", ratio_value=r))
            out.append(row(sec, "bare send() floor (same run)", s["send_floor_us"], None, "", None, "us"))
            v = s["vs_floor"]
            out.append(row(sec, "server CPU per frame / bare send() floor", v, None, "<= 1.1",
                           None if v is None else v <= 1.1, "x"))
            if s.get("paced_floor_us") is not None:
                out.append(row(sec, "send() floor at the window's cadence (diag.)", s["paced_floor_us"], None, "", None, "us"))
                out.append(row(sec, "server CPU per frame / that floor (diag.)", s["vs_paced_floor"], None, "", None, "x"))
            if s.get("bare_us_per_frame") is not None:
                out.append(row(sec, "vs a bare server at the same cadence (diag.)", us["sensorstream"], s["bare_us_per_frame"],
                               "", None, "us", ratio_value=s["vs_bare"]))
                out.append(row(sec, "fan-out as a bare loop, rest of server (diag.)", s["flat_us_per_frame"], s["bare_us_per_frame"],
                               "", None, "us", ratio_value=s["flat_vs_bare"]))
                out.append(row(sec, "bare server / back-to-back floor (diag.)", s["bare_vs_floor"], None, "", None, "x"))
        else:
            sec = f"fan-out, {n} clients x {k} streams x {case['batches_per_s']:g}/s (one grid)"
            out.append(row(sec, "server CPU per delivered frame", us["sensorstream"], us["websockets"], "ratio <= 0.5",
                           None if r is None else r <= 0.5, "us", ratio_value=r))
            out.append(row(sec, "frames per write (one write per client per tick)", s["frames_per_write"], None, "", None, ""))
    return out
