"""Samples -> batches, sans-I/O.

A source pushes blocks of samples (timestamps float64, values float32 shaped
(channels, samples)); the batcher hands back numbered batches. A batch closes
when it reaches `max_samples` or at the first boundary of the window's clock
grid (a multiple of `window_s`) after its first sample arrived, so every
stream with the same window closes its batches at the same moments and the
server writes them to a client together (server/ws/tick.py). The caller
supplies `now`, so the timing logic is pure and testable without a clock.

Pending samples live in preallocated arrays that are reused, so a steady
stream allocates only the arrays of the batches it emits.
"""

from __future__ import annotations

from dataclasses import dataclass

import math

import numpy as np


def grid_after(t: float, step: float) -> float:
    """The first multiple of `step` after `t`. Computed as k * step, so every caller
    with the same step gets the very same float for the same boundary."""
    return (math.floor(t / step) + 1) * step


@dataclass(frozen=True, slots=True)
class SampleBatch:
    seq: int
    timestamps: np.ndarray  # float64 (N,)
    values: np.ndarray  # float32 (C, N)


class Batcher:
    def __init__(self, n_channels: int, window_s: float = 0.05, max_samples: int = 4096, first_seq: int = 0):
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        if max_samples < 1:
            raise ValueError("max_samples must be >= 1")
        self.window_s = float(window_s)
        self.max_samples = int(max_samples)
        self.next_seq = int(first_seq)
        self._ts = np.empty(self.max_samples, dtype=np.float64)
        self._vals = np.empty((n_channels, self.max_samples), dtype=np.float32)
        self._n = 0
        self._opened_at: float | None = None  # `now` when the pending batch got its first sample

    @property
    def n_channels(self) -> int:
        return self._vals.shape[0]

    @property
    def pending(self) -> int:
        return self._n

    def set_channels(self, n_channels: int) -> list[SampleBatch]:
        """Grow the channel count. Pending samples are flushed first, so that every
        batch has one channel layout and a subscriber learns about new channels
        (via a `stream` update) before it sees them in data."""
        if n_channels < self.n_channels:
            raise ValueError("channels can only be added")
        out = self.flush()
        if n_channels != self.n_channels:
            self._vals = np.empty((n_channels, self.max_samples), dtype=np.float32)
        return [out] if out is not None else []

    def add(self, timestamps: np.ndarray, values: np.ndarray, now: float) -> list[SampleBatch]:
        """Append samples; return the batches that filled up (possibly none)."""
        n = len(timestamps)
        if values.shape != (self.n_channels, n):
            raise ValueError(f"values shape {values.shape} != ({self.n_channels}, {n})")
        out: list[SampleBatch] = []
        i = 0
        while i < n:
            if self._n == 0:
                self._opened_at = now
            take = min(n - i, self.max_samples - self._n)
            self._ts[self._n : self._n + take] = timestamps[i : i + take]
            self._vals[:, self._n : self._n + take] = values[:, i : i + take]
            self._n += take
            i += take
            if self._n == self.max_samples:
                out.append(self._emit())
        return out

    def due_at(self) -> float | None:
        """When the pending batch's window closes (None if nothing is pending): the
        first multiple of `window_s` after its first sample arrived."""
        if self._opened_at is None or self._n == 0:
            return None
        return grid_after(self._opened_at, self.window_s)

    def poll(self, now: float) -> SampleBatch | None:
        """Close the pending batch if its window has elapsed."""
        due = self.due_at()
        if due is not None and now >= due:
            return self._emit()
        return None

    def flush(self) -> SampleBatch | None:
        return self._emit() if self._n else None

    def _emit(self) -> SampleBatch:
        n = self._n
        batch = SampleBatch(self.next_seq, self._ts[:n].copy(), self._vals[:, :n].copy())
        self.next_seq += 1
        self._n = 0
        self._opened_at = None
        return batch
