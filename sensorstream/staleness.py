"""`live` -> `stale` -> `live`: a stream that stops producing samples says so.

The rule: a `live` stream with no batch for longer than

    stale_after = max(2 s, 5 x its nominal sample period, 3 x the batch window)

becomes `stale` (a `stream` message announces it), and its next batch makes it
`live` again. That covers a silent port, a device that switched to a format
the parser does not read, and a hung source, none of which is a disconnect.

`StaleTracker` is the rule alone, sans I/O: told about streams and batches
with a clock reading, it answers which streams just went stale and when to
look next. `StalenessWatcher` is the thin part: a hub observer (called
synchronously for every stream change and batch, see hub.Observer) plus one
task for the whole server that sleeps until the next deadline.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import trio

from . import protocol
from .hub import Hub
from .protocol import StreamInfo

MIN_STALE_S = 2.0
PERIODS = 5  # nominal sample periods without a sample
WINDOWS = 3  # batch windows without a batch
#: The watcher looks at most this often: a stream is declared stale at most this late,
#: and a server with many streams wakes a bounded number of times a second.
RESOLUTION_S = 0.25


def stale_after(rate_hz: float | None, window_s: float, interval_s: float | None = None) -> float:
    """Seconds without a sample after which a live stream is stale. Without a nominal
    rate (a `--serial` port with no profile), `interval_s`, the stream's observed
    time between batches, stands in for the period: a device that prints every 5 s
    is not stale after 2 s of its ordinary silence."""
    period = 1.0 / rate_hz if rate_hz and rate_hz > 0 else (interval_s or 0.0)
    return max(MIN_STALE_S, PERIODS * period, WINDOWS * window_s)


#: Weight of the newest interval in the estimate of an unknown-rate stream's period
#: (an exponential average: one long pause does not set the limit for ever).
INTERVAL_WEIGHT = 0.25


class _Watch:
    __slots__ = ("deadline", "rate_hz", "since", "interval")

    def __init__(self, rate_hz: float | None):
        self.deadline = 0.0
        self.rate_hz = rate_hz
        self.since = 0.0  # the last batch, or the moment it (re)turned live
        self.interval: float | None = None  # observed, for streams without a nominal rate


class StaleTracker:
    """Which live streams have gone quiet. Pure: every call takes `now`."""

    def __init__(self, window_s: float):
        self.window_s = window_s
        self._watch: dict[int, _Watch] = {}  # every stream not removed
        self._live: set[int] = set()  # the watched ones (status live)
        self._stale: set[int] = set()

    def _limit(self, w: _Watch) -> float:
        return stale_after(w.rate_hz, self.window_s, w.interval)

    def on_stream(self, info: StreamInfo, now: float) -> None:
        """A stream appeared or changed. Only `live` streams are watched; the clock
        of one that (re)turns live starts now."""
        key = info.key
        w = self._watch.get(key)
        if w is None:
            w = self._watch[key] = _Watch(info.rate_hz)
        w.rate_hz = info.rate_hz
        if info.status == protocol.LIVE:
            self._stale.discard(key)
            if key not in self._live:
                self._live.add(key)
                w.since = now  # a silence or an outage before this is not an interval
                w.deadline = now + self._limit(w)
        else:
            self._live.discard(key)
            if info.status == protocol.STALE:
                self._stale.add(key)
            else:  # disconnected, failed...: someone else's story
                self._stale.discard(key)

    def on_removed(self, key: int) -> None:
        self._watch.pop(key, None)
        self._live.discard(key)
        self._stale.discard(key)

    def on_batch(self, key: int, now: float) -> bool:
        """A batch arrived. True if the stream was stale (the caller makes it live)."""
        w = self._watch.get(key)
        if w is None or key not in self._live:
            return w is not None and key in self._stale
        if w.rate_hz is None:
            # Its pace so far: from going live to the first batch, then between batches.
            gap = now - w.since
            w.interval = gap if w.interval is None else w.interval + INTERVAL_WEIGHT * (gap - w.interval)
        w.since = now
        w.deadline = now + self._limit(w)
        return False

    def due(self, now: float) -> list[int]:
        """Streams that just went stale (each reported once, until it is live again)."""
        out = [key for key in self._live if self._watch[key].deadline <= now]
        for key in out:
            self._live.discard(key)
            self._stale.add(key)
        return out

    def next_deadline(self) -> float | None:
        return min((self._watch[k].deadline for k in self._live), default=None)


class StalenessWatcher:
    """Applies StaleTracker to a hub: marks streams stale, and live on their next batch."""

    def __init__(self, hub: Hub, window_s: float, *, clock: Callable[[], float] = trio.current_time,
                 resolution_s: float = RESOLUTION_S):
        self.hub = hub
        self.tracker = StaleTracker(window_s)
        self.clock = clock
        self.resolution_s = resolution_s
        self._wake = trio.Event()
        hub.add_observer(self)

    # ---- hub observer: synchronous, never blocks

    def on_stream(self, info: StreamInfo) -> None:
        self.tracker.on_stream(info, self.clock())
        self._wake.set()  # a new deadline may be earlier than the one being slept to

    def on_removed(self, key: int) -> None:
        self.tracker.on_removed(key)

    def on_batch(self, info: StreamInfo, timestamps: np.ndarray, values: np.ndarray) -> None:
        if self.tracker.on_batch(info.key, self.clock()):
            self.hub.update_stream(info.key, status=protocol.LIVE)

    # ---- task

    async def run(self) -> None:
        last = -math.inf
        while True:
            self._wake = trio.Event()
            deadline = self.tracker.next_deadline()
            if deadline is not None:
                # Batches only push deadlines later, so waking at one that moved finds
                # nothing due; looking at most every `resolution_s` bounds that work.
                deadline = max(deadline, last + self.resolution_s)
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self._wake.wait()
            last = self.clock()
            for key in self.tracker.due(last):
                self.hub.update_stream(key, status=protocol.STALE)
