"""What the truthful statuses cost per batch: `LocalHub.publish` with and without the
two observers issue 11 added (staleness.StalenessWatcher, sources.supervisor.SourceStreams),
in alternating windows of the same run, so the ratio is not skewed by the load of
the machine drifting.

    python -m bench.status_overhead [--seconds 6]

Both observers do O(1) work per batch (a dict lookup and a float store; a no-op), and
nothing per sample or per client.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import trio

from sensorstream.hub import LocalHub
from sensorstream.protocol import Channel
from sensorstream.sources.supervisor import SourceStreams
from sensorstream.staleness import StalenessWatcher

BATCHES = 2000  # per window


def _hub(observed: bool, n_channels: int) -> tuple[LocalHub, int]:
    hub = LocalHub()
    if observed:
        StalenessWatcher(hub, window_s=0.05)
        hub.add_observer(SourceStreams())
    key = hub.add_stream("bench/x", [Channel(f"c{i}") for i in range(n_channels)], rate_hz=1000).key
    return hub, key


def _window(hub: LocalHub, key: int, seq0: int, ts: np.ndarray, vals: np.ndarray) -> float:
    t0 = time.perf_counter()
    for i in range(BATCHES):
        hub.publish(key, seq0 + i, ts, vals)
    return (time.perf_counter() - t0) / BATCHES * 1e6  # µs per batch


async def _run(seconds: float) -> dict:
    out = {}
    for samples, channels in ((1, 3), (50, 6)):
        ts = np.arange(samples, dtype=np.float64) + 1.0
        vals = np.zeros((channels, samples), np.float32)
        hubs = {name: _hub(name == "observed", channels) for name in ("baseline", "observed")}
        per: dict[str, list[float]] = {"baseline": [], "observed": []}
        seq = 0
        deadline = time.monotonic() + seconds / 2
        while time.monotonic() < deadline:
            for name, (hub, key) in hubs.items():  # alternating windows, same run
                per[name].append(_window(hub, key, seq, ts, vals))
            seq += BATCHES
            await trio.lowlevel.checkpoint()
        b, o = statistics.median(per["baseline"]), statistics.median(per["observed"])
        out[f"{samples}x{channels}"] = {"baseline_us_per_batch": round(b, 2), "observed_us_per_batch": round(o, 2),
                                        "ratio": round(o / b, 3), "windows": len(per["baseline"])}
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.status_overhead", description=__doc__)
    ap.add_argument("--seconds", type=float, default=6.0)
    a = ap.parse_args(argv)
    result = trio.run(_run, a.seconds)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
