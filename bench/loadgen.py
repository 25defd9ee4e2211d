"""Load generator: many raw-socket WebSocket clients in one process, one poll loop (epoll, or poll(2) with --busy-poll).

    python -m bench.loadgen --port P --clients N [--stalled K] [--cpu 1] [--busy-poll] [--no-timestamps]

It does the opening handshake, sends one subscribe, and from then on only
counts: it parses frame headers (2-10 bytes) to find frame boundaries, reads the
batch header and two timestamps out of each binary frame, and answers Pings. No
masking of received data, no UTF-8 checks, no message objects: the point is that
the client side costs little next to the server under test.

Receipt times are the kernel's receive timestamps (SO_TIMESTAMPNS on the TCP
socket: the time the last byte returned by this recvmsg reached the socket), not
the time this loop got round to the socket, so a busy load generator does not
inflate latency or spread. The user-space time after epoll returns is kept too
(`app` latency) to show the difference.

With --no-timestamps (the fan-out bench, which reports no latency) no socket
asks for receive timestamps. With SO_TIMESTAMPNS on any socket the kernel stamps
every packet the machine receives, and over loopback that work runs in the
*sender's* system call, charged to the server under test.

With --busy-poll, once every client is connected the data sockets move from
epoll to poll(2) with a zero timeout while data flows. A socket registered with
epoll runs epoll's wake-up callback on every packet it receives, again inside
the sender's send() over loopback; poll(0) leaves no such callback behind.
Together the two cost the sender 1.4 µs per frame here (a bare send() loop over
1,000 sockets, three alternating pairs). A client on another machine pays both
on its own CPU, which is why the bench keeps them off the server's.

Stalled clients (--stalled K of the N) connect with a tiny SO_RCVBUF, subscribe,
then never read again and never answer a Ping.

Commands on stdin (answers are JSON lines on stdout):
    reset      zero the counters and start a measurement window
    report     counters, latencies (base64 float32 arrays) and per-seq first/last receipt
    silence    every healthy client stops reading and answering (a dead peer that never sends FIN)
    quit
"""

from __future__ import annotations

import argparse
import base64
import errno
import os
import select
import socket
import struct
import sys
import time

import numpy as np

from .common import command_lines, emit, pin, raise_nofile, self_stats

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TS = struct.Struct("qq")
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")
_F64 = struct.Struct("<d")
_U32 = struct.Struct("<I")
_U64LE = struct.Struct("<Q")

CONNECTING, HANDSHAKE, OPEN, STALLED, SILENT, CLOSED = range(6)


