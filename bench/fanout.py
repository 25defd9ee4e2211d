"""Fan-out cost: server CPU time per delivered data frame.

Both servers (sensorstream and the websockets `broadcast()` baseline) run at the
same time, each with its own clients, and take turns publishing: one measured
window for sensorstream, one for the baseline, repeated. The server reads its
own CPU time (getrusage) at the start and end of each window; the figure is
CPU seconds / frames written to clients in that window. The ratio is taken per
pair of neighbouring windows, then the median over pairs, so slow drifts in
what the machine's other tenants do cancel out.

Also reported: the bare send() floor (the same 1 KiB frame written to every
client socket in a tight loop inside the server process, no server logic), and
the CPU spent inside hub.publish per frame (encode + fan-out, sensorstream only).
"""

from __future__ import annotations

import time

from .common import Cluster, cpu_delta, median, row

SIZES = {
    "full": {"clients": (100, 1000), "frames_per_s": 20_000, "reps": 3, "warm": 1.0, "window": 5.0},
    # Windows of 5 s = one keepalive ping round (every 5 s), so each window carries the same share of it.
    "quick": {"clients": (1000,), "frames_per_s": 20_000, "reps": 1, "warm": 0.5, "window": 5.0},
    "smoke": {"clients": (10,), "frames_per_s": 500, "reps": 1, "warm": 0.2, "window": 0.5},
}


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
    if "publish_cpu" in s1 and s1["publish_frames"] > s0["publish_frames"]:
        out["publish_us_per_frame"] = 1e6 * (s1["publish_cpu"] - s0["publish_cpu"]) / (s1["publish_frames"] - s0["publish_frames"])
        out["direct_share"] = (s1["publish_frames"] - s0["publish_frames"]) / frames if frames else None
    return out


def run(size: str = "full") -> dict:
    p = SIZES[size]
    results = {"method": __doc__.strip().splitlines()[0], "params": p, "cases": {}}
    for n in p["clients"]:
        rate = p["frames_per_s"] / n
        case = {"clients": n, "batches_per_s": rate, "windows": {"sensorstream": [], "websockets": []}}
        with Cluster("sensorstream", n, timestamps=False) as ours, Cluster("websockets", n, timestamps=False) as base:
            case["connected"] = {"sensorstream": ours.ready, "websockets": base.ready}
            case["placement"] = {"sensorstream": ours.placement, "websockets": base.placement}
            for _ in range(p["reps"]):
                for impl, c in (("sensorstream", ours), ("websockets", base)):
                    case["windows"][impl].append(_window(c, rate, p["warm"], p["window"]))
                    time.sleep(0.2)
            floor = ours.srv.cmd("floor 5" if size != "smoke" else "floor 2")
        w = case["windows"]
        pairs = [a["us_per_frame"] / b["us_per_frame"] for a, b in zip(w["sensorstream"], w["websockets"])
                 if a["us_per_frame"] and b["us_per_frame"]]
        us_ours = median([x["us_per_frame"] for x in w["sensorstream"]])
        us_base = median([x["us_per_frame"] for x in w["websockets"]])
        case["summary"] = {
            "us_per_frame": {"sensorstream": us_ours, "websockets": us_base},
            "frames_per_core_s": {"sensorstream": 1e6 / us_ours if us_ours else None, "websockets": 1e6 / us_base if us_base else None},
            "ratio": median(pairs),
            "ratio_per_pair": pairs,
            "publish_us_per_frame": median([x.get("publish_us_per_frame") for x in w["sensorstream"]]),
            "send_floor_us": floor.get("floor_us"),
            "delivered": {k: sum(x["received"] for x in v) / max(1, sum(x["frames"] for x in v)) for k, v in w.items()},
        }
        results["cases"][str(n)] = case
    return results


def rows(res: dict) -> list[dict]:
    out = []
    for n, case in res["cases"].items():
        s = case["summary"]
        r = s["ratio"]
        us, fps = s["us_per_frame"], s["frames_per_core_s"]
        sec = f"fan-out, {n} clients x {case['batches_per_s']:g}/s"
        out.append(row(sec, "server CPU per delivered frame", us["sensorstream"], us["websockets"], "ratio <= 1.0",
                       None if r is None else r <= 1.0, "us", ratio_value=r))
        ok = None if fps["sensorstream"] is None else fps["sensorstream"] >= 100_000
        out.append(row(sec, "frames per second of server core", fps["sensorstream"], fps["websockets"], ">= 100000", ok, "/s",
                       ratio_value=None if not r else 1 / r))
        out.append(row(sec, "bare send() floor (diagnostic)", s["send_floor_us"], None, "", None, "us"))
    return out
