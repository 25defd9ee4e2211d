"""The benchmark harness runs end to end at tiny sizes and writes the result keys.

Not a benchmark and no timing assertions: figures at these sizes mean nothing.
It only checks that the machinery (server and baseline processes, load
generators, the harness and its JSON) still works. The real run is `python -m bench`.
"""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_bench_smoke_run_writes_every_result(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--only", "fanout,latency,memory,reclaim,storm", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["size"] == "smoke" and res["machine"]["cpus"]
    assert set(res["benches"]) == {"fanout", "latency", "memory", "reclaim", "storm"}
    assert not [b for b, r in res["benches"].items() if "error" in r]

    fan = res["benches"]["fanout"]["cases"]
    if res["machine"]["cpus"] > 1:
        # Server and load generator on different cores (children must not inherit the harness's pinning).
        for case in fan.values():
            for place in case["placement"].values():
                assert place["server"] and place["loadgen"] and place["server"] not in place["loadgen"], place
    for case in fan.values():
        s = case["summary"]
        assert set(s["us_per_frame"]) == {"sensorstream", "websockets"}
        assert "ratio" in s and "send_floor_us" in s and "frames_per_core_s" in s
        # The load generator parsed what was sent (a broken frame parser counts
        # nothing). Not near 1: over a 0.5 s window a starved load generator on a
        # loaded machine can trail the server's count by a good share.
        assert all(v > 0.25 for v in s["delivered"].values()), s["delivered"]
        if case.get("streams", 1) == 1:
            # The bare server and sensorstream with a bare-loop fan-out ran and delivered too.
            assert set(s["delivered"]) == {"sensorstream", "websockets", "bare", "flat"}, s["delivered"]
            assert s["bare_us_per_frame"] > 0 and s["flat_us_per_frame"] > 0 and s["vs_bare"] > 0 and s["flat_vs_bare"] > 0
    lat = res["benches"]["latency"]["combined"]
    assert set(lat) == {"sensorstream/none", "websockets/none", "sensorstream/stalled", "websockets/stalled"}
    for figs in lat.values():
        for key in ("delivery_ms", "sample_ms", "spread_ms"):
            assert set(figs[key]) >= {"p50", "p99", "max"}
        assert "rss_growth_mb" in figs and "kernel_sendq_end_mb" in figs
    mem = res["benches"]["memory"]
    assert mem["sensorstream"]["clients"] > 0 and "kib_per_connection" in mem["websockets"]
    # Three-stream fan-out: a tick's frames went to each client in one write.
    multi = [c for c in fan.values() if c.get("streams", 1) > 1]
    assert multi and all(c["summary"]["frames_per_write"] > 1.5 for c in multi), [c["summary"] for c in multi]
    storm = res["benches"]["storm"]["cases"]
    for case in storm.values():
        for runs in case["runs"].values():
            assert all(r["ready"] == r["clients"] and r["hellos"] == r["clients"] for r in runs), runs
    rec = res["benches"]["reclaim"]
    assert {"max_s", "reclaimed", "silenced", "limit_s"} <= set(rec["sensorstream"])

    rows = res["rows"]
    assert rows and all({"section", "metric", "sensorstream", "baseline", "ratio", "target", "ok"} <= set(r) for r in rows)
    assert "sensorstream" in proc.stdout and "baseline" in proc.stdout  # the table was printed


def test_bare_server_accept_key_is_rfc6455s():
    from bench.baseline_bare import accept_key

    # The example of RFC 6455 section 1.3.
    req = b"GET / HTTP/1.1\r\nHost: x\r\nsec-websocket-key:  dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    assert accept_key(req) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert accept_key(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") is None


def test_every_sample_percentile_matches_expanding_every_sample():
    """bench/latency.py computes the percentile over every sample without expanding
    them; it must equal the brute-force one."""
    import numpy as np

    from bench.latency import sample_pct

    rng = np.random.default_rng(1)
    n, window = 50, 0.05
    last = rng.uniform(0.001, 0.03, 3000)
    first = last + (n - 1) * window / n
    every = (last[:, None] + np.linspace(0, 1, n)[None, :] * (first - last)[:, None]).ravel()
    for q in (50, 90, 99):
        assert abs(sample_pct(last, first, n, q) - np.percentile(every, q, method="inverted_cdf")) < 1e-9


def test_wakeups_bench_runs_both_loops_and_refuses_bad_flags(tmp_path):
    """bench/wakeups.py (CPU per wake-up, epoll and trio): the machinery only."""
    out = tmp_path / "wakeups.json"
    proc = subprocess.run([sys.executable, "-m", "bench.wakeups", "--rates", "50", "--seconds", "0.2", "--reps", "1",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out.read_text())["rates"]["50"]
    assert r["epoll_us"] > 0 and r["trio_us"] > 0 and r["trio_vs_epoll"] > 0
    assert len(r["runs"]["epoll"]) == len(r["runs"]["trio"]) == 1
    bad = subprocess.run([sys.executable, "-m", "bench.wakeups", "--rates", "fast"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "--rates" in bad.stderr and "Traceback" not in bad.stderr
