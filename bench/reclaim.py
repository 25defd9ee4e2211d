"""Dead-client reclamation: time from a client going silent to the server freeing it.

`clients` connections with short keepalive settings (a ping every 1 s, 1 s to
answer; the same for the websockets baseline, whose close_timeout is set to
sensorstream's close_timeout, 1 s). The stream
publishes 20 batches/s. Then every client goes silent at once: it stops reading
and stops answering, without closing its socket (a peer that vanished from the
network). The server logs each close with the client's port (sensorstream: its
own "ws <peer>: closed" log line, captured in the server process; baseline: the
handler's finally), and the time from silence to that close is taken per client.
Target: every client within ping interval + ping timeout + 1 s.
"""

from __future__ import annotations

import time

from .common import Cluster, median, row

SIZES = {
    "full": {"clients": 100, "ping_interval": 1.0, "ping_timeout": 1.0},
    "quick": {"clients": 50, "ping_interval": 0.5, "ping_timeout": 0.5},
    "smoke": {"clients": 10, "ping_interval": 0.3, "ping_timeout": 0.3},
}


def _measure(impl: str, clients: int, ping_interval: float, ping_timeout: float) -> dict:
    limit = ping_interval + ping_timeout + 1.0
    with Cluster(impl, clients, ping_interval=ping_interval, ping_timeout=ping_timeout) as c:
        c.publish(20)
        time.sleep(ping_interval * 1.5)
        before = {tuple(x[:2]) for x in c.srv.cmd("closes")["closes"]}
        silenced: dict[int, float] = {}
        for lg in c.lgs:
            r = lg.cmd("silence")
            silenced.update({port: r["silenced_at"] for port in r["ports"]})
        deadline = time.time() + limit + 10.0  # room for a slower baseline to show how slow
        closes = {}
        while time.time() < deadline:
            time.sleep(0.25)
            for port, t, reason in c.srv.cmd("closes")["closes"]:
                if port in silenced and (port, t) not in before:
                    closes[port] = (t, reason)
            if len(closes) >= len(silenced):
                break
        conns = c.stats()["connections"]
    times = sorted(closes[p][0] - silenced[p] for p in closes)
    reasons: dict[str, int] = {}
    for t, r in closes.values():
        reasons[r] = reasons.get(r, 0) + 1
    return {"impl": impl, "silenced": len(silenced), "reclaimed": len(times), "connections_left": conns,
            "max_s": times[-1] if times else None, "p50_s": median(times), "min_s": times[0] if times else None,
            "within_limit": sum(t <= limit for t in times), "limit_s": limit, "reasons": reasons}


def run(size: str = "full") -> dict:
    p = SIZES[size]
    return {"method": __doc__.strip().splitlines()[0], "params": p,
            "sensorstream": _measure("sensorstream", **p), "websockets": _measure("websockets", **p)}


def rows(res: dict) -> list[dict]:
    o, b = res["sensorstream"], res["websockets"]
    lim = o["limit_s"]
    p = res["params"]
    sec = f"dead clients, {o['silenced']} silent (ping every {p['ping_interval']:g} s, timeout {p['ping_timeout']:g} s)"
    ok = o["reclaimed"] == o["silenced"] and o["max_s"] is not None and o["max_s"] <= lim
    return [
        row(sec, "silence -> freed, max", o["max_s"], b["max_s"], f"<= {lim:g}", ok, "s"),
        row(sec, "silence -> freed, median", o["p50_s"], b["p50_s"], "", None, "s"),
        row(sec, "clients freed within the limit", o["within_limit"], b["within_limit"], f"{o['silenced']}", o["within_limit"] == o["silenced"], ""),
    ]
