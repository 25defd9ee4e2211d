"""WebSocket sessions: per-client queue, liveness, backpressure.

Each connection runs two tasks in a nursery the session owns (plus
trio-websocket's own reader):

- reader: drains `get_message()` all the time. trio-websocket stops reading
  the socket (and so stops answering pings) when its receive queue is full, so
  this task must never stop while the connection lives.
- sender: the only task that writes data. It empties the client's queue,
  coalescing consecutive frames into one write, and sends a heartbeat when the
  connection has been idle for `heartbeat_s`. Every write runs under
  `send_timeout`; a client whose socket stays blocked longer is closed. It
  also keeps liveness: a WebSocket Ping every `ping_interval`, and no Pong
  within `ping_timeout` closes the client (even while a write is blocked).
  Liveness has no task of its own: per connection, a task costs memory and
  its timer costs wake-ups, for something the sender can check on its way.

The hub calls `deliver`/`notify` synchronously; both only append to the
queue. When a client's queue holds more than `queue_batches` data frames the
oldest is dropped and counted, and the client gets a `dropped` message before
its next data. Control messages are never dropped: a client that lets
`queue_control` of them pile up is closed as too slow.
"""

from __future__ import annotations

import collections
import logging
import os
import secrets
import struct
import time
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
# subscriber. trio-websocket has no public API for that, so `send_preframed`
# reaches into two private attributes. It is the only place that does;
# tests/test_ws_private_api.py fails loudly if a trio-websocket release changes them.


def ws_binary_frame(payload: bytes) -> bytes:
    """RFC 6455 frame: FIN + opcode 2 (binary), unmasked, for server -> client."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x82, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x82, 126, n)
    else:
        head = struct.pack("!BBQ", 0x82, 127, n)
    return head + payload


def wire_of(frame: Frame) -> bytes:
    w = frame.wire
    if w is None:
        w = frame.wire = ws_binary_frame(frame.payload)
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
    `set()` when the Pong arrives, and we wake whoever is waiting (the sender)."""

    __slots__ = ("answered", "wake")

    def __init__(self, wake):
        self.answered = False
        self.wake = wake

    def set(self) -> None:
        self.answered = True
        self.wake()

    def is_set(self) -> bool:
        return self.answered


async def start_ping(ws: trio_websocket.WebSocketConnection, pong: Pong) -> None:
    """Send a Ping; `pong.set()` is called when its Pong arrives.

    `ws.ping()` does the same but waits for the pong, which would need a task per
    connection just to wait; this registers the payload the way `ping()` does, so
    trio-websocket's own pong handling resolves it."""
    if ws.closed is not None:
        raise ConnectionClosed(ws.closed)
    payload = os.urandom(8)
    ws._pings[payload] = pong
    await ws._send(wsproto.events.Ping(payload=payload))


