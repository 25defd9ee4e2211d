"""Replay: a recording served as live streams, with its original timing.

Replay is a source like the simulators and serial ports: it adds the
recording's streams to the hub (same ids, channels, units, rates) and
publishes each recorded batch (same seq, timestamps and values) when its time
comes, so the dashboard, the Python client, `tail` and everything downstream
work unchanged.

`PlaybackClock` is the pure part (no trio, no I/O): it maps recording time to
the caller's clock under pause, speed and seek, and is tested on its own.
`Replay` is the task around it, and takes playback control from clients
(`{"type":"playback",...}`, docs/protocol.md).

Seeking backwards (or looping) makes time run backwards, which no live stream
does: the streams are removed and added again first, so every client treats
what follows as a new stream rather than as out-of-order data.

At speed 0 there is no clock to follow: each batch goes out once every client
subscribed to its stream has room for it (`pacing.py`), so the replay runs as
fast as the clients read and none of them is sent more than it can take.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable

import trio

from ..hub import Hub
from ..protocol import DISCONNECTED
from ..recording import RecordedStream, Recording, RecordingError
from .pacing import PaceLimits, ReadPacer

log = logging.getLogger(__name__)

MAX_SPEED = 1000.0


class PlaybackClock:
    """Recording time <-> clock time. `speed` 0 means "as fast as possible"."""

    def __init__(self, position: float, now: float, speed: float = 1.0):
        self.speed = speed
        self.paused = False
        self._rec = position  # recording time at clock time `_now`
        self._now = now

    def position(self, now: float) -> float:
        if self.paused or self.speed == 0:
            return self._rec
        return self._rec + (now - self._now) * self.speed

    def due(self, t: float) -> float | None:
        """Clock time at which recording time `t` is due; None while paused."""
        if self.paused:
            return None
        if self.speed == 0:
            return -math.inf
        return self._now + (t - self._rec) / self.speed

    def reached(self, t: float, now: float) -> None:
        """A batch of time `t` went out at `now` (keeps the position right at speed 0)."""
        if self.speed == 0 and not self.paused:
            self._rec, self._now = t, now

    def pause(self, now: float) -> None:
        self._rec, self._now = self.position(now), now
        self.paused = True

    def resume(self, now: float) -> None:
        self._now = now
        self.paused = False

    def set_speed(self, speed: float, now: float) -> None:
        self._rec, self._now = self.position(now), now
        self.speed = speed

    def seek(self, t: float, now: float) -> None:
        self._rec, self._now = t, now


class Replay:
    """A recording replayed into a hub. Control methods return at once (they are
    called from client sessions); `run` is the source task."""

    def __init__(self, hub: Hub, path: str | Path, *, speed: float = 1.0, loop: bool = False, pace: PaceLimits = PaceLimits()):
        self.hub = hub
        self.pacer = ReadPacer(hub, pace)  # speed 0: as fast as the clients read
        self.path = Path(path)
        self.rec = Recording(self.path)  # raises RecordingError for a file that is not one
        if not self.rec.streams:
            self.rec.close()
            raise RecordingError(f"{self.path} holds no sensorstream streams (a Foxglove export, or cut off before its first chunk)")
        self.loop = loop
        self.start = self.rec.start or 0.0
        self.end = self.rec.end or 0.0
        self.clock = PlaybackClock(self.start, 0.0, speed)
        self.ended = False
        self.on_state: Callable[[dict], None] | None = None  # the server broadcasts state changes
        self._changed = trio.Event()
        self._seek: float | None = None
        self._keys: dict[str, int] = {}
        self._layout: dict[str, RecordedStream] = {}
        self._last_t = -math.inf  # time of the last batch published (since the streams were added)
        self._running = False

    # ------------------------------------------------------------------ control (from sessions)

    def state(self) -> dict:
        now = trio.current_time() if self._running else 0.0
        return {"paused": self.clock.paused, "speed": self.clock.speed, "position": self.clock.position(now),
                "start": self.start, "end": self.end, "loop": self.loop, "ended": self.ended, "file": self.path.name}

    def pause(self) -> dict:
        self.clock.pause(trio.current_time())
        return self._changed_state()

    def resume(self) -> dict:
        self.clock.resume(trio.current_time())
        return self._changed_state()

    def set_speed(self, speed: float) -> dict:
        self.clock.set_speed(speed, trio.current_time())
        return self._changed_state()

    def seek(self, t: float) -> dict:
        t = min(max(t, self.start), self.end)
        self._seek = t
        self.ended = False
        self.clock.seek(t, trio.current_time())
        return self._changed_state()

    def backlog_changed(self) -> None:
        """A client's queue shrank, or clients came or went (the server calls this)."""
        self.pacer.wake()

    def _changed_state(self) -> dict:
        ev, self._changed = self._changed, trio.Event()
        ev.set()
        self.pacer.wake()
        state = self.state()
        if self.on_state is not None:
            self.on_state(state)
        return state

    # ------------------------------------------------------------------ the source task

    async def run(self) -> None:
        self._running = True
        self.clock.seek(self.start, trio.current_time())
        log.info("replaying %s (%d streams, %.1f s) at speed %g%s", self.path, len({s.id for s in self.rec.streams}),
                 self.end - self.start, self.clock.speed, ", looping" if self.loop else "")
        self._add_streams()
        try:
            position: float | None = None
            while True:
                seek = await self._play_from(position)
                if seek is None:  # the end
                    if self.loop and self.end > self.start:
                        seek = self.start
                        self.clock.seek(seek, trio.current_time())
                    else:
                        self.ended = True
                        self._changed_state()
                        while self._seek is None:
                            await self._changed.wait()
                        seek = self._seek
                self._seek = None
                if seek <= self._last_t:
                    # Time would run backwards: the streams start over (see the module docstring).
                    self._restart_streams()
                position = seek
        finally:
            self.rec.close()
            for key in self._keys.values():
                try:
                    self.hub.update_stream(key, status=DISCONNECTED)
                except KeyError:
                    pass

    async def _play_from(self, position: float | None) -> float | None:
        """Publish batches from `position` on, in time; returns a seek target, or None at the end."""
        for s, batch in self.rec.messages(start=position):
            t = float(batch.timestamps[-1])
            while True:
                if self._seek is not None:
                    return self._seek
                changed = self._changed
                due = self.clock.due(t)
                if due is None:
                    await changed.wait()
                    continue
                if due > trio.current_time():
                    with trio.move_on_at(due):
                        await changed.wait()
                    continue
                key = self._keys.get(s.id)
                if self.clock.speed == 0 and key is not None and not self.pacer.ready(key, self._keys.values()):
                    await self.pacer.wait()  # a client's queue shrinks, clients come or go, or playback changes
                    continue
                break
            self._publish(s, batch)
            self._last_t = t
            self.clock.reached(t, trio.current_time())
            await trio.lowlevel.checkpoint()
        return self._seek

    def _publish(self, s: RecordedStream, batch) -> None:
        key = self._keys.get(s.id)
        if key is None:
            return
        if self._layout.get(s.id) is not s:
            self.hub.update_stream(key, channels=s.channels)
            self._layout[s.id] = s
        self.hub.publish(key, batch.seq, batch.timestamps, batch.values)

    def _add_streams(self) -> None:
        for s in self.rec.streams:
            if s.id not in self._keys:
                info = self.hub.add_stream(s.id, s.channels, rate_hz=s.rate_hz, device=s.device)
                self._keys[s.id] = info.key
                self._layout[s.id] = s

    def _restart_streams(self) -> None:
        for key in self._keys.values():
            self.hub.remove_stream(key)
        self._keys.clear()
        self._layout.clear()
        self._last_t = -math.inf
        self._add_streams()
