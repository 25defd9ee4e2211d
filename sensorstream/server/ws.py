"""WebSocket sessions: per-client queue, liveness, backpressure.

Per connection, besides trio-websocket's own reader task:

- the reader, in the connection's own task (`ClientSession.run`): drains
  `get_message()` all the time. trio-websocket stops reading the socket (and
  so stops answering pings) when its receive queue is full, so this must never
  stop while the connection lives.
- a sender task, only while the client has a backlog: it empties the client's
  queue, coalescing consecutive frames into one write. Every write runs under
  `send_timeout`; a client whose socket stays blocked longer is closed. When
  the queue is empty the task ends.

A healthy client needs neither queue nor sender: the hub's `deliver`, control
replies and the keeper's pings and heartbeats write pre-framed bytes straight
to its socket (`DirectWriter`). Liveness and heartbeats for all sessions are
one task (`Keeper`): a Ping every `ping_interval`, no Pong within
`ping_timeout` closes the client (even while a write to it is blocked), and a
heartbeat goes out after `heartbeat_s` with nothing written. Per connection, a
task costs memory and a timer costs wake-ups; with thousands of clients those
were most of the server's idle CPU and a third of its memory.

The hub calls `deliver`/`notify` synchronously. When a client's queue holds
more than `queue_batches` data frames, or more than `queue_mb` of them, the
oldest are dropped and counted, and the client gets a `dropped` message before
its next data. Control messages are
never dropped: a client that lets `queue_control` of them pile up is closed as
too slow.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import math
import os
import secrets
import struct
import time
import weakref
from typing import TYPE_CHECKING

import trio
import trio_websocket
from trio_websocket import ConnectionClosed
import wsproto.events
from wsproto.connection import ConnectionState

from .. import __version__, protocol
from ..hub import Frame, HubError
from .security import TokenBucket, check_patterns

if TYPE_CHECKING:
    from .app import Server

log = logging.getLogger(__name__)

# Coalesce queued frames into writes of up to this many bytes.
MAX_WRITE = 256 * 1024


# ----------------------------------------------------------------- pre-framed writes
#
# A server-to-client WebSocket frame is not masked, so the same bytes are valid
# on every connection: we frame each batch once and write those bytes to every
# subscriber. trio-websocket has no public API for that, so `send_preframed`,
# `DirectWriter`, `expect_pong`, `start_ping` and `release_handshake` reach into
# its private attributes; nothing else does, and tests/test_ws_private_api.py
# fails loudly if a trio-websocket release changes them.


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """RFC 6455 frame: FIN + `opcode`, unmasked (server -> client)."""
    n = len(payload)
    b0 = 0x80 | opcode
    if n < 126:
        head = struct.pack("!BB", b0, n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, 126, n)
    else:
        head = struct.pack("!BBQ", b0, 127, n)
    return head + payload


def ws_binary_frame(payload: bytes) -> bytes:
    return ws_frame(0x2, payload)


def ws_text_frame(text: str) -> bytes:
    return ws_frame(0x1, text.encode())


def ws_ping_frame(payload: bytes) -> bytes:
    if len(payload) > 125:
        raise ValueError("control frames carry at most 125 bytes (RFC 6455 5.5)")
    return ws_frame(0x9, payload)


# Above this size a frame's payload becomes a view into its wire bytes (below it,
# the view object would cost more than the copy it saves).
SHARE_PAYLOAD_ABOVE = 128


def wire_of(frame: Frame) -> bytes:
    w = frame.wire
    if w is None:
        p = frame.payload
        w = frame.wire = ws_binary_frame(p)
        frame.wire_at = trio.current_time()
        if len(p) > SHARE_PAYLOAD_ABOVE:
            # History keeps frames for minutes: one buffer per batch, not two, so
            # the hub's byte cap (which counts the payload) is what it costs.
            frame.payload = memoryview(w)[len(w) - len(p):]
    return w


async def send_preframed(ws: trio_websocket.WebSocketConnection, data: bytes) -> None:
    """Write bytes that already hold complete WebSocket frames."""
    if ws.closed is not None or ws._wsproto.state != ConnectionState.OPEN:
        raise ConnectionClosed(ws.closed)
    # The same lock trio-websocket's own writes (pings, pongs, text) take, so
    # frames never interleave on the wire.
    async with ws._stream_lock:
        try:
            await ws._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ConnectionClosed(ws.closed) from None


class Pong:
    """Stands where trio-websocket keeps a ping's trio.Event: its reader calls
    `set()` when the Pong arrives. Nobody waits on it; the keeper looks at
    `answered` when the ping's deadline comes."""

    __slots__ = ("answered",)

    def __init__(self):
        self.answered = False

    def set(self) -> None:
        self.answered = True

    def is_set(self) -> bool:
        return self.answered