class DirectWriter:
    """Writes a pre-framed batch straight to the socket from `deliver` (synchronous,
    in the publisher's task) when nothing else can be writing, so a healthy client
    costs one send() per batch instead of a wake-up of its sender task and trio's
    whole send_all path.

    The gate: trio-websocket serialises its own writes (pings, pongs, text, close)
    with `ws._stream_lock`. `attach` swaps that lock for a `trio.Semaphore(1)`
    (same `async with` use, FIFO, but not owned by a task), so that when a direct
    write goes out only in part, `write` can take the gate on the sender task's
    behalf: nobody else writes until the sender has flushed the rest of the frame
    (`flush`) and released it. A direct write is tried only when the gate is free,
    the sender task is idle (so its queue is empty: nothing queued is overtaken)
    and no earlier remainder is pending.

    Plain TCP only: behind TLS (or any stream that is not a SocketStream, like the
    memory streams of tests) `attach` returns None and every frame takes the
    queue. This class and `send_preframed` are the only places that touch
    trio-websocket's private attributes (`_stream`, `_stream_lock`, `_wsproto`);
    tests/test_ws_private_api.py fails loudly if a release changes them.
    """

    __slots__ = ("ws", "gate", "sock", "proto", "idle", "partial", "partial_frames", "last_write", "_now")

    def __init__(self, ws: trio_websocket.WebSocketConnection, gate: trio.Semaphore, sock):
        self.ws = ws
        self.gate = gate
        # The wsproto connection (set once, at the handshake): its state leaves OPEN
        # synchronously with any close frame trio-websocket queues or receives.
        self.proto = ws._wsproto.connection
        self.sock = sock  # trio socket; fileno() is -1 once closed
        # Set by the sender task while it waits for work with nothing pending;
        # cleared by a cut-short write, so one flag gates the fast path.
        self.idle = False
        self.partial: memoryview | None = None  # rest of a frame a direct write cut short
        self.partial_frames = 0  # how many frames that write completes
        self._now = trio.lowlevel.current_clock().current_time
        self.last_write = self._now()

    @classmethod
    def attach(cls, ws: trio_websocket.WebSocketConnection) -> "DirectWriter | None":
        """None if this connection cannot take direct writes (TLS), or not now (its lock is busy: retry later)."""
        stream = ws._stream
        inner = getattr(stream, "stream", stream)  # http.PrefixedStream wraps the TCP stream
        if not isinstance(inner, trio.SocketStream) or ws._wsproto.connection is None:
            return None
        lock = ws._stream_lock
        if isinstance(lock, trio.Semaphore):
            gate = lock
        elif lock.locked() or lock.statistics().tasks_waiting:
            return None
        else:
            # Swapped only while nobody holds or waits for the old lock, so no
            # writer can be left serialising on a different object.
            gate = ws._stream_lock = trio.Semaphore(1)
        return cls(ws, gate, inner.socket)

    def write(self, data: bytes) -> int:
        """From `deliver`: bytes written now. 0: nothing was (sender busy, gate busy,
        socket full or broken); the caller queues the frame and the sender finds out the rest."""
        # Touch as few objects as possible: with thousands of clients each is a
        # cache miss after the kernel's send path has run through the caches.
        if not self.idle:
            return 0
        return self.send_now(data)

    def send_now(self, data: bytes, frames: int = 1) -> int:
        """Write without waiting if the gate is free: bytes written (0: none). The
        sender task uses this for its queued frames too, so a backlog costs one
        send() and no trip through trio's scheduler when the socket has room."""
        if not self.gate.value or self.proto.state is not ConnectionState.OPEN:
            return 0
        fd = self.sock.fileno()
        if fd < 0:
            return 0
        try:
            n = os.write(fd, data)
        except OSError:  # BlockingIOError, or a dead peer
            return 0
        if n < len(data):
            # Half a frame is on the wire: hold the gate until the sender writes the rest.
            self.gate.acquire_nowait()
            self.partial = memoryview(data)[n:]
            self.partial_frames = frames
            self.idle = False
        self.last_write = self._now()
        return n

    async def flush(self) -> int:
        """Sender task: write the rest of a cut-short frame, then open the gate. Returns its size."""
        rest = self.partial
        await self.ws._stream.send_all(rest)
        # Cleared only once written: if this fails, the session sees a cut-off frame and aborts.
        self.partial = None
        self.gate.release()
        return len(rest)


# ----------------------------------------------------------------- session


class _History:
    """Replayed frames for one subscribe: sent in order, never dropped (the hub caps history)."""

    __slots__ = ("frames",)

    def __init__(self, frames: list[Frame]):
        self.frames = frames