def masked(payload: bytes, opcode: int) -> bytes:
    """A client frame. The mask is all zeroes: legal (RFC 6455 only asks for a mask) and free."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    else:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    return head + b"\0\0\0\0" + payload


class Conn:
    __slots__ = ("sock", "fd", "state", "buf", "port", "stall", "ready", "live", "hello")

    def __init__(self, sock: socket.socket, stall: bool):
        self.sock = sock
        self.fd = sock.fileno()
        self.state = CONNECTING
        self.buf = b""
        self.port = 0
        self.stall = stall
        self.ready = False
        self.live = False  # got a live (not replayed) batch since connecting (--resume)
        self.hello = False


class _Poll:
    """select.poll with the part of epoll's interface the loop uses (timeout in
    seconds, an unknown fd raises OSError as epoll's does), so the loop can switch
    pollers once connected."""

    def __init__(self):
        self._p = select.poll()

    def register(self, fd: int, mask: int) -> None:
        self._p.register(fd, mask)

    def modify(self, fd: int, mask: int) -> None:
        self._p.modify(fd, mask)

    def unregister(self, fd: int) -> None:
        try:
            self._p.unregister(fd)
        except KeyError:
            raise FileNotFoundError(fd) from None  # what epoll raises; _drop expects it

    def poll(self, timeout: float):
        return self._p.poll(int(timeout * 1000))

    def close(self) -> None:
        pass


class LoadGen:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.ep = select.epoll()
        self.busy_poll = a.busy_poll
        self.conns: dict[int, Conn] = {}
        self.request = (
            f"GET {a.path} HTTP/1.1\r\nHost: 127.0.0.1:{a.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        resume = b""
        if a.resume:  # EPOCH:SEQ, the mass-resume bench (bench/bus.py)
            epoch, _, seq = a.resume.rpartition(":")
            resume = b',"resume":{"%s":{"epoch":"%s","seq":%d}}' % (a.stream.encode(), epoch.encode(), int(seq))
        self.subscribe = masked(b'{"type":"subscribe","ref":1,"streams":["%s"]%s}' % (a.stream.encode(), resume), 1)
        self.started = time.time()
        self.live_times: list[float] = []  # per client: seconds from start to its first live batch
        self.to_open = a.clients
        self.in_flight = 0
        self.ready = 0
        self.failed = 0
        self.closed_by_server: list[tuple[int, float]] = []
        self.silenced_at: float | None = None
        # The storm bench's figures: when connecting began, when the last client got its hello.
        self.t_start = time.time()
        self.hellos = 0
        self.t_last_hello: float | None = None
        self.reset()

    def reset(self) -> None:
        self.t0 = time.time()
        self.cpu0 = self_stats()
        self.frames = 0
        self.text_frames = 0
        self.pings = 0
        self.bytes = 0
        self.lat_last: list[float] = []
        self.lat_first: list[float] = []
        self.lat_app: list[float] = []
        self.spread: dict[int, list] = {}

    # ------------------------------------------------------------------ connecting

    def open_more(self) -> None:
        while self.to_open > 0 and self.in_flight < self.a.parallel:
            self.to_open -= 1
            stall = self.a.clients - self.to_open <= self.a.stalled
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if stall:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.a.stall_rcvbuf)
            elif self.a.timestamps:
                s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(False)
            c = Conn(s, stall)
            err = s.connect_ex(("127.0.0.1", self.a.port))
            if err not in (0, errno.EINPROGRESS):
                s.close()
                self.failed += 1
                continue
            self.conns[c.fd] = c
            self.in_flight += 1
            self.ep.register(c.fd, select.EPOLLOUT)

    def _connected(self, c: Conn) -> None:
        err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._fail(c)
            return
        c.port = c.sock.getsockname()[1]
        c.sock.send(self.request)
        c.state = HANDSHAKE
        self.ep.modify(c.fd, select.EPOLLIN)

    def _fail(self, c: Conn) -> None:
        self.failed += 1
        self.in_flight -= 1
        self._drop(c)

    def _drop(self, c: Conn) -> None:
        try:
            self.ep.unregister(c.fd)
        except (OSError, ValueError):
            pass
        self.conns.pop(c.fd, None)
        c.sock.close()
        c.state = CLOSED

    def _handshake(self, c: Conn, data: bytes) -> None:
        c.buf += data
        end = c.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        if not c.buf.startswith(b"HTTP/1.1 101"):
            self._fail(c)
            return
        c.buf = c.buf[end + 4:]
        c.state = OPEN
        c.sock.send(self.subscribe)
        if c.buf:
            self._frames(c, b"", 0.0, 0.0)

    def _became_ready(self, c: Conn) -> None:
        c.ready = True
        self.ready += 1
        self.in_flight -= 1
        if c.stall:
            c.state = STALLED
            self.ep.unregister(c.fd)

    # ------------------------------------------------------------------ frames

    def _frames(self, c: Conn, data: bytes, t_rx: float, t_app: float) -> None:
        buf = c.buf + data if c.buf else data
        n = len(buf)
        pos = 0
        while n - pos >= 2:
            b0 = buf[pos]
            ln = buf[pos + 1] & 0x7F
            off = pos + 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln = _U16.unpack_from(buf, off)[0]
                off += 2
            elif ln == 127:
                if n - pos < 10:
                    break
                ln = _U64.unpack_from(buf, off)[0]
                off += 8
            end = off + ln
            if end > n:
                break
            op = b0 & 0x0F
            if op == 2:
                self.frames += 1
                if not c.live and not buf[off + 1] & 1:
                    c.live = True
                    self.live_times.append(time.time() - self.started)
                self.bytes += ln
                if t_rx:
                    ns = _U32.unpack_from(buf, off + 8)[0]
                    seq = _U64LE.unpack_from(buf, off + 16)[0]
                    t_first = _F64.unpack_from(buf, off + 24)[0]
                    t_last = _F64.unpack_from(buf, off + 24 + 8 * (ns - 1))[0]
                    self.lat_last.append(t_rx - t_last)
                    self.lat_first.append(t_rx - t_first)
                    self.lat_app.append(t_app - t_last)
                    s = self.spread.get(seq)
                    if s is None:
                        self.spread[seq] = [t_rx, t_rx, 1]
                    else:
                        if t_rx < s[0]:
                            s[0] = t_rx
                        elif t_rx > s[1]:
                            s[1] = t_rx
                        s[2] += 1
            elif op == 1:
                self.text_frames += 1
                if not c.hello:
                    c.hello = True
                    self.hellos += 1
                    self.t_last_hello = time.time()
                if not c.ready and b'"subscribed"' in bytes(buf[off:end]):
                    self._became_ready(c)
                    if c.state == STALLED:
                        c.buf = b""
                        return
            elif op == 9:
                self.pings += 1
                c.sock.send(masked(bytes(buf[off:end]), 0xA))
            elif op == 8:
                c.buf = b""
                self._server_closed(c)
                return
            pos = end
        # A copy: `data` may be a view of the loop's receive buffer, reused by the next read.
        c.buf = bytes(buf[pos:]) if pos < n else b""

    def _server_closed(self, c: Conn) -> None:
        if not c.ready:
            self._fail(c)
            return
        self.closed_by_server.append((c.port, time.time()))
        self._drop(c)

    # ------------------------------------------------------------------ loop

    def run(self) -> None:
        stdin = sys.stdin.fileno()
        os.set_blocking(stdin, False)
        self.ep.register(stdin, select.EPOLLIN)
        cmdbuf = b""
        announced = False
        conns = self.conns
        # One receive buffer for every read. recvmsg(256 KiB) would allocate (and
        # glibc mmap, then munmap) a fresh 256 KiB per call; each munmap flushes TLBs
        # on every core this process's threads have touched, and that IPI lands on
        # the server's core: ~10,000 interruptions a second, charged to the server.
        rbuf = bytearray(1 << 18)
        rview = memoryview(rbuf)
        busy_until = 0.0
        while True:
            self.open_more()
            if not announced and self.to_open == 0 and self.in_flight == 0:
                announced = True
                if self.busy_poll:
                    self._to_poll(stdin)
                emit({"ready": self.ready, "failed": self.failed, "stalled": sum(1 for c in conns.values() if c.stall),
                      "t_start": self.t_start, "hellos": self.hellos, "t_last_hello": self.t_last_hello, "t_ready": time.time()})
            # Busy-polling only while data flows (like the kernel's own busy poll): a load
            # generator whose server is between measurement windows sleeps, and so
            # leaves the core to the one being measured.
            events = self.ep.poll(0 if self.busy_poll and announced and time.time() < busy_until else 0.2 if announced else 0.05)
            t_app = time.time()
            if events:
                busy_until = t_app + 0.1
            for fd, ev in events:
                if fd == stdin:
                    data = os.read(stdin, 65536)
                    if not data:
                        return
                    lines, cmdbuf = command_lines(cmdbuf, data)
                    if any(self.command(line) is False for line in lines):
                        return
                    continue
                c = conns.get(fd)
                if c is None:
                    continue
                st = c.state
                if st == OPEN:
                    try:
                        nbytes, anc, _flags, _addr = c.sock.recvmsg_into((rbuf,), 64)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        self._server_closed(c)
                        continue
                    if not nbytes:
                        self._server_closed(c)
                        continue
                    data = rview[:nbytes]
                    t_rx = t_app if self.a.timestamps else 0.0  # 0: no latency bookkeeping
                    if anc:
                        sec, nsec = _TS.unpack(anc[0][2])
                        t_rx = sec + nsec * 1e-9
                    self._frames(c, data, t_rx, t_app)
                elif st == CONNECTING:
                    self._connected(c)
                elif st == HANDSHAKE:
                    try:
                        data = c.sock.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        self._fail(c)
                        continue
                    if not data:
                        self._fail(c)
                        continue
                    self._handshake(c, data)

    def _to_poll(self, stdin: int) -> None:
        """Move every socket still watched (and stdin) from epoll to poll(2); see the module doc."""
        pl = _Poll()
        pl.register(stdin, select.POLLIN)
        for c in self.conns.values():
            if c.state in (OPEN, HANDSHAKE):
                pl.register(c.fd, select.POLLIN)
        self.ep.close()
        self.ep = pl

    def command(self, cmd: str):
        if cmd == "quit":
            return False
        if cmd == "reset":
            self.reset()
            emit({"ok": True, "t0": self.t0})
        elif cmd == "report":
            now = self_stats()

            def arr(xs):
                return base64.b64encode(np.asarray(xs, dtype=np.float32).tobytes()).decode()

            emit({
                "t0": self.t0, "t1": now["wall"], "frames": self.frames, "bytes": self.bytes, "text_frames": self.text_frames,
                "pings": self.pings, "open": sum(1 for c in self.conns.values() if c.state in (OPEN, STALLED, SILENT)),
                "ready": self.ready, "failed": self.failed, "closed_by_server": self.closed_by_server,
                "cpu": (now["cpu_user"] + now["cpu_sys"]) - (self.cpu0["cpu_user"] + self.cpu0["cpu_sys"]),
                "lat_last": arr(self.lat_last), "lat_first": arr(self.lat_first), "lat_app": arr(self.lat_app),
                "spread": {str(k): v for k, v in self.spread.items()},
                "live_times": self.live_times,
            })
        elif cmd == "silence":
            self.silenced_at = time.time()
            ports = []
            for c in list(self.conns.values()):
                if c.state == OPEN:
                    self.ep.unregister(c.fd)
                    c.state = SILENT
                    ports.append(c.port)
            emit({"silenced_at": self.silenced_at, "ports": ports})
        else:
            emit({"error": f"unknown command {cmd!r}"})
        return True


def decode_array(s: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype=np.float32).astype(np.float64)


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--stalled", type=int, default=0, help="how many of the clients stall after subscribing")
    p.add_argument("--stall-rcvbuf", type=int, default=4096)
    p.add_argument("--parallel", type=int, default=128, help="handshakes in flight at once")
    p.add_argument("--path", default="/ws")
    p.add_argument("--stream", default="bench/s")
    p.add_argument("--cpu", type=int, default=None)
    p.add_argument("--resume", default=None, metavar="EPOCH:SEQ", help="subscribe with this resume point (mass-resume bench)")
    p.add_argument("--busy-poll", action="store_true",
                   help="once connected, poll without sleeping while data flows: the server's sends then never pay for waking this process")
    p.add_argument("--no-timestamps", dest="timestamps", action="store_false",
                   help="no kernel receive timestamps and no latency records (see the module doc)")
    a = p.parse_args(argv)
    pin(a.cpu)
    raise_nofile()
    LoadGen(a).run()


if __name__ == "__main__":
    main()
