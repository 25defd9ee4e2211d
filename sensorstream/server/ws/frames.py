"""RFC 6455 framing of what the server sends, done once per message for every client.

A server-to-client frame is not masked, so the same bytes are valid on every
connection: each batch is framed once (`Framer`) and those bytes are written to
every subscriber. Incoming frames are wsproto's to parse (see connection.py).
"""

from __future__ import annotations

import struct

import trio

from ...hub import Frame

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """One complete frame: FIN + `opcode`, unmasked (server -> client)."""
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
    return ws_frame(OP_BINARY, payload)


def ws_text_frame(text: str) -> bytes:
    return ws_frame(OP_TEXT, text.encode())


def ws_ping_frame(payload: bytes) -> bytes:
    if len(payload) > 125:
        raise ValueError("control frames carry at most 125 bytes (RFC 6455 5.5)")
    return ws_frame(OP_PING, payload)


class Framed:
    """A hub batch as its WebSocket frame, shared by every client it goes to.

    `size` is the batch's payload size (what the per-client byte cap counts);
    `at` is the server clock when it was framed: the writes of one fan-out all
    happen within the publish that framed it, so they share that time instead
    of reading the clock once per client."""

    __slots__ = ("key", "wire", "size", "at")

    def __init__(self, key: int, wire: bytes, size: int, at: float):
        self.key = key
        self.wire = wire
        self.size = size
        self.at = at


class Framer:
    """Frames each hub batch once, however many clients it goes to.

    The hub hands the same `Frame` to every subscriber, one after the other,
    within one publish: remembering the last frame framed is enough to frame it
    once. (A cache keyed on every frame would hold them; the hub's history
    holds only payloads, so it costs what its byte cap says.)"""

    __slots__ = ("_frame", "_framed", "_text", "_text_wire")

    def __init__(self):
        self._frame: Frame | None = None
        self._framed: Framed | None = None
        self._text: str | None = None
        self._text_wire = b""

    def of(self, frame: Frame) -> Framed:
        if frame is self._frame:
            return self._framed  # type: ignore[return-value]
        p = frame.payload
        framed = Framed(frame.key, ws_binary_frame(p), len(p), trio.current_time())
        self._frame, self._framed = frame, framed
        return framed

    def text(self, text: str) -> bytes:
        """`text` as a text frame. The hub hands a notice (a catalog change, an
        alert) to every client in turn, the same str each time: framed once."""
        if text is not self._text:
            self._text, self._text_wire = text, ws_text_frame(text)
        return self._text_wire
