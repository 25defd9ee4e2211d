"""A server in a background thread, for tests driven by Hypothesis (which runs
plain synchronous test functions) over blocking sockets.

One server serves every example of a test, and a watcher client inside the
server's own trio run follows a live stream all the while: any seq gap or
`dropped` notice it sees means a bad client cost someone else data.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading

import trio
import trio_websocket

from sensorstream.config import ServerConfig
from sensorstream.server.app import Server

from .wire import decode, upgrade_request


class ServerThread:
    def __init__(self, watch: str | None = "sim/imu", **overrides):
        overrides.setdefault("port", 0)
        overrides.setdefault("host", "127.0.0.1")
        self.cfg = ServerConfig(**overrides)
        self.watch = watch
        self.server: Server | None = None
        self.watch_batches = 0
        self.watch_problems: list[str] = []
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._cancel: trio.CancelScope | None = None
        self._token = None

    @property
    def port(self) -> int:
        return self.server.port

    def __enter__(self) -> "ServerThread":
        self.thread = threading.Thread(target=self._thread, name="sensorstream-test-server", daemon=True)
        self.thread.start()
        assert self._ready.wait(20), "server thread did not start"
        if self._failed:
            raise self._failed
        return self

    def __exit__(self, *exc) -> None:
        trio.from_thread.run_sync(self._cancel.cancel, trio_token=self._token)
        self.thread.join(20)
        assert not self.thread.is_alive()
        if self._failed:
            raise self._failed

    def run_sync(self, fn, *args):
        """fn(*args) inside the server's trio run (the hub belongs to that thread)."""
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def _thread(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as e:  # surfaced in the test thread
            self._failed = e
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self.server = Server(self.cfg)
        async with trio.open_nursery() as nursery:
            self._cancel = nursery.cancel_scope
            await nursery.start(self.server.run)
            if self.watch:
                await nursery.start(self._watcher)
            self._ready.set()

    async def _watcher(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio_websocket.open_websocket("127.0.0.1", self.port, "/ws", use_ssl=False) as ws:
            await ws.get_message()  # hello
            await ws.send_message(json.dumps({"type": "subscribe", "streams": [self.watch]}))
            last = None
            started = False
            while True:
                m = await ws.get_message()
                if isinstance(m, str):
                    msg = json.loads(m)
                    if msg["type"] == "subscribed" and not started:
                        started = True
                        task_status.started()
                    elif msg["type"] in ("dropped", "error"):
                        self.watch_problems.append(m)
                    continue
                seq = decode(m)["seq"]
                if last is not None and seq != last + 1:
                    self.watch_problems.append(f"seq gap {last} -> {seq}")
                last = seq
                self.watch_batches += 1

    def check_healthy(self) -> None:
        """The server still answers, and the watcher saw no loss."""
        assert self.thread.is_alive() and self._failed is None
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                buf = b""
                while chunk := s.recv(65536):
                    buf += chunk
            # A server run with a very short handshake timeout (the fuzz tests) may
            # answer 408 if this thread got no CPU for that long, or close at once
            # if its deadline fired before it read a byte: ask again.
            if buf and not buf.startswith(b"HTTP/1.1 408"):
                break
        assert buf.startswith(b"HTTP/1.1 200"), buf[:100]
        assert not self.watch_problems, self.watch_problems[:5]


# ----------------------------------------------------------------- a blocking WebSocket client for raw frames


class Closed(Exception):
    def __init__(self, code: int | None):
        super().__init__(code)
        self.code = code


def client_frame(payload: bytes, opcode: int = 1, fin: bool = True, rsv: int = 0, mask: bool = True) -> bytes:
    """A client frame, with every bit settable (so tests can break the rules)."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    m = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, m | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, m | 126, n)
    else:
        head = struct.pack("!BBQ", b0, m | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    k = (key * (n // 4 + 1))[:n]
    return head + key + (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big") if n else head + key


class SyncClient:
    def __init__(self, port: int, timeout: float = 5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.sendall(upgrade_request(port))
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(4096)
            assert chunk, "closed during handshake"
            buf += chunk
        head, _, self.buf = buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        self.hello = json.loads(self.recv_frame()[1])
        assert self.hello["type"] == "hello"

    def _need(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Closed(None)
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self) -> tuple[int, bytes]:
        b0, b1 = self._need(2)
        assert not b1 & 0x80, "server frames are not masked"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._need(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._need(8))[0]
        payload = self._need(n)
        opcode = b0 & 0x0F
        assert b0 & 0x80, "server frames are not fragmented"
        if opcode == 8:
            raise Closed(struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None)
        return opcode, payload

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def until_pong(self, ref: str) -> tuple[list[dict], list[bytes]]:
        """Text replies (JSON) and WebSocket pongs received until our `ping` with `ref` is answered."""
        texts, pongs = [], []
        while True:
            op, payload = self.recv_frame()
            if op == 1:
                m = json.loads(payload)
                if m.get("type") == "pong" and m.get("ref") == ref:
                    return texts, pongs
                texts.append(m)
            elif op == 10:
                pongs.append(payload)

    def close(self) -> None:
        try:
            self.sock.sendall(client_frame(struct.pack("!H", 1000), opcode=8))
        except OSError:
            pass
        self.sock.close()
