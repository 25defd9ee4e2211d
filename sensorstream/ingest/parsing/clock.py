"""Device clock -> wall clock (:class:`ClockMapper`)."""

from __future__ import annotations

import math

import numpy as np

#: Seconds per unit of a device timestamp.
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


class ClockMapper:
    """Maps a device's clock (seconds since whatever) onto wall-clock Unix seconds.

    The offset (wall - device) starts as ``arrival - device`` of the newest sample of
    the first chunk. Afterwards it follows the lowest-latency samples: it drops to any
    lower ``arrival - device`` at once (a device clock running fast, or a better
    sample), and may creep up by ``drift_ppm`` of elapsed time (a device clock running
    slow). It is re-anchored to the current chunk when the device clock goes backwards
    (a reset, a counter wrap) or when the newest sample would land more than
    ``max_lag`` seconds before its arrival (a device clock that stalled or lost time).

    Output is non-decreasing and never later than the arrival time.
    """

    def __init__(self, *, max_lag: float = 1.0, drift_ppm: float = 200.0, reset_tolerance: float = 0.0):
        self.max_lag = float(max_lag)
        self.drift = float(drift_ppm) * 1e-6
        self.reset_tolerance = float(reset_tolerance)
        self.offset: float | None = None
        self.resyncs = 0  # times re-anchored after the first anchor
        self._last_device = -math.inf
        self._last_arrival = -math.inf
        self._last_out = -math.inf

    def reset(self) -> None:
        """Forget the anchor (the device may have restarted); keep the output monotonic."""
        self.offset = None
        self._last_device = -math.inf

    def map(self, device: np.ndarray, arrival: float) -> np.ndarray:
        """Wall-clock times for device times ``device`` (seconds, float64) read at ``arrival``.

        NaN device times (a sample without a usable timestamp) get the previous
        output time (or, with no previous one, the next one, or ``arrival``).
        """
        device = np.asarray(device, dtype=np.float64)
        out = np.empty_like(device)
        finite = np.isfinite(device)
        idx = np.flatnonzero(finite)
        if idx.size:
            d = device[idx]
            prev = np.empty_like(d)
            prev[0] = self._last_device
            prev[1:] = d[:-1]
            cuts = np.flatnonzero(d < prev - self.reset_tolerance).tolist()
            bounds = [0, *cuts, d.size] if not cuts or cuts[0] != 0 else [*cuts, d.size]
            mapped = np.empty_like(d)
            for start, stop in zip(bounds[:-1], bounds[1:]):
                seg = d[start:stop]
                newest = float(seg.max())
                best = arrival - newest
                if self.offset is None:
                    self.offset = best
                elif start in cuts:  # the device clock went backwards
                    self.offset = best
                    self.resyncs += 1
                else:
                    crept = self.offset + self.drift * max(0.0, arrival - self._last_arrival)
                    if best - crept > self.max_lag:  # newest sample lags its arrival too much
                        self.offset = best
                        self.resyncs += 1
                    else:
                        self.offset = min(crept, best)
                mapped[start:stop] = seg + self.offset
            self._last_device = float(d[-1])
            self._last_arrival = arrival
            out[idx] = mapped
        out[~finite] = -math.inf
        np.maximum.accumulate(out, out=out)
        np.maximum(out, self._last_out, out=out)
        if out.size:
            if out[0] == -math.inf:  # leading samples without a timestamp, and no history:
                k = int(np.count_nonzero(out == -math.inf))  # they take the first time after them
                out[:k] = out[k] if k < out.size else arrival
            self._last_out = float(out[-1])
        return out

