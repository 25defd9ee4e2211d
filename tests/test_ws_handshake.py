"""The opening handshake: the pure check (server/ws/handshake.py) and the front door's
101 over a real socket, with frames pipelined right behind the request."""

import base64
import hashlib
import json

import pytest
import trio

from sensorstream.server.ws import HandshakeError, accept_headers

from .httpraw import exchange, header, status_of
from .wire import FrameReader, masked_frame, upgrade_request

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
GOOD = {b"host": b"x", b"upgrade": b"websocket", b"connection": b"keep-alive, Upgrade", b"sec-websocket-key": KEY,
        b"sec-websocket-version": b"13"}


def test_accept_token_is_rfc_6455s_example():
    headers = dict(accept_headers(b"GET", GOOD))
    assert headers[b"sec-websocket-accept"] == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 1.3
    expected = base64.b64encode(hashlib.sha1(KEY + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    assert headers[b"sec-websocket-accept"] == expected
    assert headers[b"upgrade"] == b"websocket" and b"sec-websocket-extensions" not in headers


@pytest.mark.parametrize("change, status", [
    ({b"sec-websocket-key": None}, 400),
    ({b"sec-websocket-key": b"c2hvcnQ="}, 400),  # 5 bytes, not 16
    ({b"sec-websocket-key": b"not base64!!!!!!!!!!!!=="}, 400),
    ({b"upgrade": b"h2c"}, 400),
    ({b"connection": b"close"}, 400),
    ({b"sec-websocket-version": b"8"}, 426),
    ({b"sec-websocket-version": None}, 426),
])
def test_bad_upgrades_are_refused_with_a_status(change, status):
    h = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(HandshakeError) as e:
        accept_headers(b"GET", h)
    assert e.value.status == status
    if status == 426:
        assert dict(e.value.headers)[b"sec-websocket-version"] == b"13"


def test_only_get_upgrades():
    with pytest.raises(HandshakeError) as e:
        accept_headers(b"POST", GOOD)
    assert e.value.status == 405


async def test_frames_pipelined_behind_the_request_are_read(make_server):
    """A client may send its first frames with the request: h11 read them, the connection gets them."""
    server = await make_server(simulate=False)
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    ping = masked_frame(json.dumps({"type": "ping", "ref": 7}).encode())
    await stream.send_all(upgrade_request(server.port) + ping)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += await stream.receive_some(4096)
    head, _, rest = buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols")
    reader = FrameReader(stream, rest)
    with trio.fail_after(5):
        assert (await reader.message())[1]["type"] == "hello"
        assert (await reader.message())[1] == {"type": "pong", "ref": 7}


async def test_wrong_version_is_answered_426_over_http(make_server):
    server = await make_server(simulate=False)
    raw = upgrade_request(server.port).replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8")
    r = await exchange(server.port, raw)
    assert status_of(r) == 426 and header(r, b"sec-websocket-version") == b"13"
    assert server.stats.rejected.get("ws_handshake") == 1
