"""The bounded write queue of one port, sans-I/O.

Commands are queued whole (a command either fits or is refused, never cut); the
writer takes the head bytes, writes what the device accepts, and reports how many
went out; each command's ticket comes back once its last byte is written. A
device that stops reading (flow control, a stalled firmware) therefore fills the
queue, and what comes next is refused at once instead of waiting.
"""

from __future__ import annotations

import collections
from typing import Any

#: Default queued bytes per port: a few dozen commands; at 9,600 baud ~4 s of writing.
MAX_QUEUE_BYTES = 4096


class WriteQueue:
    def __init__(self, max_bytes: int = MAX_QUEUE_BYTES):
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self._items: collections.deque[list[Any]] = collections.deque()  # [data, written, ticket]
        self.queued_bytes = 0  # not yet written

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, data: bytes, ticket: Any) -> bool:
        """Queue ``data``; False (nothing queued) if it would not fit."""
        if not data or self.queued_bytes + len(data) > self.max_bytes:
            return False
        self._items.append([bytes(data), 0, ticket])
        self.queued_bytes += len(data)
        return True

    def head(self) -> memoryview | None:
        """The bytes to write next (the rest of the oldest command), or None."""
        if not self._items:
            return None
        data, written, _ = self._items[0]
        return memoryview(data)[written:]

    def wrote(self, n: int) -> list[Any]:
        """``n`` bytes of the head went out: the tickets of the commands now complete."""
        done = []
        self.queued_bytes -= n
        while n and self._items:
            item = self._items[0]
            take = min(n, len(item[0]) - item[1])
            item[1] += take
            n -= take
            if item[1] == len(item[0]):
                self._items.popleft()
                done.append(item[2])
        return done

    def clear(self) -> list[Any]:
        """Drop everything (the port went away): the tickets of the commands not (fully) written."""
        tickets = [item[2] for item in self._items]
        self._items.clear()
        self.queued_bytes = 0
        return tickets
