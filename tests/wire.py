"""A second, independent implementation of the client side of the wire contract.

It deliberately does not import sensorstream.protocol: it is written from
docs/protocol.md, so a test that passes with it checks the server against the
document, not against the server's own codec.
"""

from __future__ import annotations

import base64
import json
import os
import struct

import numpy as np
import trio
import trio_websocket

HEADER = struct.Struct("<BBHIIIQ")


def decode(buf: bytes) -> dict:
    kind, flags, c, key, n, reserved, seq = HEADER.unpack_from(buf, 0)
    assert kind == 1 and reserved == 0
    assert len(buf) == 24 + 8 * n + 4 * c * n
    ts = np.frombuffer(buf, "<f8", n, 24)
    vals = np.frombuffer(buf, "<f4", c * n, 24 + 8 * n).reshape(c, n)
    return {"key": key, "seq": seq, "flags": flags, "t": ts, "values": vals}


class WireClient:
    def __init__(self, ws: trio_websocket.WebSocketConnection):
        self.ws = ws
        self.hello: dict | None = None

    async def send(self, obj) -> None:
        await self.ws.send_message(obj if isinstance(obj, str) else json.dumps(obj))

    async def recv(self):
        """('text', dict) or ('batch', dict)."""
        m = await self.ws.get_message()
        if isinstance(m, bytes):
            return "batch", decode(m)
        return "text", json.loads(m)

    async def recv_text(self, type_: str | None = None) -> dict:
        while True:
            kind, m = await self.recv()
            if kind == "text" and (type_ is None or m["type"] == type_):
                return m

    async def recv_batch(self) -> dict:
        while True:
            kind, m = await self.recv()
            if kind == "batch":
                return m


async def connect(nursery, port: int, path: str = "/ws") -> WireClient:
    ws = await trio_websocket.connect_websocket(nursery, "127.0.0.1", port, path, use_ssl=False)
    c = WireClient(ws)
    c.hello = await c.recv_text("hello")
    return c


# ---------------------------------------------------------------- raw sockets, for misbehaving peers


def masked_frame(payload: bytes, opcode: int = 1, fin: bool = True) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        head = struct.pack("!BB", b0, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def upgrade_request(port: int, path: str = "/ws", extra: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").encode()


async def raw_handshake(port: int, *, rcvbuf: int | None = None, path: str = "/ws") -> tuple[trio.SocketStream, bytes]:
    """A TCP connection that completes the WebSocket handshake; returns the stream and any bytes after the 101 head."""
    sock = trio.socket.socket()
    if rcvbuf:
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, rcvbuf)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    await stream.send_all(upgrade_request(port, path))
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(4096)
        assert data, "server closed during handshake"
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return stream, rest


async def http_get(port: int, raw: bytes) -> bytes:
    """Send raw bytes, read the reply until the server closes or a full response with content-length arrives."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(raw)
        buf = b""
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return buf
            buf += data
            head, sep, body = buf.partition(b"\r\n\r\n")
            if sep:
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length" and len(body) >= int(v):
                        return buf


class FrameReader:
    """Parses server -> client frames (unmasked) from a raw stream, for tests that read slowly on purpose."""

    def __init__(self, stream, initial: bytes = b""):
        self.stream = stream
        self.buf = bytearray(initial)

    async def _fill(self, n: int) -> None:
        while len(self.buf) < n:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError("server closed the connection")
            self.buf += data

    async def next(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next complete frame."""
        await self._fill(2)
        b0, b1 = self.buf[0], self.buf[1]
        n, off = b1 & 0x7F, 2
        if n == 126:
            await self._fill(4)
            n, off = struct.unpack_from("!H", self.buf, 2)[0], 4
        elif n == 127:
            await self._fill(10)
            n, off = struct.unpack_from("!Q", self.buf, 2)[0], 10
        await self._fill(off + n)
        payload = bytes(self.buf[off:off + n])
        del self.buf[:off + n]
        return b0 & 0x0F, payload

    async def message(self):
        """('text', dict) or ('batch', dict), answering nothing (pings are left unanswered)."""
        while True:
            op, payload = await self.next()
            if op == 1:
                return "text", json.loads(payload)
            if op == 2:
                return "batch", decode(payload)


async def stalled_and_healthy(nursery, port: int, stream: str):
    """Two subscribers of `stream`: a raw client with a tiny receive buffer that
    never reads again, and a healthy client (subscribed and confirmed)."""
    stalled, _ = await raw_handshake(port, rcvbuf=4096)
    await stalled.send_all(masked_frame(json.dumps({"type": "subscribe", "streams": [stream]}).encode()))
    healthy = await connect(nursery, port)
    await healthy.send({"type": "subscribe", "streams": [stream]})
    await healthy.recv_text("subscribed")
    return stalled, healthy