def expect_pong(ws: trio_websocket.WebSocketConnection, payload: bytes, pong: Pong) -> None:
    """Register a Ping we wrote ourselves the way `ws.ping()` registers its own, so
    trio-websocket's pong handling resolves it (calls `pong.set()`)."""
    ws._pings[payload] = pong


def release_handshake(ws: trio_websocket.WebSocketConnection) -> None:
    """Drop what only the opening handshake needed: wsproto keeps its h11 connection
    (parser state and buffers, ~1.5 KiB) for the connection's whole life, though
    once the WebSocket is open it only ever reads the handshake's (empty) event
    queue; trio-websocket keeps the request's headers."""
    hs = ws._wsproto.handshake
    if ws._wsproto.connection is not None and not hs._events:
        hs._h11_connection = None
        hs._initiating_request = None
        hs._events = ()  # only ever read (`while self._events`) from now on; a deque is ~600 B
    # The request's headers, kept for `ws.handshake_headers`, which nothing here reads.
    ws._handshake_headers = ()


async def start_ping(ws: trio_websocket.WebSocketConnection, pong: Pong) -> None:
    """Send a Ping through trio-websocket; `pong.set()` is called when its Pong arrives.

    `ws.ping()` does the same but waits for the pong, which would need a task per
    connection just to wait. Used where the keeper cannot write the ping itself
    (TLS, or the session's sender task is busy)."""
    if ws.closed is not None:
        raise ConnectionClosed(ws.closed)
    payload = os.urandom(8)
    expect_pong(ws, payload, pong)
    await ws._send(wsproto.events.Ping(payload=payload))


