"""Our server side of one WebSocket: a trio stream and wsproto's public API, nothing else.

wsproto (`wsproto.connection.Connection`, the engine past the handshake) parses
what the client sends and keeps the protocol state; this class does the I/O
around it: the reading loop, the write lock, the ping/pong table and the close
handshake. Outgoing data frames are framed by frames.py, once for every client.

Usable on its own, by any server that has done the opening handshake (see
handshake.py and http.py's upgrade callback), e.g. an echo server:

    conn = ServerConnection(stream, trailing=upgrade.trailing, preface=upgrade.response,
                            max_message_bytes=1 << 20)
    async for message in conn:          # str (text) or bytes (binary), whole messages
        if isinstance(message, str):
            await conn.send_text(message)
        else:
            await conn.send_bytes(message)
    # the loop ends once the connection is closed; conn.closed says how

- `preface`: the handshake's 101 response, not yet written. It goes out with
  the first write (`start(first_frames)` writes both with one system call; any
  other write or `receive()` writes it first if nobody has).
- `receive()` returns the next whole message and answers Pings and the peer's
  close on the way. It raises `ConnectionClosed` once the connection is closed:
  by the peer (its close frame is answered with the same code, RFC 6455 5.5.1),
  by the TCP connection ending (1006), or by us failing the connection: invalid
  UTF-8 in a text message (1007), a protocol violation wsproto detects -
  reserved bits, unknown opcodes, fragmented or oversized control frames, bad
  close codes - (1002), or a message over `max_message_bytes` (1009). On a
  failure our close frame goes out before `receive()` raises.
- `send_text`, `send_bytes` and `send_all` (bytes already framed) take the write
  lock, so frames never interleave; `ping` sends a Ping whose Pong sets a `Pong`.
- `aclose(code, reason)` runs the close handshake: our close frame, then what
  the peer sends is read (and dropped) until its close frame. The stream itself
  is its owner's to close, after that.
- No write ever follows our own close frame.

For the fan-out there is a faster path: `send_now` writes bytes straight to
the socket, synchronously, when the lock is free (plain TCP only; see below).

Only one task may call `receive()` (or iterate) at a time; any number may write.
"""

from __future__ import annotations

import os

import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from ..tcp import TcpStream
from .frames import ws_binary_frame, ws_ping_frame, ws_text_frame

#: Bytes asked of the stream per read.
RECEIVE_SIZE = 65536
#: How long a close frame may wait for the write lock when we fail the connection.
FAIL_WRITE_TIMEOUT = 1.0

_OPEN, _REMOTE_CLOSING, _LOCAL_CLOSING = ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING, ConnectionState.LOCAL_CLOSING


class ConnectionClosed(Exception):
    """The WebSocket is closed. `by_peer`: the client closed it (or the TCP
    connection ended: 1006); otherwise we failed it for a protocol violation
    (1002), invalid UTF-8 (1007) or a message too big (1009), or closed it ourselves."""

    def __init__(self, code: int, reason: str = "", by_peer: bool = True):
        super().__init__(code, reason)
        self.code = int(code)
        self.reason = reason
        self.by_peer = by_peer


