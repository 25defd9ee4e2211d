"""The opening handshake (RFC 6455 4.2), on the request the HTTP front door already parsed.

Pure: request headers in, the 101's headers out (or why not). h11 has parsed the
request once; this only checks the few headers the upgrade needs and computes
the accept token with wsproto's public helper. (wsproto's own server handshake,
`WSConnection.initiate_upgrade_connection`, serialises the parsed request back
to bytes and parses it again with a second h11 connection: twice the work per
handshake, and an h11 connection kept for the WebSocket's whole life.)
"""

from __future__ import annotations

import base64
import binascii

from wsproto.utilities import generate_accept_token


class HandshakeError(Exception):
    """The upgrade cannot be accepted: answer `status` with `message` (and `headers`)."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def _tokens(value: bytes) -> set[bytes]:
    return {t.strip().lower() for t in value.split(b",")}


def accept_headers(method: bytes, headers: dict[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    """The 101 response's headers for an upgrade request with `headers` (lower-cased
    names, as `security.headers_of` gives them). No extension and no subprotocol is
    negotiated: the server speaks plain RFC 6455. Raises HandshakeError."""
    if method != b"GET":
        raise HandshakeError(405, "a WebSocket upgrade is a GET request", ((b"allow", b"GET"),))
    if b"websocket" not in _tokens(headers.get(b"upgrade", b"")) or b"upgrade" not in _tokens(headers.get(b"connection", b"")):
        raise HandshakeError(400, "not a WebSocket upgrade (Upgrade: websocket and Connection: Upgrade are required)")
    key = headers.get(b"sec-websocket-key", b"").strip()
    try:
        ok = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        ok = False
    if not ok:
        raise HandshakeError(400, "missing or malformed Sec-WebSocket-Key")
    if headers.get(b"sec-websocket-version", b"").strip() != b"13":
        raise HandshakeError(426, "unsupported WebSocket version (this server speaks version 13)", ((b"sec-websocket-version", b"13"),))
    return [(b"upgrade", b"websocket"), (b"connection", b"Upgrade"), (b"sec-websocket-accept", generate_accept_token(key))]


def accept_response(method: bytes, headers: dict[bytes, bytes]) -> bytes:
    """The whole 101 response (`accept_headers` as bytes). Written here, not by h11:
    after it the connection is no longer HTTP, and h11's validation of our own
    three constant headers cost more than the rest of the response."""
    lines = b"".join(b"%s: %s\r\n" % kv for kv in accept_headers(method, headers))
    return b"HTTP/1.1 101 Switching Protocols\r\n" + lines + b"\r\n"
