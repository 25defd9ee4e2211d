"""One device's write side (:class:`DevicePort`) and the trio tasks that write it.

The source that owns a device (a serial port, a simulator) owns its DevicePort:
it marks it connected or not, runs the writer next to its reader, and hands it
the raw lines its parser could not use (the console). The server submits
commands to it through the registry. Submitting never waits: the bytes are
queued (bounded, see writequeue) and the submitter's callback runs once they
are written, or with ``disconnected`` if the port went away first.
"""

from __future__ import annotations

import logging
import os
from typing import Callable

import trio

from .console import ConsoleLimiter
from .encoding import CommandError
from .profile import Action, Poll, PollSchedule
from .writequeue import MAX_QUEUE_BYTES, WriteQueue

log = logging.getLogger(__name__)

#: done(error_code or None, bytes): how a submitter hears about its command.
Done = Callable[[str | None, int], None]
Console = Callable[["DevicePort", list[str], int], None]


def _ignore(code: str | None, n: int) -> None:
    pass


class DevicePort:
    def __init__(self, stream_id: str, *, actions: tuple[Action, ...] = (), polls: tuple[Poll, ...] = (),
                 accepts_commands: bool = True, max_queue_bytes: int = MAX_QUEUE_BYTES):
        self.stream_id = stream_id
        self.key: int | None = None  # the hub's key, once the stream exists
        self.actions = actions
        self.polls = polls
        self.accepts_commands = accepts_commands
        self.queue = WriteQueue(max_queue_bytes)
        self.connected = False
        self.console = ConsoleLimiter()
        self.on_console: Console | None = None  # set by the registry
        self.bytes_written = 0
        self.polls_sent = 0
        self.polls_skipped = 0  # due while the device was away or its queue full
        self._wake = trio.Event()
        self._up = trio.Event()  # set while connected; a fresh one after each disconnect

    # ---- server side: synchronous, never waits

    def submit(self, data: bytes, done: Done = _ignore) -> None:
        """Queue ``data``; raises CommandError ``disconnected`` or ``rate_limited`` (queue full)."""
        if not self.connected:
            raise CommandError("disconnected", f"{self.stream_id} is disconnected; commands are not kept for later")
        if not self.queue.offer(data, (done, len(data))):
            raise CommandError("rate_limited", f"{self.stream_id} is not taking bytes as fast as they are sent "
                                               f"({self.queue.queued_bytes} bytes still queued)")
        self._wake.set()

    # ---- source side

    def set_connected(self, up: bool) -> None:
        self.connected = up
        if up:
            self._up.set()
        else:
            if self._up.is_set():
                self._up = trio.Event()
            for done, _ in self.queue.clear():
                done("disconnected", 0)

    async def wait_connected(self) -> None:
        """Return once the source has the device open (at once if it has it open now)."""
        await self._up.wait()

    def wrote(self, n: int) -> None:
        self.bytes_written += n
        for done, size in self.queue.wrote(n):
            done(None, size)

    def console_lines(self, lines: list[bytes], now: float) -> None:
        if not lines or self.on_console is None:
            return
        text, dropped = self.console.take(lines, now)
        if text:
            self.on_console(self, text, dropped)

    async def wait_for_work(self) -> memoryview:
        while True:
            head = self.queue.head()
            if head is not None:
                return head
            await self._wake.wait()
            self._wake = trio.Event()

    async def write_fd(self, fd: int) -> None:
        """Write queued commands to ``fd`` (non-blocking, like the reads) as fast as the
        device takes them. A device that stops reading leaves this task waiting for
        the fd to become writable, which blocks nothing else; the queue fills and
        further commands are refused. Raises OSError when the port fails."""
        while True:
            head = await self.wait_for_work()
            try:
                n = os.write(fd, head)
            except BlockingIOError:
                n = 0
            self.wrote(n)
            if n < len(head):
                await trio.lowlevel.wait_writable(fd)

    async def write_with(self, write: Callable[[bytes], object]) -> None:
        """The same for ports without a pollable fd (pyserial URL ports): a blocking
        ``write`` in a worker thread."""
        while True:
            head = await self.wait_for_work()
            data = bytes(head)
            await trio.to_thread.run_sync(write, data, abandon_on_cancel=True)
            self.wrote(len(data))

    async def run_polls(self) -> None:
        """Write the profile's ``[[poll]]`` entries on schedule while the port lives."""
        schedule = PollSchedule(self.polls, trio.current_time())
        while True:
            at = schedule.next_at()
            if at is None:
                return
            await trio.sleep_until(at)
            for data in schedule.due(trio.current_time()):
                try:
                    self.submit(data)
                    self.polls_sent += 1
                except CommandError:
                    self.polls_skipped += 1