class ServerConnection:
    """The server side of one WebSocket connection (see the module docstring).

    The write lock is this object itself (`async with conn:`): FIFO, handed
    over from one holder to the next so nothing slips in between, a cancelled
    waiter skipped. Its state is kept in two plain slots so that the fan-out's
    check is one attribute read: `free` (nobody holds it) and `ok` (free, our
    close frame not sent, and direct writes possible). With thousands of
    clients every extra object touched per write is a cache miss.

    Direct writes (`send_now`): on a plain `trio.SocketStream`, bytes go to the
    socket with one `os.write` on its file descriptor (`socket.fileno()`, public
    on trio's socket; -1 once closed, so a closed connection's number, perhaps
    reused by a new one, is never written to). No task, no wake-up, no trip
    through trio's scheduler. A write the kernel cuts short leaves the rest in
    `partial` and the lock held: nobody else writes until `flush()` (awaited by
    whoever owns the connection's sender) has written the rest. Behind TLS (or
    over the memory streams of tests) `direct` is False and every write takes
    the lock and the stream's `send_all`.

    `idle` is the gate of the owner's sender task: direct writes (`write`) go out
    only while it is True, so a direct write never overtakes queued bytes.
    """

    __slots__ = ("stream", "proto", "sock", "max_message_bytes", "idle", "ok", "free", "partial", "partial_frames",
                 "last_write", "closed", "_close_sent", "_preface", "_now", "_lot", "_ping_payload", "_pong", "_parts", "_size",
                 "_events", "__weakref__")

    def __init__(self, stream: trio.abc.Stream, *, trailing: bytes = b"", preface: bytes = b"", max_message_bytes: int = 1 << 20):
        self.stream = stream
        # Bytes the HTTP front door read past the upgrade request are the first frames.
        self.proto = Connection(ConnectionType.SERVER, trailing_data=trailing)
        self.sock = stream.socket if isinstance(stream, (TcpStream, trio.SocketStream)) else None
        self.max_message_bytes = max_message_bytes
        self.idle = True
        self.free = True
        self._close_sent = False
        self._preface = preface
        # No direct write before the preface: `start` (or the first write) sends it.
        self.ok = self.sock is not None and not preface
        self.partial: memoryview | None = None  # rest of a frame a direct write cut short
        self.partial_frames = 0  # how many frames that write completes
        self._now = trio.lowlevel.current_clock().current_time
        self.last_write = self._now()
        self.closed: ConnectionClosed | None = None  # how it ended, once it has
        self._lot = trio.lowlevel.ParkingLot()  # tasks waiting for the lock, in order
        self._ping_payload: bytes | None = None  # the one outstanding Ping of ours...
        self._pong = None  # ...and what its Pong sets
        self._parts: list | None = None  # a message arriving in pieces
        self._size = 0
        self._events = None  # wsproto's event generator, while it has more

    @property
    def direct(self) -> bool:
        """Direct writes are possible on this connection (plain TCP)."""
        return self.sock is not None

    # ---- the write lock

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
        self.ok = self.sock is not None and not self._close_sent and not self._preface

    @property
    def waiting(self) -> int:
        """Tasks waiting for the lock."""
        return len(self._lot)

    # ---- writes

    def write(self, data: bytes) -> int:
        """A direct write, if the owner's sender is not running (`idle`): see `send_now`."""
        if not self.idle:
            return 0
        return self.send_now(data)

    def send_now(self, data: bytes, frames: int = 1, now: float | None = None) -> int:
        """Write without waiting if the lock is free: bytes written (0: none; the
        caller queues them). Fewer than len(data): the rest is in `partial` and the
        lock is held until `flush()`. `now`: the clock, if the caller has read it."""
        # Once per client per frame: no call here that the common case can do without.
        if not self.ok:
            return 0
        fd = self.sock.fileno()  # -1 once closed: a reused number is never written to
        if fd < 0:
            return 0
        try:
            n = os.write(fd, data)
        except OSError:  # BlockingIOError, or a dead peer (the reader finds out)
            return 0
        if n < len(data):
            return self._wrote(n, len(data), data, frames, now)
        self.last_write = self._now() if now is None else now
        return n

    def send_now_many(self, parts: list[bytes], now: float | None = None) -> int:
        """`send_now` of several frames with one system call (writev): bytes written."""
        fd = self._fd()
        if fd < 0:
            return 0
        try:
            n = os.writev(fd, parts)
        except OSError:
            return 0
        return self._wrote(n, sum(map(len, parts)), parts, len(parts), now)

    def _fd(self) -> int:
        """The socket's file descriptor if a direct write may go out now, else -1."""
        return self.sock.fileno() if self.ok else -1

    def _wrote(self, n: int, size: int, data: bytes | list[bytes], frames: int, now: float | None) -> int:
        if n < size:
            # Part of a frame is on the wire: hold the lock until flush() writes the rest.
            self._take()
            self.partial = memoryview(data if type(data) is bytes else b"".join(data))[n:]
            self.partial_frames = frames
            self.idle = False
        self.last_write = self._now() if now is None else now
        return n

    async def flush(self) -> int:
        """Write the rest of a cut-short direct write, then release the lock. Returns its size.
        Raises trio.BrokenResourceError / ClosedResourceError (half a frame is then on the wire)."""
        rest = self.partial
        await self.stream.send_all(rest)
        # Cleared only once written: if this fails, the owner sees a cut-off frame and aborts.
        self.partial = None
        self.release()
        self.last_write = self._now()
        return len(rest)

    async def start(self, first: bytes = b"") -> None:
        """Write the preface (the 101) and `first` (complete frames, e.g. a greeting)
        together: one system call when the socket takes it all, as it nearly always
        does on a new connection."""
        data = self._preface + first
        if not data:
            return
        if self.sock is not None and self.free and not self._close_sent:
            fd = self.sock.fileno()
            try:
                n = os.write(fd, data) if fd >= 0 else 0
            except OSError:
                n = 0
            self.last_write = self._now()
            if n == len(data):
                self._preface = b""
                self.ok = True
                return
            data = data[n:]
        # The rest goes first, whoever writes next; this waits for it.
        self._preface = data
        await self.send_all(b"")

    async def send_all(self, data: bytes) -> None:
        """Write bytes that hold complete frames, in turn with every other write."""
        async with self:
            if self._close_sent:
                raise self.closed or ConnectionClosed(1006, "closing", by_peer=False)
            if self._preface:
                data, self._preface = self._preface + data, b""
            if not data:
                return
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise ConnectionClosed(1006, "connection lost") from None
        self.last_write = self._now()

    async def send_text(self, text: str) -> None:
        await self.send_all(ws_text_frame(text))

    async def send_bytes(self, data: bytes) -> None:
        await self.send_all(ws_binary_frame(data))

    def expect_pong(self, payload: bytes, pong) -> None:
        """We wrote a Ping with `payload` (pre-framed): its Pong calls `pong.set()`.
        One outstanding Ping at a time; a newer one replaces it."""
        self._ping_payload, self._pong = payload, pong

    async def ping(self, payload: bytes, pong) -> None:
        """Send a Ping; `pong.set()` is called when its Pong arrives (nobody waits for it here)."""
        self.expect_pong(payload, pong)
        await self.send_all(ws_ping_frame(payload))

    async def _send_close(self, event: CloseConnection) -> None:
        """Our close frame: after it, nothing is written. Waits for the lock (a
        half-written frame is finished first)."""
        data = self.proto.send(event)
        async with self:
            if self._close_sent:
                return
            self._close_sent = True
            data, self._preface = self._preface + data, b""
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    # ---- reading

    def __aiter__(self) -> "ServerConnection":
        return self

    async def __anext__(self) -> str | bytes:
        try:
            return await self.receive()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    async def receive(self) -> str | bytes:
        """The next whole message: str (text) or bytes (binary). See the module docstring."""
        proto = self.proto
        if self._preface:
            await self.send_all(b"")  # the client waits for our 101 before it sends anything
        while True:
            if self.closed is not None:
                raise self.closed
            if self._events is None:
                self._events = proto.events()
            for ev in self._events:
                t = type(ev)
                if t is TextMessage or t is BytesMessage:
                    msg = await self._piece(ev)
                    if msg is not None:
                        return msg
                elif t is Ping:
                    if proto.state is _OPEN:
                        await self.send_all(proto.send(ev.response()))
                elif t is Pong:
                    if ev.payload == self._ping_payload and self._pong is not None:
                        self._pong.set()
                        self._ping_payload = self._pong = None
                elif t is CloseConnection:
                    await self._close_received(ev)
            self._events = None
            try:
                data = await self.stream.receive_some(RECEIVE_SIZE)
            except trio.BrokenResourceError:
                data = b""
            except trio.ClosedResourceError:
                self.closed = ConnectionClosed(1006, "stream closed")
                raise self.closed from None
            # b"" is the end of the stream: wsproto turns None into a 1006 close.
            proto.receive_data(data or None)

    async def _piece(self, ev: TextMessage | BytesMessage) -> str | bytes | None:
        data = ev.data
        size = self._size + (len(data) if type(data) is not str else len(data.encode()))
        if size > self.max_message_bytes:
            await self._fail(1009, f"message over {self.max_message_bytes} bytes")
        if ev.message_finished and self._parts is None:
            self._size = 0
            return data
        if self._parts is None:
            self._parts = []
        self._parts.append(data)
        self._size = size
        if not ev.message_finished:
            return None
        parts, self._parts, self._size = self._parts, None, 0
        return "".join(parts) if type(data) is str else b"".join(parts)

    async def _close_received(self, ev: CloseConnection) -> None:
        state = self.proto.state
        if state is _OPEN:
            # Not the peer's: wsproto reports a protocol violation it found as a
            # close event, and leaves the connection open. We fail it.
            await self._fail(ev.code, ev.reason or "protocol error")
        if state is _REMOTE_CLOSING and not self._close_sent:
            # The peer's close: answered with the same code (RFC 6455 5.5.1).
            with trio.move_on_after(FAIL_WRITE_TIMEOUT):
                await self._send_close(ev.response())
        # Otherwise: the answer to our own close, or the stream ended (1006).
        if self.closed is None:
            self.closed = ConnectionClosed(ev.code, ev.reason or "")
        raise self.closed

    async def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 7.1.7): our close frame with `code`, then done."""
        self.closed = ConnectionClosed(code, reason, by_peer=False)
        if not self._close_sent and self.proto.state is _OPEN:
            with trio.move_on_after(FAIL_WRITE_TIMEOUT):
                await self._send_close(CloseConnection(code, reason[:120]))
        raise self.closed

    async def linger(self) -> None:
        """After we failed the connection: end our side of the TCP stream (FIN) and
        read and drop what the peer still sends, until it closes. Closing the socket
        at once, with the peer's bytes unread, makes the kernel send a reset, which
        can reach the peer before our close frame and lose it (the client would see
        "connection reset", not 1009). Bound it with a timeout."""
        send_eof = getattr(self.stream, "send_eof", None)  # TLS streams have none: not needed there
        if send_eof is None:
            return
        try:
            await send_eof()
            while await self.stream.receive_some(RECEIVE_SIZE):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """The close handshake: our close frame, then read until the peer's.
        Bound it with a timeout: a peer may never answer. The stream stays open."""
        if self.closed is not None:
            return
        if not self._close_sent and self.proto.state in (_OPEN, _REMOTE_CLOSING):
            await self._send_close(CloseConnection(code, reason))
        ours = ConnectionClosed(code, reason, by_peer=False)
        try:
            while self.proto.state is _LOCAL_CLOSING and self.closed is None:
                await self.receive()  # what the peer sent before its close frame is dropped
        except ConnectionClosed:
            pass
        finally:
            self.closed = ours
