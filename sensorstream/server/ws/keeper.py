"""Liveness and heartbeats for every session of a server: one task, one heap.

What it needs from a session (`Watched`): a few fields it keeps there, and the
synchronous calls `ping`, `heartbeat`, `last_write_at` and `ping_timed_out`.
No socket in sight, so it is tested alone on MockClock (tests/test_ws_keeper.py).
"""

from __future__ import annotations

import heapq
import itertools
import math
import struct
import time
from typing import Protocol

import trio

from ... import protocol
from .frames import ws_ping_frame, ws_text_frame


class Pong:
    """The answer to one Ping: the connection calls `set()` when its Pong arrives.
    Nobody waits on it; the keeper looks at `answered` when the ping's deadline comes."""

    __slots__ = ("answered",)

    def __init__(self):
        self.answered = False

    def set(self) -> None:
        self.answered = True


class Watched(Protocol):
    """What the keeper reads and calls on a session."""

    ended: bool
    ping_due: float  # when the next ping is due
    pong: Pong | None  # the outstanding ping's answer
    pong_deadline: float  # when that answer is overdue

    def ping(self, payload: bytes, frame: bytes) -> None: ...

    def heartbeat(self, frame: bytes) -> None: ...

    def last_write_at(self) -> float: ...

    def ping_timed_out(self, timeout: float) -> None: ...


_PING, _BEAT = 0, 1


class Keeper:
    """Liveness and heartbeats for every session of a server: one task, one heap.

    Each session has two entries in the heap: when its liveness next needs a look
    (a ping due, or an outstanding pong's deadline) and when it next owes a
    heartbeat (`heartbeat_s` after its last write). The keeper sleeps until the
    earliest, then handles everything due. Pings and heartbeats are framed once
    per round and written directly (see connection.py) to every session whose sender
    task is not running; the others get them through their sender.

    A timer and a task per connection would cost a wake-up per connection per
    event, and memory per connection; with thousands of clients that was most of
    the server's idle CPU. Entries of sessions that have ended are dropped when
    they come up, or all at once when they outnumber the live ones (`discard`).
    """

    # Yield to other tasks (a publish) after this many sessions in one round.
    ROUND = 256
    # Dead entries tolerated beyond half the heap before it is rebuilt: a few
    # ended sessions are not worth an O(n) pass.
    COMPACT_ABOVE = 64

    def __init__(self, ping_interval: float, ping_timeout: float, heartbeat_s: float):
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.heartbeat_s = heartbeat_s
        self._heap: list[tuple[float, int, int, Watched]] = []
        self._dead = 0  # entries in the heap (roughly) that belong to ended sessions
        self._order = itertools.count()  # ties in due time never compare sessions
        self._sleep: trio.CancelScope | None = None
        self._round = 0
        self._ping: tuple[bytes, bytes] | None = None  # (payload, frame) of this round
        self._beat: bytes | None = None  # heartbeat frame of this round
        self.slack = min(0.1, ping_interval / 20, heartbeat_s / 20)

    def add(self, s: Watched) -> None:
        now = trio.current_time()
        s.ping_due = now + self.ping_interval
        self._push(s.ping_due, _PING, s)
        self._push(now + self.heartbeat_s, _BEAT, s)

    def discard(self, s: Watched) -> None:
        """`s` has ended. Its two entries are left where they are (removing them
        is a heap search); but an ended session in the heap keeps its WebSocket
        and buffers alive until its entry comes up, up to a ping interval later.
        Under heavy churn that is rate x interval dead sessions, so once dead
        entries are over half the heap it is rebuilt from the live ones: memory
        stays within twice the live sessions, at O(1) amortised per session."""
        self._dead += 2
        heap = self._heap
        if self._dead > len(heap) // 2 + self.COMPACT_ABOVE:
            # In place: `run` holds this list. An earlier deadline than needed
            # (the old heap top) only costs an empty round.
            heap[:] = [e for e in heap if not e[3].ended]
            heapq.heapify(heap)
            self._dead = 0

    def _push(self, due: float, kind: int, s: Watched) -> None:
        heapq.heappush(self._heap, (due, next(self._order), kind, s))
        sleep = self._sleep
        if sleep is not None and due < sleep.deadline:
            sleep.deadline = due

    async def run(self) -> None:
        heap = self._heap
        while True:
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as self._sleep:
                await trio.sleep_forever()
            self._sleep = None
            await self._run_round()

    async def _run_round(self) -> None:
        heap = self._heap
        now = trio.current_time()
        self._round += 1
        self._ping = self._beat = None
        # Whatever falls due within `slack` is done now, early: one wake-up serves
        # many sessions instead of one each. Deadlines are still checked on time
        # (`_liveness` re-queues an early look at an unanswered ping).
        until = now + self.slack
        due = []
        while heap and heap[0][0] <= until:
            due.append(heapq.heappop(heap))
        # Taken out first: what this round puts back (an unanswered ping's
        # deadline, say) waits for a later round.
        for n, (_, _, kind, s) in enumerate(due, 1):
            if s.ended:
                # Counted by `discard` (unless a rebuild already forgot it).
                self._dead = max(0, self._dead - 1)
                continue
            if kind == _PING:
                self._liveness(s, now)
            else:
                self._heartbeat(s, now)
            if n % self.ROUND == 0:
                # Thousands of writes in one go would hold up a publish waiting to run.
                await trio.lowlevel.checkpoint()

    def _liveness(self, s: Watched, now: float) -> None:
        pong = s.pong
        if pong is not None and not pong.answered:
            if now >= s.pong_deadline:
                s.ping_timed_out(self.ping_timeout)
            else:
                self._push(s.pong_deadline, _PING, s)
            return
        if s.ping_due - now > self.slack:
            self._push(s.ping_due, _PING, s)
            return
        s.pong = Pong()
        s.pong_deadline = now + self.ping_timeout
        s.ping_due = now + self.ping_interval
        if self._ping is None:
            payload = struct.pack("!Q", self._round)
            self._ping = (payload, ws_ping_frame(payload))
        s.ping(*self._ping)
        self._push(min(s.ping_due, s.pong_deadline), _PING, s)

    def _heartbeat(self, s: Watched, now: float) -> None:
        due = s.last_write_at() + self.heartbeat_s
        if due - now > self.slack:
            self._push(due, _BEAT, s)
            return
        if self._beat is None:
            self._beat = ws_text_frame(protocol.heartbeat(time.time()))
        s.heartbeat(self._beat)
        self._push(now + self.heartbeat_s, _BEAT, s)


