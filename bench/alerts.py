"""Alert evaluation cost per batch, against a per-sample Python loop in the same run.

    python -m bench.alerts            # ~10 s
    python -m bench.alerts --json

Load: one batch of 16 channels x 4,096 samples (a 10 kHz stream's batch cap),
one limit rule per channel, Gaussian noise (sigma 1). Cases: a limit the data
never reaches (the common case), and one it crosses all the time (above 1.0:
about one sample in six, so thousands of transitions per batch), each without a
hold and with for_ms = clear_ms = 5. The baseline is the same semantics written
as a loop over samples (tests/test_alerts.py's reference), on the same data.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sensorstream.alerts import AlertEngine, parse_rules  # noqa: E402
from sensorstream.protocol import Channel, StreamInfo  # noqa: E402

C, N, RATE = 16, 4096, 10_000


def reference(t, v, above, firing, run_start, for_s, clear_s):
    """The per-sample loop the engine replaces (one rule, one channel)."""
    fired = 0
    for ti, x in zip(t.tolist(), v.tolist()):
        if x != x:
            continue
        b = x > above
        if b != firing:
            if run_start is None:
                run_start = ti
            if ti - run_start >= (clear_s if firing else for_s):
                firing = not firing
                fired += firing
                run_start = None
        else:
            run_start = None
    return firing, run_start, fired


def _time(fn, min_s: float) -> float:
    n, t0 = 0, time.perf_counter()
    while True:
        fn(n)
        n += 1
        el = time.perf_counter() - t0
        if el >= min_s and n >= 3:
            return el / n


def run(quick: bool = False) -> dict:
    min_s = 0.5 if quick else 1.5
    rng = np.random.default_rng(0)
    v = rng.standard_normal((C, N)).astype(np.float32)
    t = 1.7e9 + np.arange(N) / RATE
    info = StreamInfo(key=1, id="s", channels=tuple(Channel(f"c{i}") for i in range(C)))
    out = {"meta": {"channels": C, "samples": N, "rules": C, "rate_hz": RATE}}
    for name, above, hold in (("quiet, no hold", 10.0, 0), ("crossing, no hold", 1.0, 0),
                              ("quiet, 5 ms holds", 10.0, 5), ("crossing, 5 ms holds", 1.0, 5)):
        eng = AlertEngine(parse_rules([{"channel": f"c{i}", "above": above, "for_ms": hold, "clear_ms": hold} for i in range(C)],
                                      "bench", stream="s"))
        eng.on_stream(info, 0.0, 0.0)
        per = _time(lambda k: eng.on_batch(1, t + (k + 1) * N / RATE, v), min_s)
        state = [(False, None)] * C

        def ref(k):
            for c in range(C):
                f, r0 = state[c]
                f, r0, _ = reference(t + (k + 1) * N / RATE, v[c], above, f, r0, hold / 1000, hold / 1000)
                state[c] = (f, r0)

        base = _time(ref, min_s)
        out[name] = {"engine_ms": round(per * 1e3, 3), "ns_per_value": round(per / (C * N) * 1e9, 1),
                     "loop_ms": round(base * 1e3, 2), "speedup": round(base / per, 1)}
    eng = AlertEngine([])
    eng.on_stream(info, 0.0, 0.0)
    out["no rules"] = {"engine_ms": round(_time(lambda k: eng.on_batch(1, t, v), min_s) * 1e3, 5)}
    return out


def table(res: dict) -> str:
    m = res["meta"]
    lines = [f"alert evaluation, one batch of {m['channels']} ch x {m['samples']} samples, {m['rules']} rules "
             "(baseline: a per-sample Python loop, same run)",
             f"{'case':24s}{'engine ms':>11s}{'ns/value':>10s}{'loop ms':>10s}{'speedup':>9s}"]
    for k, r in res.items():
        if k in ("meta", "no rules"):
            continue
        lines.append(f"{k:24s}{r['engine_ms']:>11.3f}{r['ns_per_value']:>10.1f}{r['loop_ms']:>10.1f}{r['speedup']:>8.0f}x")
    lines.append(f"{'stream without rules':24s}{res['no rules']['engine_ms']:>11.5f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.alerts", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    res = run(a.quick)
    print(json.dumps(res, indent=2) if a.json else table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
