"""Plain TCP for the front door: the accept loop and the connection stream.

trio's own (`serve_listeners`, `SocketListener`, `SocketStream`) go through its
socket wrapper for every call, and every call that succeeds at once still
yields to the scheduler once (the wrapper's "try first, then checkpoint").
On a reconnect storm that is most of what a connection costs us before its
first byte of HTTP is parsed (bench/storm.py; docs/performance.md has the
profile). Here the standard library's non-blocking socket is called directly
and trio is asked to wait (`trio.lowlevel.wait_readable/wait_writable`) only
when the kernel says "not now"; an accepted connection's address comes from
`accept()` itself, not from a `getpeername()` per connection.

What stays the same as trio's `SocketStream`: the socket options (TCP_NODELAY,
TCP_NOTSENT_LOWAT 16 KiB: the outbox's drop policy assumes the kernel holds
little unsent data), the error translation (a closed socket raises
ClosedResourceError, any other socket error BrokenResourceError), and that
every call is a cancellation point. A task reading a peer that keeps data
coming is still made to yield regularly (`YIELD_EVERY`), so it cannot starve
the others. TLS connections wrap a `trio.SocketStream` of the same socket
(`as_trio_stream`): TLS is trio's job.
"""

from __future__ import annotations

import errno
import logging
import socket

import trio

log = logging.getLogger(__name__)

DEFAULT_RECEIVE_SIZE = 65536
#: Reads (or accepts) that succeed at once in a row before a task yields anyway.
YIELD_EVERY = 16
#: Connections accepted in a row before the accepting task yields: a storm's
#: whole backlog, nearly (Linux queues at most 4,096), so every client's hello
#: goes out before anyone's subscribe is answered; ~8 ms of work at most.
ACCEPT_RUN = 1024
#: Accept errors that mean "this process or machine is out of something": wait, then go on.
CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
#: Accept errors about the one connection being accepted (gone before we took it): skip it.
IGNORABLE_ACCEPT_ERRNOS = {errno.ECONNABORTED, errno.EPERM, errno.EPROTO}
CAPACITY_SLEEP = 0.1