class CloseSession(Exception):
    """Ends a session. `abort`: the peer is dead or stuck (or a write was cut off
    mid-frame), so no close handshake is attempted: the socket is just closed."""

    def __init__(self, reason: str, code: int = 1000, abort: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.abort = abort


class ClientSession:
    #: Set by the sender task once it runs (None behind TLS): see DirectWriter.
    _direct: DirectWriter | None = None
    # Liveness, kept by the sender task (see _check_liveness): when the next ping
    # is due, the outstanding ping's pong event, and when that pong is overdue.
    _ping_due: float = 0.0
    _pong: "Pong | None" = None
    _pong_deadline: float = float("inf")

    def __init__(self, server: "Server", ws: trio_websocket.WebSocketConnection, peer: str):
        self.server = server
        self.cfg = server.cfg
        self.hub = server.hub
        self.stats = server.stats
        self.ws = ws
        self.peer = peer
        self.id = secrets.token_hex(8)
        self.queue: collections.deque[Frame | str | _History] = collections.deque()
        self.n_data = 0
        self.n_control = 0
        self.dropped: dict[int, int] = {}
        self.subscriptions: set[str] = set()
        self._wake = trio.Event()
        self.overflowed = False
        self.abort = False  # close without a handshake (dead or stuck peer)
        self.close_reason = "closed"
        self.close_code = 1000
        self.frames_sent = 0
        self._cancel: trio.CancelScope | None = None
        # Control messages: `control_rate` a second, `control_burst` at once; a
        # client refused `control_burst` times in a row is closed (1008).
        self._bucket = TokenBucket(self.cfg.control_rate, self.cfg.control_burst, trio.current_time())
        self._refused_in_a_row = 0

    # ---- hub side: synchronous, never blocks

    def deliver(self, frame: Frame) -> None:
        direct = self._direct
        if direct is not None and not self.queue and not self.dropped:
            data = wire_of(frame)
            n = direct.write(data)
            if n == len(data):
                self.frames_sent += 1
                self.stats.frames_sent_total += 1
                self.stats.bytes_sent_total += n
                return
            if n:
                # Cut short: the sender writes the rest (and counts the frame) before anything else.
                self.stats.bytes_sent_total += n
                self._wake.set()
                return
        self.queue.append(frame)
        self.n_data += 1
        if self.n_data > self.cfg.queue_batches:
            self._drop_oldest()
        self._wake.set()

    def notify(self, text: str) -> None:
        self._enqueue_control(text)

    def _enqueue_control(self, text: str) -> None:
        self.queue.append(text)
        self.n_control += 1
        if self.n_control > self.cfg.queue_control and not self.overflowed:
            # Never drop control messages; a client this far behind is cut off.
            self.overflowed = True
            self.abort = True
            self.stats.slow_control_closed_total += 1
            self.stop("control queue overflow (client too slow)", 1008)
        self._wake.set()

    def _drop_oldest(self) -> None:
        q = self.queue
        for i, item in enumerate(q):
            if type(item) is Frame:
                del q[i]
                self.n_data -= 1
                self.dropped[item.key] = self.dropped.get(item.key, 0) + 1
                self.stats.dropped_batches_total += 1
                return

    def stop(self, reason: str, code: int) -> None:
        self.close_reason, self.close_code = reason, code
        if self._cancel is not None:
            self._cancel.cancel()

    # ---- tasks

    async def run(self) -> None:
        """Run until the client goes away, a limit trips or the server stops."""
        hello = protocol.hello(f"sensorstream/{__version__}", self.id, self.cfg.heartbeat_s, self.hub.catalog())
        self._enqueue_control(hello)
        self.hub.attach(self)
        try:
            async with trio.open_nursery() as nursery:
                self._cancel = nursery.cancel_scope
                nursery.start_soon(self._guard, self._reader)
                nursery.start_soon(self._guard, self._sender)
        finally:
            self.hub.detach(self)

    async def _guard(self, fn) -> None:
        # Each task ends the whole session, whichever way it ends: one place to
        # turn every ending into a reason and a close code.
        try:
            await fn()
        except ConnectionClosed as e:
            r = e.reason
            if self.close_reason == "closed":
                self.close_reason = f"client closed ({r.code if r else 'no close frame'})"
                self.close_code = r.code if r and r.code else 1006
        except CloseSession as e:
            self.close_reason, self.close_code, self.abort = e.reason, e.code, e.abort
        finally:
            if self._cancel is not None:
                self._cancel.cancel()

    async def _reader(self) -> None:
        while True:
            msg = await self.ws.get_message()
            self.handle_message(msg)

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
                if history:
                    # Same synchronous step as the subscribe: nothing can be
                    # published in between, so history meets live exactly.
                    self.queue.append(_History(history))
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
        if not keys:
            return
        gone = set(keys)
        kept = []
        for item in self.queue:
            if type(item) is Frame and item.key in gone:
                self.n_data -= 1
            elif type(item) is _History:
                frames = [f for f in item.frames if f.key not in gone]
                if frames:
                    kept.append(_History(frames))
            else:
                kept.append(item)
        # In place: the sender task holds a reference to this deque.
        self.queue.clear()
        self.queue.extend(kept)
        for k in gone:
            self.dropped.pop(k, None)

    def _liveness_limit(self) -> float:
        """When the peer counts as dead unless a pong arrives: the outstanding ping's
        deadline or, with none outstanding, the next ping's due time + ping_timeout
        (a write blocked past that also keeps the ping from going out)."""
        if self._pong is not None and not self._pong.is_set():
            return self._pong_deadline
        return self._ping_due + self.cfg.ping_timeout

    def _write_deadline(self) -> float:
        """A write may block until send_timeout, or until the liveness limit if that
        comes first: a dead peer stops both reading and ponging, and it is gone
        after ping_interval + ping_timeout even when a write to it is stuck."""
        return min(trio.current_time() + self.cfg.send_timeout, self._liveness_limit())

    def _too_slow(self) -> CloseSession:
        if trio.current_time() >= self._liveness_limit():
            self.stats.ping_timeouts_total += 1
            return CloseSession(f"ping timeout (no pong in {self.cfg.ping_timeout:g} s)", 1011, abort=True)
        self.stats.send_timeouts_total += 1
        return CloseSession(f"send timeout ({self.cfg.send_timeout:g} s)", 1008, abort=True)

    async def _send_text(self, text: str) -> None:
        with trio.fail_at(self._write_deadline()):
            await self.ws.send_message(text)

    async def _send_bytes(self, data: bytes, frames: int) -> None:
        direct = self._direct
        if direct is not None:
            n = direct.send_now(data, frames)
            if n == len(data):
                self.frames_sent += frames
                self.stats.frames_sent_total += frames
                self.stats.bytes_sent_total += n
                return
            if n:
                self.stats.bytes_sent_total += n
                await self._flush_direct(direct)
                return
        try:
            with trio.fail_at(self._write_deadline()):
                await send_preframed(self.ws, data)
        except trio.TooSlowError:
            raise self._too_slow() from None
        self.frames_sent += frames
        self.stats.frames_sent_total += frames
        self.stats.bytes_sent_total += len(data)

    async def _sender(self) -> None:
        q = self.queue
        self._ping_due = trio.current_time() + self.cfg.ping_interval
        try:
            while True:
                if trio.current_time() >= self._liveness_at():
                    await self._check_liveness()
                direct = self._direct
                if direct is not None and direct.partial is not None:
                    await self._flush_direct(direct)
                    continue
                if not q and not self.dropped:
                    if direct is None:
                        direct = self._direct = DirectWriter.attach(self.ws)
                    await self._idle(direct)
                    continue
                await self._send_next()
        finally:
            if self._direct is not None and self._direct.partial is not None:
                # Half a frame on the wire: a close frame now would be garbage to the peer.
                self.abort = True

    async def _idle(self, direct: DirectWriter | None) -> None:
        """Wait for work. Meanwhile `deliver` may write frames directly; a heartbeat
        goes out once `heartbeat_s` has passed with nothing written at all."""
        hb = self.cfg.heartbeat_s
        since = trio.current_time()
        beat = False
        if direct is not None:
            direct.idle = True
            # Clients written to by the same publish would otherwise all wake at the
            # same instant, heartbeat_s later, and delay the next publish: spread those
            # wake-ups over a quarter of heartbeat_s, per session (a heartbeat after
            # data stops may come that much later; clients allow 2.5 x heartbeat_s).
            spread = int(self.id[:4], 16) / 0x10000 * 0.25 * hb
        try:
            while True:
                last = since if direct is None else max(since, direct.last_write + spread)
                with trio.move_on_at(min(last + hb, self._liveness_at())) as waited:
                    await self._wake.wait()
                if not waited.cancelled_caught:
                    break
                if trio.current_time() >= self._liveness_at():
                    break  # the sender loop pings, or closes a peer whose pong is overdue
                if direct is None or direct.last_write + hb <= trio.current_time():
                    beat = True
                    break
        finally:
            if direct is not None:
                direct.idle = False
        self._wake = trio.Event()
        if beat:
            await self._send_text_checked(protocol.heartbeat(time.time()))

    async def _flush_direct(self, direct: DirectWriter) -> None:
        try:
            with trio.fail_at(self._write_deadline()):
                n = await direct.flush()
        except trio.TooSlowError:
            raise self._too_slow() from None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise CloseSession("connection lost mid-frame", 1006, abort=True) from None
        frames = direct.partial_frames
        self.frames_sent += frames
        self.stats.frames_sent_total += frames
        self.stats.bytes_sent_total += n

    async def _send_next(self) -> None:
        """One step of the queue: pending drop notices, a run of frames (coalesced), a control message or a history replay."""
        q = self.queue
        if self.dropped:
            pending, self.dropped = self.dropped, {}
            for key, n in pending.items():
                await self._send_text_checked(protocol.dropped(key, n))
            return
        item = q.popleft()
        kind = type(item)
        if kind is Frame:
            self.n_data -= 1
            parts = [wire_of(item)]
            size = len(parts[0])
            # Coalesce what is queued behind it: one write, one syscall.
            while q and type(q[0]) is Frame and size < MAX_WRITE:
                f = q.popleft()
                self.n_data -= 1
                w = wire_of(f)
                parts.append(w)
                size += len(w)
            await self._send_bytes(parts[0] if len(parts) == 1 else b"".join(parts), len(parts))
        elif kind is str:
            self.n_control -= 1
            await self._send_text_checked(item)
        else:
            await self._send_history(item.frames)

    async def _send_text_checked(self, text: str) -> None:
        try:
            await self._send_text(text)
        except trio.TooSlowError:
            raise self._too_slow() from None

    async def _send_history(self, frames: list[Frame]) -> None:
        parts: list[bytes] = []
        size = 0
        for f in frames:
            w = ws_binary_frame(protocol.mark_replayed(f.payload))
            parts.append(w)
            size += len(w)
            if size >= MAX_WRITE:
                await self._send_bytes(b"".join(parts), len(parts))
                parts, size = [], 0
        if parts:
            await self._send_bytes(b"".join(parts), len(parts))

    # ---- liveness: WebSocket Ping/Pong, run by the sender task (one task fewer
    # per connection than a pinger of its own, and no extra wake-ups)

    def _wake_sender(self) -> None:
        self._wake.set()

    def _liveness_at(self) -> float:
        """When liveness next needs the sender: a ping due, or an outstanding pong overdue."""
        if self._pong is None or self._pong.is_set():
            return self._ping_due
        return self._pong_deadline

    async def _check_liveness(self) -> None:
        now = trio.current_time()
        if self._pong is not None:
            if not self._pong.is_set():
                if now >= self._pong_deadline:
                    raise self._too_slow()
                return
            self._pong, self._pong_deadline = None, float("inf")
        if now >= self._ping_due:
            self._pong_deadline = now + self.cfg.ping_timeout
            self._pong = Pong(self._wake_sender)
            try:
                with trio.fail_at(self._pong_deadline):
                    await start_ping(self.ws, self._pong)
            except trio.TooSlowError:
                raise self._too_slow() from None
            self._ping_due = now + self.cfg.ping_interval
