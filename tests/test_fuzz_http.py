"""The HTTP front door under malformed, oversized, slow and half-closed requests.

Every answer is a well-formed HTTP/1.1 response with an expected status (or a
plain close), the server stays up, and a watcher client's stream has no gap.
"""

from __future__ import annotations

import re
import socket
import time

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import eventually
from .httpraw import exchange, get, read_until_closed, status_of
from .server_thread import ServerThread

FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
ALLOWED = {101, 200, 400, 404, 405, 408, 413, 414, 426, 431, 501, 505}
STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) [^\r\n]*\r\n")


@pytest.fixture(scope="module")
def srv():
    # A short handshake timeout: examples that leave a request incomplete end quickly.
    with ServerThread(simulate=True, handshake_timeout=0.15, max_head_bytes=4096) as s:
        yield s
        s.check_healthy()


def _talk(port: int, raw: bytes, half_close: bool) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            s.sendall(raw)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except OSError:  # the server may close (and reset) before all of a bad request is sent
            pass
        buf = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            buf += chunk
            if b"\r\n\r\n" in buf and status_of(buf) == 101:
                break
        return buf


def _check_responses(buf: bytes) -> None:
    """Each response in `buf` is well-formed with an allowed status."""
    while buf:
        m = STATUS_LINE.match(buf)
        assert m, buf[:200]
        status = int(m.group(1))
        assert status in ALLOWED, buf[:200]
        if status == 101:
            return
        head, sep, rest = buf.partition(b"\r\n\r\n")
        assert sep, buf[:200]
        n = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head + b"\r\n")
        length = int(n.group(1)) if n else 0
        buf = rest[length:]


tokens = st.sampled_from([b"GET", b"HEAD", b"POST", b"PUT", b"OPTIONS", b"PRI", b"CONNECT", b"G\x00T", b"", b"get"])
targets = st.one_of(
    st.sampled_from([b"/", b"/healthz", b"/metrics", b"/ws", b"*", b"/index.html", b"/../../etc/passwd", b"/%2e%2e/x",
                     b"http://x/", b"/a?b=c#d", b"//", b"/\xff\xfe"]),
    st.binary(max_size=100),
)
versions = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x", b"HTTP/0.9", b"", b"http/1.1"])
names = st.one_of(st.sampled_from([b"Host", b"Upgrade", b"Connection", b"Content-Length", b"Transfer-Encoding",
                                   b"Sec-WebSocket-Key", b"Sec-WebSocket-Version", b"Origin", b"Expect"]),
                  st.binary(max_size=20))
values = st.one_of(st.sampled_from([b"websocket", b"Upgrade", b"h2c", b"close", b"keep-alive", b"chunked", b"100-continue",
                                    b"-1", b"99999999999999999999", b"13", b"dGhlIHNhbXBsZSBub25jZQ==", b"5"]),
                   st.binary(max_size=60))
requests = st.builds(
    lambda method, target, version, headers, body, sep, crlf_end: (
        method + sep + target + sep + version + b"\r\n"
        + b"".join(k + b": " + v + b"\r\n" for k, v in headers)
        + (b"\r\n" if crlf_end else b"") + body),
    tokens, targets, versions, st.lists(st.tuples(names, values), max_size=8), st.binary(max_size=200),
    st.sampled_from([b" ", b"  ", b"\t"]), st.booleans(),
)


@FUZZ
@given(raw=st.one_of(requests, st.binary(max_size=500)), half_close=st.sampled_from([True, True, False]))
def test_malformed_requests_get_well_formed_answers(srv, raw, half_close):
    buf = _talk(srv.port, raw, half_close)
    _check_responses(buf)
    srv.check_healthy()


@settings(max_examples=20, deadline=None, database=None)
@given(n_headers=st.integers(1, 400), size=st.integers(1, 20_000))
def test_oversized_heads(srv, n_headers, size):
    raw = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"a" * (size // n_headers)) for i in range(n_headers)) + b"\r\n"
    buf = _talk(srv.port, raw, half_close=False)
    if len(raw) > 4096 + 1024:
        assert status_of(buf) == 431, buf[:100]
    _check_responses(buf)
    srv.check_healthy()


# ----------------------------------------------------------------- specific cases over trio sockets


async def test_non_websocket_upgrades_are_plain_requests(make_server):
    server = await make_server()
    port = server.port
    r = await exchange(port, get("/healthz", port, "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAAQAAP__"))
    assert status_of(r) == 200 and b"HTTP/1.1 101" not in r
    r = await exchange(port, get("/", port, "Connection: Upgrade", "Upgrade: websocket"))  # upgrade elsewhere than /ws
    assert status_of(r) == 404
    r = await exchange(port, get("/ws", port, "Connection: Upgrade", "Upgrade: websocket"))  # no key
    assert status_of(r) == 400
    r = await exchange(port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert status_of(r) in (400, 405, 505)
    assert status_of(await exchange(port, get("/healthz", port))) == 200


@pytest.mark.parametrize("partial", [b"", b"GET /heal", b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"\x16\x03\x01\x00"])
async def test_half_closed_sockets_are_closed_promptly(make_server, partial):
    server = await make_server(handshake_timeout=5)
    s = trio.socket.socket()
    await s.connect(("127.0.0.1", server.port))
    await s.send(partial)
    s.shutdown(trio.socket.SHUT_WR)
    stream = trio.SocketStream(s)
    t0 = trio.current_time()
    r = await read_until_closed(stream, limit=2)
    assert trio.current_time() - t0 < 1.0  # EOF seen at once, not at the 5 s timeout
    assert r == b"" or status_of(r) == 400
    await stream.aclose()
    with trio.fail_after(2):
        while server.stats.tcp_connections_open:
            await trio.sleep(0.01)


async def test_complete_request_then_half_close_is_answered(make_server):
    server = await make_server()
    s = trio.socket.socket()
    await s.connect(("127.0.0.1", server.port))
    await s.send(get("/healthz", server.port) + get("/nope", server.port))  # pipelined, then EOF
    s.shutdown(trio.socket.SHUT_WR)
    stream = trio.SocketStream(s)
    r = await read_until_closed(stream)
    assert r.count(b"HTTP/1.1 200") == 1 and r.count(b"HTTP/1.1 404") == 1
    await stream.aclose()


async def test_many_slowloris_clients_do_not_starve_others(make_server):
    timeout = 3.0
    server = await make_server(handshake_timeout=timeout)
    port = server.port
    closed_at = []

    async def loris():
        s = await trio.open_tcp_stream("127.0.0.1", port)
        try:
            for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200:
                await s.send_all(bytes([b]))
                await trio.sleep(0.05)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            closed_at.append(trio.current_time())
            await s.aclose()

    t0 = trio.current_time()
    async with trio.open_nursery() as n:
        for _ in range(100):
            n.start_soon(loris)
        await eventually(lambda: server.stats.tcp_connections_open >= 100)
        # "Not starved" is shown by order, not by wall time (which depends on how
        # much CPU a noisy machine gives us): every request is answered while all
        # 100 lorises are still connected, long before the first is timed out.
        for _ in range(5):
            with trio.fail_after(timeout - 1):
                assert status_of(await exchange(port, get("/healthz", port))) == 200
            assert not closed_at
    assert len(closed_at) == 100 and max(closed_at) - t0 < timeout + 3
    assert server.stats.rejected["head_timeout"] == 100
