"""`replay --speed 0`: as fast as the clients read.

At speed 0 a replay has no clock to follow; publishing as fast as it can would
overrun every client slower than the disk, and their outboxes would drop the
oldest batches (`dropped` notices). Instead the replay publishes a stream's
next batch only when every client subscribed to it has room for it: fewer
than `PaceLimits.frames` data frames and `PaceLimits.bytes` payload bytes
queued, half the outbox's own limits, so the outbox never drops anything.

- A slow but live client gets every batch: the replay waits for it.
- A dead or stuck client does not stall the replay for ever: the server's
  liveness rules (no Pong within ping_interval + ping_timeout, or one write
  blocked for send_timeout) close it, and once it is gone the replay goes on.
- Until some client is subscribed to one of the replay's streams, nothing is
  published (nobody is reading), so the first client sees the replay from
  its start.

`may_publish` is the decision, pure. `ReadPacer` is the trio side: the replay
parks on it, and the server wakes it (`backlog_changed`) whenever a client's
queue shrinks, a client subscribes, unsubscribes or leaves, and on every
playback control change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import trio

from ..hub import Hub


@dataclass(frozen=True)
class PaceLimits:
    frames: int = 8  # a client with this many data frames queued is not sent more
    bytes: int = 4 * 1024 * 1024  # ... nor with this many payload bytes queued

    @classmethod
    def for_outbox(cls, queue_batches: int, queue_bytes: int) -> "PaceLimits":
        """Half the outbox's limits: a client's queue never reaches them, so nothing is dropped."""
        return cls(max(1, queue_batches // 2), max(1, queue_bytes // 2))


# (data frames, payload bytes) queued for one subscriber; None: it takes everything
# at once (a recorder, a test's watcher), so it never holds the replay back.
Backlog = tuple[int, int] | None


def may_publish(backlogs: Iterable[Backlog], listeners: int, limits: PaceLimits) -> bool:
    """May a stream's next batch go out, given its subscribers' backlogs and how many
    subscriptions the replay's streams have in all (0: nobody is reading yet)?"""
    if listeners == 0:
        return False
    return all(b is None or (b[0] < limits.frames and b[1] < limits.bytes) for b in backlogs)


def backlog(sub) -> Backlog:
    """A client session's backlog (its outbox's `n_data`, `n_bytes`); None for anything else."""
    n = getattr(sub, "n_data", None)
    return None if n is None else (n, sub.n_bytes)


class ReadPacer:
    """The replay's wait at speed 0. `wake` is cheap and synchronous: the server
    calls it on every change that may let the replay go on."""

    def __init__(self, hub: Hub, limits: PaceLimits = PaceLimits()):
        self.hub = hub
        self.limits = limits
        self.waits = 0  # times the replay waited for its clients (or for a first one)
        self.holding = False  # waiting now
        self._lot = trio.lowlevel.ParkingLot()

    def ready(self, key: int, keys: Iterable[int]) -> bool:
        """May the next batch of stream `key` go out? `keys`: all the replay's streams."""
        subs = self.hub.subscribers_of(key)
        listeners = len(subs) or sum(len(self.hub.subscribers_of(k)) for k in keys)
        return may_publish(map(backlog, subs), listeners, self.limits)

    def wake(self) -> None:
        self._lot.unpark_all()

    async def wait(self) -> None:
        """Until the next `wake` (the caller checks `ready` again)."""
        self.waits += 1
        self.holding = True
        try:
            await self._lot.park()
        finally:
            self.holding = False