class DirectWriter:
    """Writes pre-framed bytes straight to the socket, synchronously, from whoever
    has them (the hub's `deliver`, the keeper's pings and heartbeats, a control
    reply) when nothing else can be writing. A healthy client then costs one
    send() per batch: no task of its own, no wake-up, no trip through trio's
    send_all.

    `idle` is the gate for everything but the session's own sender task: it is
    True while that task is not running, so nothing is queued that a direct write
    could overtake. Whoever finds it False queues instead and starts the sender.

    Against trio-websocket's own writes (pings, pongs, text, close), which take
    `ws._stream_lock`: `attach` installs this object as that lock (same `async
    with` use, FIFO, but not owned by a task), and a direct write goes out only
    while it is free. When a write goes out only in part, `send_now` takes the
    lock on the sender task's behalf: nobody else writes until the sender has
    flushed the rest of the frame (`flush`) and released it.

    Being the lock itself is for speed: `ok` (lock free and the WebSocket open) is
    one slot of this object, kept on every acquire and release, so the fan-out's
    check touches no other object. (A separate lock plus wsproto's `state` cost
    two cache misses per client per batch: 15 % of the fan-out at 1,000 clients.)
    wsproto's state leaves OPEN only through a close frame, which trio-websocket
    sends under this lock, so `release` sees it. A close *received* leaves `ok`
    until the reply goes out, and data frames before that reply are allowed
    (RFC 6455, 5.5.1).

    Plain TCP only: behind TLS (or any stream that is not a SocketStream, like the
    memory streams of tests) `possible` is False and every frame takes the queue.
    This class, `send_preframed` and `expect_pong` are the only places that touch
    trio-websocket's private attributes (`_stream`, `_stream_lock`, `_wsproto`,
    `_pings`) and trio's (a trio socket's `_sock`); tests/test_ws_private_api.py
    fails loudly if a release changes them.
    """

    __slots__ = ("ws", "sock", "proto", "idle", "ok", "free", "partial", "partial_frames", "last_write", "_now", "_lot")

    def __init__(self, ws: trio_websocket.WebSocketConnection, sock):
        self.ws = ws
        # The wsproto connection (set once, at the handshake).
        self.proto = ws._wsproto.connection
        # The stdlib socket inside the trio socket: its fileno() is a C call, and
        # -1 once closed (trio's close() closes this object), so a closed
        # connection's number, perhaps reused by a new one, is never written to.
        self.sock = sock._sock
        self.idle = True
        self.free = True  # the lock
        self._lot = trio.lowlevel.ParkingLot()  # tasks waiting for it, in order
        self.ok = self.proto.state is ConnectionState.OPEN  # free, and open
        self.partial: memoryview | None = None  # rest of a frame a direct write cut short
        self.partial_frames = 0  # how many frames that write completes
        self._now = trio.lowlevel.current_clock().current_time
        self.last_write = self._now()

    @staticmethod
    def possible(ws: trio_websocket.WebSocketConnection) -> bool:
        stream = ws._stream
        inner = getattr(stream, "stream", stream)  # http.PrefixedStream wraps the TCP stream
        return isinstance(inner, trio.SocketStream) and ws._wsproto.connection is not None

    @classmethod
    def attach(cls, ws: trio_websocket.WebSocketConnection) -> "DirectWriter | None":
        """None if this connection cannot take direct writes (see `possible`), or not
        now (its lock is busy: retry later)."""
        if not cls.possible(ws):
            return None
        lock = ws._stream_lock
        if isinstance(lock, DirectWriter):
            return lock
        if lock.locked() or lock.statistics().tasks_waiting:
            return None
        # Swapped only while nobody holds or waits for the old lock, so no
        # writer can be left serialising on a different object.
        stream = ws._stream
        w = ws._stream_lock = cls(ws, getattr(stream, "stream", stream).socket)
        return w

    # ---- the connection's write lock (trio-websocket: `async with ws._stream_lock`)

    async def __aenter__(self) -> None:
        # As trio.Lock does: a checkpoint either way, FIFO, ownership handed over.
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.free:
            self._take()
            await trio.lowlevel.cancel_shielded_checkpoint()
        else:
            await self._lot.park()  # returns once release() has handed it over

    async def __aexit__(self, *exc) -> None:
        self.release()

    def _take(self) -> None:
        self.free = False
        self.ok = False

    def release(self) -> None:
        if self._lot:
            self._lot.unpark()  # the next waiter owns it now: still not free
            return
        self.free = True
        # A close frame went out under the lock: no direct write may follow it.
        self.ok = self.proto.state is ConnectionState.OPEN

    @property
    def waiting(self) -> int:
        """Tasks waiting for the lock."""
        return len(self._lot)

    # ---- writes

    def write(self, data: bytes) -> int:
        """Bytes written now. 0: nothing was (sender running, lock busy, socket full
        or broken); the caller queues and the sender finds out the rest. Fewer than
        len(data): the caller must start the sender, which writes the rest first."""
        if not self.idle:
            return 0
        return self.send_now(data)

    def send_now(self, data: bytes, frames: int = 1, now: float | None = None) -> int:
        """Write without waiting if the lock is free: bytes written (0: none). The
        sender task uses this for its queued frames too, so a backlog costs one
        send() and no trip through trio's scheduler when the socket has room.
        `now`: the clock, if the caller already read it (a fan-out reads it once)."""
        # Touch as few objects as possible: with thousands of clients each is a
        # cache miss after the kernel's send path has run through the caches.
        if not self.ok:
            return 0
        fd = self.sock.fileno()
        if fd < 0:
            return 0
        try:
            n = os.write(fd, data)
        except OSError:  # BlockingIOError, or a dead peer
            return 0
        if n < len(data):
            # Half a frame is on the wire: hold the lock until the sender writes the rest.
            self._take()
            self.partial = memoryview(data)[n:]
            self.partial_frames = frames
            self.idle = False
        self.last_write = self._now() if now is None else now
        return n

    async def flush(self) -> int:
        """Sender task: write the rest of a cut-short frame, then release the lock. Returns its size."""
        rest = self.partial
        await self.ws._stream.send_all(rest)
        # Cleared only once written: if this fails, the session sees a cut-off frame and aborts.
        self.partial = None
        self.release()
        self.last_write = self._now()
        return len(rest)


# ----------------------------------------------------------------- keeper: pings and heartbeats

_PING, _BEAT = 0, 1


