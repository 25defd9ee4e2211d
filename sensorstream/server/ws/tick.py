"""One write per client per tick.

Every stream's batch window is aligned to one clock grid (boundaries at
multiples of the window on the server clock: see ingest/batching.py and the
simulators' pacer), so the batches of all streams that close at a boundary are
published by tasks that trio wakes in the same scheduler pass. A session that
gets a frame during that pass does not write it at once: it keeps it (with any
other frames of the same pass) and joins `Tick.pending`. The tick task, woken
by the first one, runs in the very next pass, after every publish of this one,
and each pending session writes all its frames of the tick with one `writev`.

A client subscribed to the three default streams thus costs one system call per
50 ms instead of three; a client of one stream costs what it did (its one
frame is written the same way, a pass later: microseconds). Without the tick
task running (a server object used without `Server.run`, as some tests do),
sessions write at once.
"""

from __future__ import annotations

import trio


class Tick:
    __slots__ = ("pending", "running", "_lot")

    def __init__(self):
        self.pending: list = []  # sessions with frames of this tick (ClientSession)
        self.running = False
        self._lot = trio.lowlevel.ParkingLot()

    def add(self, session) -> None:
        """`session` has its first frame of this tick (it writes it when `flush_tick` is called)."""
        self.pending.append(session)
        if len(self.pending) == 1:
            self._lot.unpark()

    async def run(self) -> None:
        self.running = True
        try:
            while True:
                if not self.pending:
                    await self._lot.park()
                batch, self.pending = self.pending, []
                for s in batch:
                    s.flush_tick()
        finally:
            self.running = False
            batch, self.pending = self.pending, []
            for s in batch:
                s.flush_tick()
