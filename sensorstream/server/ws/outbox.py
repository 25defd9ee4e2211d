"""One client's outgoing queue, as a policy with no I/O: what to keep, what to drop, what goes next.

A healthy client never has a queue: its frames are written as they come (see
session.py). The outbox holds what could not be written at once, under three
rules:

- data frames are bounded twice, by count (`max_frames`) and by payload bytes
  (`max_bytes`); past either, the oldest queued data frames are dropped (the
  newest always stays) and counted per stream, and the client gets one
  `dropped` notice per stream before its next data;
- control messages (replies, catalog changes, errors) are never dropped; a
  client that lets more than `max_control` of them pile up is too slow to keep
  (`push_control` says so and the session closes it);
- a history replay is one item, holding its frames weakly (`History`).

`take()` hands out the next write: drop notices first, then a run of queued
data frames coalesced into one write of up to `max_write` bytes, a control
message, or a replay. Items come out in the order they went in.
"""

from __future__ import annotations

import collections
import weakref

from ...hub import Frame
from .frames import Framed


class History:
    """Replayed frames for one subscribe, sent in order, held weakly: (key, ref).

    A client that reads its history more slowly than the hub's history moves on
    would otherwise keep its whole snapshot alive, frames the hub has let go of
    included: up to the history cap per such client. Held weakly, a frame lives
    as long as the hub keeps it; one that is gone by the time the sender reaches
    it is skipped and announced as `dropped`."""

    __slots__ = ("frames",)

    def __init__(self, frames: list[tuple[int, weakref.ref[Frame]]]):
        self.frames = frames

    @classmethod
    def of(cls, frames: list[Frame]) -> "History":
        return cls([(f.key, weakref.ref(f)) for f in frames])


# What `take()` hands out.
NOTICES, DATA, CONTROL, REPLAY = range(4)


class Outbox:
    # Slots: one per client that has ever been behind.
    __slots__ = ("max_frames", "max_bytes", "max_control", "max_write", "queue", "n_data", "n_bytes", "n_control", "dropped")

    def __init__(self, max_frames: int, max_bytes: int, max_control: int, max_write: int = 256 * 1024):
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.max_control = max_control
        self.max_write = max_write
        self.queue: collections.deque[Framed | str | History] = collections.deque()
        self.n_data = 0
        self.n_bytes = 0  # payload bytes of the queued data frames
        self.n_control = 0
        self.dropped: dict[int, int] = {}  # stream key -> frames dropped, not yet announced

    def __bool__(self) -> bool:
        """Something to send (queued, or drop notices owed)."""
        return bool(self.queue) or bool(self.dropped)

    # ---- in

    def push_frame(self, f: Framed) -> int:
        """Queue a data frame; returns how many older ones were dropped to make room."""
        self.queue.append(f)
        self.n_data += 1
        self.n_bytes += f.size
        if self.n_data > self.max_frames or self.n_bytes > self.max_bytes:
            return self._drop_oldest()
        return 0

    def push_control(self, text: str) -> bool:
        """Queue a control message (never dropped). False: more than `max_control`
        are waiting now; the client is too slow to keep."""
        self.queue.append(text)
        self.n_control += 1
        return self.n_control <= self.max_control

    def push_history(self, h: History) -> None:
        self.queue.append(h)

    def _drop_oldest(self) -> int:
        q = self.queue
        n = i = 0
        while (self.n_data > self.max_frames or self.n_bytes > self.max_bytes) and self.n_data > 1 and i < len(q):
            item = q[i]
            if type(item) is not Framed:
                i += 1
                continue
            del q[i]
            self.n_data -= 1
            self.n_bytes -= item.size
            self.dropped[item.key] = self.dropped.get(item.key, 0) + 1
            n += 1
        return n

    def purge(self, keys: list[int]) -> None:
        """After an unsubscribe: queued frames of those streams are not sent, nor their drop notices."""
        if not keys:
            return
        gone = set(keys)
        kept: list[Framed | str | History] = []
        for item in self.queue:
            if type(item) is Framed:
                if item.key in gone:
                    self.n_data -= 1
                    self.n_bytes -= item.size
                    continue
            elif type(item) is History:
                frames = [(k, r) for k, r in item.frames if k not in gone]
                if not frames:
                    continue
                item = History(frames)
            kept.append(item)
        # In place: the sender may be holding this deque.
        self.queue.clear()
        self.queue.extend(kept)
        for k in gone:
            self.dropped.pop(k, None)

    # ---- out

    def take(self) -> tuple[int, object, int]:
        """The next write, as (kind, value, frames); only when `bool(self)`.

        NOTICES: value is {key: dropped count}; DATA: value is the bytes of
        `frames` data frames, coalesced; CONTROL: value is the text; REPLAY:
        value is a `History`."""
        if self.dropped:
            pending, self.dropped = self.dropped, {}
            return NOTICES, pending, 0
        q = self.queue
        item = q.popleft()
        kind = type(item)
        if kind is Framed:
            self.n_data -= 1
            self.n_bytes -= item.size
            parts = [item.wire]
            size = len(item.wire)
            # Coalesce what is queued behind it: one write, one syscall.
            while q and type(q[0]) is Framed and size < self.max_write:
                f = q.popleft()
                self.n_data -= 1
                self.n_bytes -= f.size
                parts.append(f.wire)
                size += len(f.wire)
            return DATA, (parts[0] if len(parts) == 1 else b"".join(parts)), len(parts)
        if kind is str:
            self.n_control -= 1
            return CONTROL, item, 0
        return REPLAY, item, 0