class Keeper:
    """Liveness and heartbeats for every session of a server: one task, one heap.

    Each session has two entries in the heap: when its liveness next needs a look
    (a ping due, or an outstanding pong's deadline) and when it next owes a
    heartbeat (`heartbeat_s` after its last write). The keeper sleeps until the
    earliest, then handles everything due. Pings and heartbeats are framed once
    per round and written directly (`DirectWriter`) to every session whose sender
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
        self._heap: list[tuple[float, int, int, ClientSession]] = []
        self._dead = 0  # entries in the heap (roughly) that belong to ended sessions
        self._order = itertools.count()  # ties in due time never compare sessions
        self._sleep: trio.CancelScope | None = None
        self._round = 0
        self._ping: tuple[bytes, bytes] | None = None  # (payload, frame) of this round
        self._beat: bytes | None = None  # heartbeat frame of this round
        self.slack = min(0.1, ping_interval / 20, heartbeat_s / 20)

    def add(self, s: "ClientSession") -> None:
        now = trio.current_time()
        s._ping_due = now + self.ping_interval
        self._push(s._ping_due, _PING, s)
        self._push(now + self.heartbeat_s, _BEAT, s)

    def discard(self, s: "ClientSession") -> None:
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

    def _push(self, due: float, kind: int, s: "ClientSession") -> None:
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

    def _liveness(self, s: "ClientSession", now: float) -> None:
        pong = s._pong
        if pong is not None and not pong.answered:
            if now >= s._pong_deadline:
                s.ping_timed_out(self.ping_timeout)
            else:
                self._push(s._pong_deadline, _PING, s)
            return
        if s._ping_due - now > self.slack:
            self._push(s._ping_due, _PING, s)
            return
        s._pong = Pong()
        s._pong_deadline = now + self.ping_timeout
        s._ping_due = now + self.ping_interval
        if self._ping is None:
            payload = struct.pack("!Q", self._round)
            self._ping = (payload, ws_ping_frame(payload))
        s.ping(*self._ping)
        self._push(min(s._ping_due, s._pong_deadline), _PING, s)

    def _heartbeat(self, s: "ClientSession", now: float) -> None:
        due = s.last_write_at() + self.heartbeat_s
        if due - now > self.slack:
            self._push(due, _BEAT, s)
            return
        if self._beat is None:
            self._beat = ws_text_frame(protocol.heartbeat(time.time()))
        s.heartbeat(self._beat)
        self._push(now + self.heartbeat_s, _BEAT, s)


# ----------------------------------------------------------------- session


class _History:
    """Replayed frames for one subscribe, sent in order, held weakly: (key, ref).

    A client that reads its history more slowly than the hub's history moves on
    would otherwise keep its whole snapshot alive, frames the hub has let go of
    included: up to the history cap per such client. Held weakly, a frame lives
    as long as the hub (or a live queue) keeps it; one that is gone by the time
    the sender reaches it is skipped and announced as `dropped`."""

    __slots__ = ("frames",)

    def __init__(self, frames: list[tuple[int, weakref.ref[Frame]]]):
        self.frames = frames

    @classmethod
    def of(cls, frames: list[Frame]) -> "_History":
        return cls([(f.key, weakref.ref(f)) for f in frames])


class CloseSession(Exception):
    """Ends a session. `abort`: the peer is dead or stuck (or a write was cut off
    mid-frame), so no close handshake is attempted: the socket is just closed."""

    def __init__(self, reason: str, code: int = 1000, abort: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.abort = abort


class ClientSession:
    """One WebSocket client. Its tasks: the connection's own task runs the reader
    (inline, in `run`); the sender task runs only while the client has something
    queued. With direct writes (plain TCP) a healthy client has no task of ours
    at all besides that one, and no timer: the keeper pings it."""

    # Slots: thousands of these live at once, and a __dict__ costs more than the rest.
    __slots__ = ("server", "cfg", "hub", "stats", "ws", "peer", "id", "queue", "n_data", "n_bytes", "n_control", "dropped",
                 "subscriptions", "overflowed", "abort", "ended", "close_reason", "close_code", "frames_sent",
                 "last_write", "_direct", "_nursery", "_scope", "_sender_scope", "_sender_running", "_wake", "_bucket", "_refused_in_a_row",
                 "_ping_due", "_pong", "_pong_deadline", "_ping_owed", "_beat_owed", "__weakref__")

    def __init__(self, server: "Server", ws: trio_websocket.WebSocketConnection, peer: str):
        self.server = server
        self.cfg = server.cfg
        self.hub = server.hub
        self.stats = server.stats
        self.ws = ws
        self.peer = peer
        self.id = secrets.token_hex(8)
        # Most clients never need a queue (see DirectWriter): it is made on first use.
        self.queue: collections.deque[Frame | str | _History] | tuple = ()
        self.n_data = 0
        self.n_bytes = 0  # payload bytes of the queued data frames
        self.n_control = 0
        self.dropped: dict[int, int] = {}
        self.subscriptions: set[str] = set()
        self.overflowed = False
        self.abort = False  # close without a handshake (dead or stuck peer)
        self.ended = False
        self.close_reason = "closed"
        self.close_code = 1000
        self.frames_sent = 0
        self.last_write = trio.current_time()  # by the sender task; direct writes keep their own
        # Set once the WebSocket is known to take direct writes (None: never, or not yet).
        self._direct: DirectWriter | None = None
        self._nursery: trio.Nursery | None = None  # where a sender task runs
        self._scope = trio.CancelScope()  # the session (its reader); stop() cancels it
        self._sender_scope: trio.CancelScope | None = None
        self._sender_running = False
        self._wake: trio.Event | None = None  # a parked sender (no direct writes) waits on it
        # Control messages: `control_rate` a second, `control_burst` at once; a
        # client refused `control_burst` times in a row is closed (1008).
        self._bucket = TokenBucket(self.cfg.control_rate, self.cfg.control_burst, trio.current_time())
        self._refused_in_a_row = 0
        # Liveness, kept by the keeper: when the next ping is due, the outstanding
        # ping's Pong, and when that Pong is overdue.
        self._ping_due = 0.0
        self._pong: Pong | None = None
        self._pong_deadline = math.inf
        # Owed to the peer by the sender task (the keeper could not write them directly).
        self._ping_owed = False
        self._beat_owed = False

    def _queue(self) -> collections.deque:
        q = self.queue
        if type(q) is tuple:
            q = self.queue = collections.deque()
        return q

    # ---- hub side: synchronous, never blocks

    def deliver(self, frame: Frame) -> None:
        # The hot path: once per client per batch. It inlines DirectWriter.write
        # and reads the shared frame's bytes and time (see Frame.wire_at), so a
        # healthy client costs its send() and a few attribute reads.
        direct = self._direct
        if direct is not None and direct.idle and not self.queue and not self.dropped:
            data = frame.wire
            if data is None:
                data = wire_of(frame)
            n = direct.send_now(data, 1, frame.wire_at)
            if n == len(data):
                self.frames_sent += 1
                self.stats.frames_sent_total += 1
                self.stats.bytes_sent_total += n
                return
            if n:
                # Cut short: the sender writes the rest (and counts the frame) before anything else.
                self.stats.bytes_sent_total += n
                self._kick()
                return
        self._queue().append(frame)
        self.n_data += 1
        self.n_bytes += len(frame.payload)
        if self.n_data > self.cfg.queue_batches or self.n_bytes > self.server.queue_bytes:
            self._drop_oldest()
        self._kick()

    def notify(self, text: str) -> None:
        self._enqueue_control(text)

    def _write_now(self, data: bytes) -> bool:
        """Write `data` directly if nothing else is being written. False: nothing
        went out (no direct writes on this connection, sender running, socket
        full). A write cut short starts the sender, which writes the rest first."""
        direct = self._direct
        if direct is None:
            return False
        n = direct.write(data)
        if 0 < n < len(data):
            self._kick()
        return n > 0

    def _enqueue_control(self, text: str) -> None:
        d = self._direct
        # Framed only when it can go out now (the sender frames queued text itself).
        if d is not None and d.idle and not self.queue and not self.dropped and self._write_now(ws_text_frame(text)):
            return
        self._queue().append(text)
        self.n_control += 1
        if self.n_control > self.cfg.queue_control and not self.overflowed:
            # Never drop control messages; a client this far behind is cut off.
            self.overflowed = True
            self.abort = True
            self.stats.slow_control_closed_total += 1
            self.stop("control queue overflow (client too slow)", 1008)
        self._kick()

    def _drop_oldest(self) -> None:
        """Drop the oldest queued data frames until the queue is within both of its
        limits; the newest frame always stays."""
        q = self.queue
        limit, cap = self.cfg.queue_batches, self.server.queue_bytes
        i = 0
        while (self.n_data > limit or self.n_bytes > cap) and self.n_data > 1 and i < len(q):
            item = q[i]
            if type(item) is not Frame:
                i += 1
                continue
            del q[i]
            self.n_data -= 1
            self.n_bytes -= len(item.payload)
            self.dropped[item.key] = self.dropped.get(item.key, 0) + 1
            self.stats.dropped_batches_total += 1

    def stop(self, reason: str, code: int) -> None:
        self.close_reason, self.close_code = reason, code
        self._scope.cancel()
        if self._sender_scope is not None:
            self._sender_scope.cancel()

    @property
    def behind(self) -> bool:
        """The client has a backlog: frames or messages queued, or a frame half written."""
        d = self._direct
        return bool(self.queue) or bool(self.dropped) or (d is not None and d.partial is not None)

    # ---- keeper side: synchronous too

    def last_write_at(self) -> float:
        d = self._direct
        return self.last_write if d is None or d.last_write < self.last_write else d.last_write

    def ping(self, payload: bytes, frame: bytes) -> None:
        """Ping the peer (its Pong sets `self._pong`): directly if nothing else is being
        written, else the sender task sends one when it gets to it."""
        if self._write_now(frame):
            expect_pong(self.ws, payload, self._pong)
            return
        self._ping_owed = True
        self._kick()

    def heartbeat(self, frame: bytes) -> None:
        if self._write_now(frame):
            return
        self._beat_owed = True
        self._kick()

    def ping_timed_out(self, timeout: float) -> None:
        self.stats.ping_timeouts_total += 1
        self.abort = True
        self.stop(f"ping timeout (no pong in {timeout:g} s)", 1011)

    # ---- tasks

    async def run(self, nursery: trio.Nursery) -> None:
        """Run until the client goes away, a limit trips or the server stops. The
        reader runs here, in the connection's own task; a sender task, when one
        is needed, runs in `nursery` (the connection's, which outlives this call)."""
        hello = protocol.hello(f"sensorstream/{__version__}", self.id, self.cfg.heartbeat_s, self.hub.catalog())
        self._direct = DirectWriter.attach(self.ws)
        release_handshake(self.ws)
        self._nursery = nursery
        keeper = None
        try:
            with self._scope:
                try:
                    self._enqueue_control(hello)
                    self.hub.attach(self)
                    keeper = self.server.keeper
                    keeper.add(self)
                    while True:
                        self.handle_message(await self.ws.get_message())
                except (ConnectionClosed, CloseSession) as e:
                    self._ended_by(e)
        finally:
            self.ended = True
            if keeper is not None:
                keeper.discard(self)
            if self._sender_scope is not None:
                self._sender_scope.cancel()
            self.hub.detach(self)

    def _ended_by(self, e: "ConnectionClosed | CloseSession") -> None:
        """The one place that turns how a session ended into a reason and a close code."""
        if isinstance(e, CloseSession):
            self.close_reason, self.close_code, self.abort = e.reason, e.code, e.abort
            return
        r = e.reason
        if self.close_reason == "closed":
            self.close_reason = f"client closed ({r.code if r else 'no close frame'})"
            self.close_code = r.code if r and r.code else 1006

    def handle_message(self, msg: str | bytes) -> None:
        try:
            # Before parsing, so a refused message costs next to nothing (and so
            # its `rate_limited` error carries no ref).
            self._rate_limit(None, 1)
            req = protocol.parse_client_message(msg)
            if isinstance(req, (protocol.Subscribe, protocol.Unsubscribe)):
                globs = check_patterns(req)
                if globs:
                    self._rate_limit(req.ref, globs)
            if isinstance(req, protocol.Subscribe):
                if len(self.subscriptions.union(req.streams)) > self.cfg.max_subscriptions:
                    raise protocol.ProtocolError(
                        "too_many_subscriptions", f"a connection holds at most {self.cfg.max_subscriptions} stream patterns", req.ref)
                try:
                    keys, history = self.hub.subscribe(self, req.streams, req.history_s)
                except HubError as e:
                    raise protocol.ProtocolError(e.code, e.message, req.ref) from None
                self.subscriptions.update(req.streams)
                self._enqueue_control(protocol.subscribed(req.ref, keys))
                for text in self.server.alerts.firing_messages(keys):
                    self._enqueue_control(text)  # a late subscriber learns what is firing now
                if history:
                    # Same synchronous step as the subscribe: nothing can be
                    # published in between, so history meets live exactly.
                    self._queue().append(_History.of(history))
                    self._kick()
            elif isinstance(req, protocol.Unsubscribe):
                try:
                    keys = self.hub.unsubscribe(self, req.streams)
                except HubError as e:
                    raise protocol.ProtocolError(e.code, e.message, req.ref) from None
                self.subscriptions.difference_update(req.streams)
                self._purge(keys)
                self._enqueue_control(protocol.unsubscribed(req.ref, keys))
            else:
                self._enqueue_control(protocol.pong(req.ref))
        except protocol.ProtocolError as e:
            if e.code != "rate_limited":
                self.stats.protocol_errors_total += 1
            log.debug("client %s: %s (%s)", self.peer, e.code, e.message)
            self._enqueue_control(e.to_message())

    def _rate_limit(self, ref, cost: int) -> None:
        """Take `cost` tokens or refuse the message; too many refusals in a row end the session."""
        if self._bucket.take(trio.current_time(), cost):
            self._refused_in_a_row = 0
            return
        self._refused_in_a_row += 1
        self.stats.rate_limited_total += 1
        if self._refused_in_a_row > self.cfg.control_burst:
            log.warning("client %s: still over the control-message rate limit, closing", self.peer,
                        extra={"event": "rate_limit_close", "peer": self.peer, "session": self.id})
            raise CloseSession("control-message rate limit exceeded", 1008)
        raise protocol.ProtocolError("rate_limited", f"at most {self.cfg.control_rate:g} control messages a second", ref)

    def _purge(self, keys: list[int]) -> None:
        """After an unsubscribe, queued frames of those streams are not sent."""
        if not keys or not self.queue:
            return
        gone = set(keys)
        kept = []
        for item in self.queue:
            if type(item) is Frame and item.key in gone:
                self.n_data -= 1
                self.n_bytes -= len(item.payload)
            elif type(item) is _History:
                frames = [(k, r) for k, r in item.frames if k not in gone]
                if frames:
                    kept.append(_History(frames))
            else:
                kept.append(item)
        # In place: the sender task may be holding this deque.
        self.queue.clear()
        self.queue.extend(kept)
        for k in gone:
            self.dropped.pop(k, None)

    # ---- the sender task: runs while something is queued (or owed)

    def _kick(self) -> None:
        """Make sure the sender task runs: start it, or wake it if it is parked."""
        if self._sender_running:
            if self._wake is not None:
                self._wake.set()
            return
        if self._nursery is None or self.ended or self._scope.cancel_called:
            return  # not started, or ending: a new sender would write after the end
        self._sender_running = True
        if self._direct is not None:
            self._direct.idle = False
        self._sender_scope = trio.CancelScope()
        self._nursery.start_soon(self._run_sender, self._sender_scope)

    async def _run_sender(self, scope: trio.CancelScope) -> None:
        with scope:
            try:
                await self._sender()
            except (ConnectionClosed, CloseSession) as e:
                self._ended_by(e)
                self._scope.cancel()

    def _write_deadline(self) -> float:
        # A dead peer is the keeper's to close (no pong); this bounds a live but stuck one.
        return trio.current_time() + self.cfg.send_timeout

    def _too_slow(self) -> CloseSession:
        self.stats.send_timeouts_total += 1
        return CloseSession(f"send timeout ({self.cfg.send_timeout:g} s)", 1008, abort=True)

    async def _sender(self) -> None:
        try:
            while True:
                direct = self._direct
                if direct is not None and direct.partial is not None:
                    await self._flush_direct(direct)
                elif self._ping_owed:
                    await self._send_owed_ping()
                elif self.queue or self.dropped:
                    await self._send_next()
                elif self._beat_owed:
                    self._beat_owed = False
                    if self.last_write_at() + self.cfg.heartbeat_s <= trio.current_time():
                        await self._send_text(protocol.heartbeat(time.time()))
                elif direct is not None:
                    # Nothing left: direct writes take over, and this task ends.
                    direct.idle = True
                    self._sender_running = False
                    return
                elif (direct := DirectWriter.attach(self.ws)) is not None:
                    # The lock was busy when the session started; it is free now.
                    self._direct = direct
                else:
                    # No direct writes on this connection (TLS): park until there is work.
                    self._wake = trio.Event()
                    await self._wake.wait()
                    self._wake = None
        except BaseException:
            self._sender_running = False
            if self._direct is not None and self._direct.partial is not None:
                # Half a frame on the wire: a close frame now would be garbage to the peer.
                self.abort = True
            raise

    async def _timed_write(self, send, *args) -> None:
        """Every write the sender task waits for: bounded by `send_timeout` (a
        stuck peer is closed with 1008), and the time of the last write kept."""
        try:
            with trio.fail_at(self._write_deadline()):
                await send(*args)
        except trio.TooSlowError:
            raise self._too_slow() from None
        self.last_write = trio.current_time()

    async def _send_owed_ping(self) -> None:
        self._ping_owed = False
        pong = self._pong
        if pong is None or pong.answered:
            return
        await self._timed_write(start_ping, self.ws, pong)

    def _sent(self, frames: int, nbytes: int) -> None:
        """Count what the sender task wrote (`deliver` counts its own direct writes inline)."""
        self.frames_sent += frames
        self.stats.frames_sent_total += frames
        self.stats.bytes_sent_total += nbytes

    async def _send_bytes(self, data: bytes, frames: int) -> None:
        direct = self._direct
        if direct is not None:
            n = direct.send_now(data, frames)
            if n == len(data):
                self._sent(frames, n)
                return
            if n:
                self._sent(0, n)
                await self._flush_direct(direct)
                return
        await self._timed_write(send_preframed, self.ws, data)
        self._sent(frames, len(data))

    async def _flush_direct(self, direct: DirectWriter) -> None:
        try:
            with trio.fail_at(self._write_deadline()):
                n = await direct.flush()
        except trio.TooSlowError:
            raise self._too_slow() from None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise CloseSession("connection lost mid-frame", 1006, abort=True) from None
        self._sent(direct.partial_frames, n)

    async def _send_next(self) -> None:
        """One step of the queue: pending drop notices, a run of frames (coalesced), a control message or a history replay."""
        q = self.queue
        if self.dropped:
            pending, self.dropped = self.dropped, {}
            await self._send_drop_notices(pending)
            return
        item = q.popleft()
        kind = type(item)
        if kind is Frame:
            self.n_data -= 1
            self.n_bytes -= len(item.payload)
            parts = [wire_of(item)]
            size = len(parts[0])
            # Coalesce what is queued behind it: one write, one syscall.
            while q and type(q[0]) is Frame and size < MAX_WRITE:
                f = q.popleft()
                self.n_data -= 1
                self.n_bytes -= len(f.payload)
                w = wire_of(f)
                parts.append(w)
                size += len(w)
            await self._send_bytes(parts[0] if len(parts) == 1 else b"".join(parts), len(parts))
        elif kind is str:
            self.n_control -= 1
            await self._send_text(item)
        else:
            await self._send_history(item.frames)

    async def _send_text(self, text: str) -> None:
        await self._timed_write(self.ws.send_message, text)

    async def _send_history(self, frames: list[tuple[int, weakref.ref[Frame]]]) -> None:
        parts: list[bytes] = []
        size = 0
        lost: dict[int, int] = {}
        for key, ref in frames:
            f = ref()
            if f is None:  # the hub's history moved past it first (see _History)
                lost[key] = lost.get(key, 0) + 1
                self.stats.dropped_batches_total += 1
                continue
            w = ws_binary_frame(protocol.mark_replayed(f.payload))
            del f
            if lost:  # announced before the next frame, as for a full queue
                if parts:
                    await self._send_bytes(b"".join(parts), len(parts))
                    parts, size = [], 0
                await self._send_drop_notices(lost)
                lost = {}
            parts.append(w)
            size += len(w)
            if size >= MAX_WRITE:
                await self._send_bytes(b"".join(parts), len(parts))
                parts, size = [], 0
        if parts:
            await self._send_bytes(b"".join(parts), len(parts))
        if lost:
            await self._send_drop_notices(lost)

    async def _send_drop_notices(self, counts: dict[int, int]) -> None:
        for key, n in counts.items():
            await self._send_text(protocol.dropped(key, n))