def _broken(exc: OSError, sock: socket.socket) -> Exception:
    if sock.fileno() < 0 or exc.errno in (errno.EBADF, errno.ENOTSOCK):
        return trio.ClosedResourceError("this socket was already closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


def _tune(sock: socket.socket) -> None:
    sock.setblocking(False)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hasattr(socket, "TCP_NOTSENT_LOWAT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, 2**14)
    except OSError:
        pass  # a peer gone already; the first read finds out


class TcpStream(trio.abc.HalfCloseableStream):
    """A trio stream over a connected, non-blocking standard-library socket.

    `socket` is public, as on trio.SocketStream (the direct-write path of
    ws.ServerConnection uses its file descriptor); `address` is the peer's
    (host, port, ...) as accept() returned it."""

    __slots__ = ("socket", "address", "_streak", "_sending", "_receiving", "_drained")

    def __init__(self, sock: socket.socket, address):
        _tune(sock)
        self.socket = sock
        self.address = address
        self._streak = 0
        self._sending = False
        self._receiving = False
        # The last read took less than it asked for: the socket is most likely
        # empty now, so the next read waits for readability first instead of
        # asking the kernel and being told "not now" (a system call and an
        # exception, ~2 us each time a peer is waited for: twice per connection).
        self._drained = False

    async def _yield_point(self) -> None:
        # A cancellation point every time; a real yield only every YIELD_EVERY
        # calls that found data waiting (a call that waited has yielded already).
        self._streak += 1
        if self._streak >= YIELD_EVERY:
            self._streak = 0
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._receiving:
            raise trio.BusyResourceError("another task is already reading this stream")
        n = DEFAULT_RECEIVE_SIZE if max_bytes is None else max_bytes
        if n < 1:
            raise ValueError("max_bytes must be >= 1")
        self._receiving = True
        try:
            if self._drained:
                self._streak = 0
                await trio.lowlevel.wait_readable(self.socket)  # a yield, and a cancellation point
            else:
                await self._yield_point()
            data = await self._call(self.socket.recv, trio.lowlevel.wait_readable, n)
            self._drained = 0 < len(data) < n
            return data
        finally:
            self._receiving = False

    async def _call(self, op, wait, arg):
        """`op(arg)` on the non-blocking socket, waiting with `wait` (trio's
        wait_readable/wait_writable) for as long as the kernel says "not now"."""
        while True:
            try:
                return op(arg)
            except BlockingIOError:
                self._streak = 0
                await wait(self.socket)
            except OSError as exc:
                raise _broken(exc, self.socket) from exc

    def receive_nowait(self, max_bytes: int = DEFAULT_RECEIVE_SIZE) -> bytes | None:
        """What the socket holds now, without waiting and without a checkpoint:
        None if nothing has arrived (b"" is the end of the stream). For a caller
        that only needs a timeout when it really has to wait (http.py)."""
        try:
            data = self.socket.recv(max_bytes)
        except BlockingIOError:
            self._drained = True  # so the caller's receive_some waits before asking again
            return None
        except OSError as exc:
            raise _broken(exc, self.socket) from exc
        self._drained = 0 < len(data) < max_bytes
        return data

    async def send_all(self, data) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already writing to this stream")
        send, wait = self.socket.send, trio.lowlevel.wait_writable
        self._sending = True
        try:
            await self._yield_point()
            with memoryview(data) as view:
                sent, total = 0, len(view)
                while sent < total:
                    sent += await self._call(send, wait, view[sent:])
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.wait_writable(self.socket)

    async def send_eof(self) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self.socket.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise _broken(exc, self.socket) from exc
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def aclose(self) -> None:
        sock = self.socket
        if sock.fileno() >= 0:
            # Wakes any task waiting on it with ClosedResourceError, as trio's own close does.
            trio.lowlevel.notify_closing(sock)
            sock.close()
        await trio.lowlevel.checkpoint()


def as_trio_stream(stream: TcpStream) -> trio.SocketStream:
    """The same connection as a trio.SocketStream (for TLS, which is trio's to do)."""
    return trio.SocketStream(trio.socket.from_stdlib_socket(stream.socket))


def detach_listeners(listeners: list[trio.SocketListener]) -> list[socket.socket]:
    """The listening sockets trio.open_tcp_listeners made (its address handling and
    errors are what `serve` reports), as standard-library sockets for `serve_tcp`."""
    out = []
    for lst in listeners:
        sock = socket.socket(fileno=lst.socket.detach())
        sock.setblocking(False)
        out.append(sock)
    return out


async def serve_tcp(handler, socks: list[socket.socket], nursery: trio.Nursery, on_capacity=None) -> None:
    """Accept connections on every socket in `socks` until cancelled, starting
    `handler(TcpStream)` in `nursery` for each. The sockets are closed on the way out.
    `on_capacity(errno_name)`: called each time accept() finds the process or the
    machine out of descriptors or memory (it is logged, and retried after a pause)."""
    try:
        async with trio.open_nursery() as accepting:
            for sock in socks:
                accepting.start_soon(_accept_loop, handler, sock, nursery, on_capacity)
    finally:
        for sock in socks:
            if sock.fileno() >= 0:
                trio.lowlevel.notify_closing(sock)
                sock.close()


async def _accept_loop(handler, lsock: socket.socket, nursery: trio.Nursery, on_capacity) -> None:
    start_soon = nursery.start_soon
    # Named once here: unnamed, trio derives the name from the function for every task.
    name = f"{getattr(handler, '__module__', '')}.{getattr(handler, '__qualname__', repr(handler))}"
    streak = 0
    while True:
        try:
            sock, address = lsock.accept()
        except BlockingIOError:
            streak = 0
            await trio.lowlevel.wait_readable(lsock)
            continue
        except OSError as exc:
            if exc.errno in CAPACITY_ERRNOS:
                if on_capacity is not None:
                    on_capacity(errno.errorcode[exc.errno])
                log.error("accept: %s (%s); trying again in %gs", errno.errorcode[exc.errno], exc.strerror, CAPACITY_SLEEP,
                          extra={"event": "accept_capacity", "errno": errno.errorcode[exc.errno]})
                await trio.sleep(CAPACITY_SLEEP)
                continue
            if exc.errno in IGNORABLE_ACCEPT_ERRNOS:
                continue
            raise
        start_soon(handler, TcpStream(sock, address), name=name)
        streak += 1
        if streak >= ACCEPT_RUN:
            streak = 0
            await trio.lowlevel.checkpoint()
