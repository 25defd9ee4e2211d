"""Handshake storm: N clients connecting at once; server CPU per connection, and time until all have their hello.

Each server (sensorstream, then the websockets baseline; fresh processes, in
alternating order over the repetitions) is started and left idle; then one
load generator process opens all N connections at once (`--parallel N`): TCP
connect, the HTTP upgrade, and, as soon as the 101 arrives, a subscribe. The
server's CPU time from just before the storm to the moment every client has
its `subscribed` reply, divided by N, is the handshake cost per connection
(accept, HTTP parse, upgrade, hello, subscribe and its reply: what a reconnect
costs the server). The load generator records when the last client got its
hello; `time to every hello` runs from the start of the storm to then.
"""

from __future__ import annotations

import time

from .common import CLIENT_CPU, IMPLS, SERVER_CPU, Child, cpu_delta, median, ratio, row

SIZES = {
    "full": {"clients": (1000, 5000), "reps": 5},
    "quick": {"clients": (1000,), "reps": 1},
    "smoke": {"clients": (20,), "reps": 1},
}


def _storm(impl: str, n: int) -> dict:
    srv = Child(IMPLS[impl], ["--cpu", str(SERVER_CPU)], name=impl)
    lg = None
    try:
        port = srv.read(60)["port"]
        time.sleep(0.5)
        s0 = srv.cmd("stats")
        lg = Child("bench.loadgen", ["--port", str(port), "--clients", str(n), "--parallel", str(n), "--cpu", str(CLIENT_CPU)],
                   name="loadgen")
        r = lg.read(300)
        s1 = srv.cmd("stats")
        cpu = cpu_delta(s0, s1)
        hello_s = (r["t_last_hello"] - r["t_start"]) if r.get("t_last_hello") else None
        return {"impl": impl, "clients": n, "ready": r["ready"], "failed": r["failed"], "hellos": r["hellos"],
                "cpu_s": cpu, "us_per_connection": 1e6 * cpu / max(1, r["ready"]), "hello_s": hello_s,
                "ready_s": r["t_ready"] - r["t_start"], "rss_mb": s1["rss"] / 2**20}
    finally:
        if lg is not None:
            lg.close()
        srv.close()


def run(size: str = "full") -> dict:
    p = SIZES[size]
    res = {"method": __doc__.strip().splitlines()[0], "params": p, "cases": {}}
    for n in p["clients"]:
        runs: dict[str, list] = {"sensorstream": [], "websockets": []}
        for rep in range(p["reps"]):
            order = ("sensorstream", "websockets") if rep % 2 == 0 else ("websockets", "sensorstream")
            for impl in order:
                runs[impl].append(_storm(impl, n))
        summary = {}
        for key in ("us_per_connection", "hello_s"):
            o = median([r[key] for r in runs["sensorstream"]])
            b = median([r[key] for r in runs["websockets"]])
            summary[key] = {"sensorstream": o, "websockets": b, "ratio": ratio(o, b)}
        summary["failed"] = {k: sum(r["failed"] for r in v) for k, v in runs.items()}
        res["cases"][str(n)] = {"runs": runs, "summary": summary}
    return res


def rows(res: dict) -> list[dict]:
    out = []
    for n, case in res["cases"].items():
        s = case["summary"]
        sec = f"handshake storm, {n} clients connecting at once"
        cpu, hello = s["us_per_connection"], s["hello_s"]
        out.append(row(sec, "server CPU per connection (handshake+subscribe)", cpu["sensorstream"], cpu["websockets"],
                       "ratio <= 1.0", None if cpu["ratio"] is None else cpu["ratio"] <= 1.0, "us"))
        out.append(row(sec, "time until every client has its hello", hello["sensorstream"], hello["websockets"],
                       "ratio <= 1.0", None if hello["ratio"] is None else hello["ratio"] <= 1.0, "s"))
        failed = s["failed"]
        out.append(row(sec, "connections that failed", failed["sensorstream"], failed["websockets"], "0",
                       failed["sensorstream"] == 0, ""))
    return out
