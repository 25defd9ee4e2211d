"""The floor as a server: a process that does nothing but the writes.

    python -m bench.baseline_bare --cpu 0 [--window S]

What a fan-out of one stream cannot go below: a process that wakes on the same
clock grid as the server under test (one batch every 1/rate s), encodes the
batch and frames it once, and writes that frame to every subscribed socket with
a bare `os.write` in a loop, and then sleeps until the next batch. No per-client
state, no queues, no counters per client, no keepalive (it sends no Ping, reads
nothing once a client has subscribed but its EOF). Its sockets get the same
options as sensorstream's (TCP_NODELAY, TCP_NOTSENT_LOWAT).

It is measured as the servers are (bench/fanout.py): its whole process's CPU
time (getrusage) over a window, per frame written. So it pays what any server
delivering at that cadence pays besides the writes: waking up, which a
`send()` loop run back to back never does (on this VM 60-740 µs of CPU per
wake-up of an otherwise idle process, in epoll or trio alike: bench/wakeups.py).

It speaks just enough of the protocol for bench.loadgen: a canned 101 with the
right Sec-WebSocket-Accept, a hello, a `subscribed` reply to the subscribe.
Same stdin commands as bench.server_proc (publish R, stats, closes, quit).
"""

from __future__ import annotations

import argparse
import errno
import gc
import json
import math
import os
import select
import socket
import sys
import time

from wsproto.utilities import generate_accept_token

from sensorstream.protocol import encode_batch
from sensorstream.server.ws import ws_binary_frame, ws_text_frame

from .common import SyntheticBatches, command_lines, emit, pin, raise_nofile, self_stats, write_all

HELLO = ws_text_frame(json.dumps({"type": "hello", "protocol": 1, "server": "bare-floor", "session": "x",
                                  "heartbeat_s": 2.0, "streams": [{"key": 1, "id": "bench/s"}]}))
SUBSCRIBED = ws_text_frame(json.dumps({"type": "subscribed", "ref": 1, "keys": [1]}))
HANDSHAKE, OPEN, SUBSCRIBED_STATE = range(3)


def accept_key(request: bytes) -> bytes | None:
    """The Sec-WebSocket-Accept for a request head (None: it has no key)."""
    for line in request.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            return generate_accept_token(value.strip())
    return None


class Bare:
    def __init__(self, a: argparse.Namespace):
        self.batches = SyntheticBatches(a.window)
        self.ep = select.epoll()
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(4096)
        self.lsock.setblocking(False)
        self.ep.register(self.lsock.fileno(), select.EPOLLIN)
        self.conns: dict[int, list] = {}  # fd -> [socket, state, buffer]
        self.fds: list[int] = []  # subscribed sockets: what a publish writes to
        self.closes: list = []
        self.rate = 0.0
        self.k = 0
        self.seq = 0
        self.published = 0
        self.frames_sent = 0
        self.writes = 0

    # ---- connections

    def _accept(self) -> None:
        while True:
            try:
                s, _ = self.lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE):
                    return
                raise
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if hasattr(socket, "TCP_NOTSENT_LOWAT"):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, 2**14)
            self.conns[s.fileno()] = [s, HANDSHAKE, b""]
            self.ep.register(s.fileno(), select.EPOLLIN)

    def _drop(self, fd: int) -> None:
        c = self.conns.pop(fd, None)
        if c is None:
            return
        if c[1] == SUBSCRIBED_STATE:
            self.fds.remove(fd)  # before the close, so a reused number is never written to
        try:
            self.ep.unregister(fd)
        except OSError:
            pass
        port = -1
        try:
            port = c[0].getpeername()[1]
        except OSError:
            pass
        c[0].close()
        self.closes.append((port, time.time(), "closed by client"))

    def _readable(self, fd: int) -> None:
        c = self.conns.get(fd)
        if c is None:
            return
        try:
            data = c[0].recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(fd)
            return
        if c[1] == HANDSHAKE:
            c[2] += data
            if b"\r\n\r\n" not in c[2]:
                return
            key = accept_key(c[2])
            if key is None:
                self._drop(fd)
                return
            c[0].send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      b"Sec-WebSocket-Accept: " + key + b"\r\n\r\n" + HELLO)
            c[1], c[2] = OPEN, b""
        elif c[1] == OPEN:
            # The load generator's one message: its subscribe (zero mask, so readable as is).
            c[2] += data
            if b"subscribe" in c[2]:
                c[0].send(SUBSCRIBED)
                c[1], c[2] = SUBSCRIBED_STATE, b""
                self.fds.append(fd)
        # Subscribed: whatever else arrives is read and dropped.

    # ---- the writes

    def _publish(self) -> None:
        ts, vals = self.batches.make()
        wire = ws_binary_frame(encode_batch(1, self.seq, ts, vals))
        self.seq += 1
        self.published += 1
        self.frames_sent += write_all(self.fds, wire)
        self.writes += len(self.fds)

    # ---- commands

    def _command(self, line: str) -> bool:
        words = line.split()
        if not words:
            return True
        cmd = words[0]
        if cmd == "quit":
            return False
        if cmd == "publish":
            self.rate = float(words[1])
            if self.rate > 0:
                self.k = math.floor(time.monotonic() * self.rate) + 1
            emit({"ok": True})
        elif cmd == "stats":
            if len(words) > 1 and words[1] == "gc":
                gc.collect()
            emit({**self_stats(), "kernel_sendq": 0, "user_queued_bytes": 0, "frames_sent": self.frames_sent,
                  "published": self.published, "connections": len(self.conns), "dropped": 0, "ping_timeouts": None,
                  "closes": len(self.closes), "writes": self.writes})
        elif cmd == "closes":
            emit({"closes": self.closes})
        else:
            emit({"error": f"unknown command {cmd!r}"})
        return True

    def run(self) -> None:
        stdin = sys.stdin.fileno()
        os.set_blocking(stdin, False)
        self.ep.register(stdin, select.EPOLLIN)
        lfd = self.lsock.fileno()
        cmdbuf = b""
        emit({"port": self.lsock.getsockname()[1], "pid": os.getpid(), "impl": "bare", "started": time.time()})
        while True:
            if self.rate > 0:
                due = self.k / self.rate
                now = time.monotonic()
                if now >= due:
                    if now - due > 1.0:  # hopelessly behind: do not burst to catch up
                        self.k = math.floor(now * self.rate) + 1
                        continue
                    self._publish()
                    self.k += 1
                    continue
                timeout = due - now
            else:
                timeout = -1
            for fd, _ev in self.ep.poll(timeout):
                if fd == lfd:
                    self._accept()
                elif fd == stdin:
                    data = os.read(stdin, 65536)
                    if not data:
                        return
                    lines, cmdbuf = command_lines(cmdbuf, data)
                    if not all(self._command(line) for line in lines):
                        return
                else:
                    self._readable(fd)


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cpu", type=int, default=None)
    p.add_argument("--window", type=float, default=0.05)
    # Accepted for the harness's sake (it passes the same flags to every server); the floor has no keepalive.
    p.add_argument("--ping-interval", type=float, default=5.0)
    p.add_argument("--ping-timeout", type=float, default=10.0)
    p.add_argument("--streams", type=int, default=1)
    a = p.parse_args(argv)
    if a.streams != 1:
        p.error("the floor server publishes one stream")
    pin(a.cpu)
    raise_nofile()
    Bare(a).run()
    sys.stdout.flush()
    os._exit(0)  # no graceful close of thousands of bench connections


if __name__ == "__main__":
    main()
