"""Memory per connection: server RSS growth / connections, for idle subscribed clients.

Each server is started, its RSS read after a short settle with no clients, then
`clients` connections are opened from several load generator processes (each
does the handshake and subscribes), the stream publishes one batch a second so
every connection has written at least once, and RSS is read again after a
settle (and a gc.collect() in the server). (RSS after - RSS before) / connections.
Both processes raise RLIMIT_NOFILE to their hard limit. Also reported: how long
the connections took to open, and the server's CPU share while holding them.
"""

from __future__ import annotations

import time

from .common import CLIENT_CPU, IMPLS, SERVER_CPU, Child, row

SIZES = {
    "full": {"clients": 5000, "procs": 2, "settle": 3.0, "idle": 10.0},
    "quick": {"clients": 500, "procs": 1, "settle": 1.0, "idle": 5.0},
    "smoke": {"clients": 20, "procs": 1, "settle": 0.3, "idle": 0.5},
}


def _measure(impl: str, p: dict) -> dict:
    srv = Child(IMPLS[impl], ["--cpu", str(SERVER_CPU)], name=impl)
    lgs = []
    try:
        port = srv.read(60)["port"]
        srv.cmd("publish 1")
        time.sleep(p["settle"])
        before = srv.cmd("stats gc")
        per = [p["clients"] // p["procs"] + (1 if i < p["clients"] % p["procs"] else 0) for i in range(p["procs"])]
        t0 = time.time()
        lgs = [Child("bench.loadgen", ["--port", str(port), "--clients", str(n), "--cpu", str(CLIENT_CPU)], name=f"loadgen{i}")
               for i, n in enumerate(per)]
        ready = failed = 0
        for lg in lgs:
            r = lg.read(900)
            ready += r["ready"]
            failed += r["failed"]
        connect_s = time.time() - t0
        time.sleep(p["settle"])
        after = srv.cmd("stats gc")
        grow = after["rss"] - before["rss"]
        # What holding them costs while nothing much happens (keepalive pings every 5 s,
        # one batch a second, sensorstream's heartbeat timers): CPU share of the server's core.
        time.sleep(p["idle"])
        idle = srv.cmd("stats")
        idle_pct = 100 * ((idle["cpu_user"] + idle["cpu_sys"]) - (after["cpu_user"] + after["cpu_sys"])) / (idle["wall"] - after["wall"])
        return {"impl": impl, "clients": ready, "failed": failed, "connect_s": connect_s,
                "rss_before_mb": before["rss"] / 2**20, "rss_after_mb": after["rss"] / 2**20,
                "kib_per_connection": grow / 1024 / max(1, ready), "server_connections": after["connections"],
                "idle_cpu_pct": idle_pct}
    finally:
        for lg in lgs:
            lg.close()
        srv.close()


def run(size: str = "full") -> dict:
    p = SIZES[size]
    res = {"method": __doc__.strip().splitlines()[0], "params": p}
    for impl in ("sensorstream", "websockets"):
        res[impl] = _measure(impl, p)
    return res


def rows(res: dict) -> list[dict]:
    o, b = res["sensorstream"], res["websockets"]
    sec = f"memory, {o['clients']} idle subscribed clients"
    return [row(sec, "server RSS per connection", o["kib_per_connection"], b["kib_per_connection"], "<= 24",
                o["kib_per_connection"] <= 24, "KiB"),
            row(sec, "time to connect and subscribe them all", o["connect_s"], b["connect_s"], "", None, "s"),
            row(sec, "server CPU holding them (1 batch/s)", o["idle_cpu_pct"], b["idle_cpu_pct"], "", None, "% core")]
