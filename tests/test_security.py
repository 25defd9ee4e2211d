"""Access control over real sockets on 127.0.0.1: bind check, token, Origin, TLS, static files."""

import json
import os
import subprocess
import sys

import pytest
import trio
import trio_websocket

from sensorstream.config import ServerConfig
from sensorstream.server.app import Server
from sensorstream.server.security import (
    ConfigError, TokenBucket, check_bind, headers_of, is_loopback, origin_ok, token_from, token_ok,
)

from .httpraw import client_context, exchange, get, header, read_until_closed, self_signed_cert, status_of
from .wire import upgrade_request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "s3cret-t0ken"


# ----------------------------------------------------------------- pure checks


def test_loopback_addresses():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "example.com", ""))


def test_bind_check():
    check_bind("127.0.0.1", None, False)
    check_bind("0.0.0.0", "tok", False)
    check_bind("0.0.0.0", None, True)
    with pytest.raises(ConfigError, match="--token"):
        check_bind("0.0.0.0", None, False)
    with pytest.raises(ConfigError):
        Server(ServerConfig(host="::", port=0))


def test_token_sources_and_compare():
    h = headers_of([(b"Authorization", b"Bearer abc")])
    assert token_from("/ws", h) == "abc"
    assert token_from("/ws?x=1&token=a%20b", {}) == "a b"
    assert token_from("/ws", {}) is None
    assert token_from("/ws?token=", {}) == ""
    assert token_ok(None, "/ws", {})
    assert token_ok("abc", "/ws?token=abc", {})
    assert not token_ok("abc", "/ws?token=abd", {})
    assert not token_ok("abc", "/ws?token=", {})
    assert not token_ok("abc", "/ws", headers_of([(b"authorization", b"Basic abc")]))
    assert not token_ok("abc", "/ws?token=%ff%fe", {})  # undecodable bytes do not crash


@pytest.mark.parametrize("origin,host,allowed,tls,ok", [
    (None, "h:1", (), False, True),
    ("http://127.0.0.1:8765", "127.0.0.1:8765", (), False, True),
    ("http://LOCALHOST:80", "localhost", (), False, True),
    ("https://x.example", "x.example", (), True, True),
    ("https://x.example", "x.example", (), False, False),  # scheme differs from what we serve
    ("http://evil.example", "127.0.0.1:8765", (), False, False),
    ("http://127.0.0.1:9999", "127.0.0.1:8765", (), False, False),
    ("http://localhost:8765", "127.0.0.1:8765", (), False, False),
    ("null", "127.0.0.1:8765", (), False, False),
    ("http://evil.example", "127.0.0.1:8765", ("http://evil.example",), False, True),
    ("http://evil.example:81", "127.0.0.1:8765", ("http://evil.example",), False, False),
    ("garbage::", "127.0.0.1:8765", ("*",), False, True),
    ("http://x:notaport", "x:1", (), False, False),
])
def test_origin_rules(origin, host, allowed, tls, ok):
    h = {b"host": host.encode()}
    if origin is not None:
        h[b"origin"] = origin.encode()
    assert origin_ok(h, allowed, tls) is ok


def test_token_bucket():
    b = TokenBucket(rate=10, burst=3, now=0.0)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.take(0.1) and not b.take(0.1)
    assert b.take(10.0, cost=3) and not b.take(10.0)


# ----------------------------------------------------------------- start-up refusal


def test_cli_refuses_public_bind_without_token_exit_2():
    env = {k: v for k, v in os.environ.items() if k != "SENSORSTREAM_TOKEN"}
    r = subprocess.run([sys.executable, "-m", "sensorstream", "serve", "--host", "0.0.0.0", "--port", "0"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=20)
    assert r.returncode == 2
    assert "without a token" in r.stderr and "--insecure" in r.stderr and "Traceback" not in r.stderr


# ----------------------------------------------------------------- token


async def test_websocket_needs_the_token(make_server, nursery):
    server = await make_server(simulate=True, token=TOKEN)
    port = server.port
    r = await exchange(port, upgrade_request(port))
    assert status_of(r) == 401 and header(r, b"www-authenticate") == b"Bearer"
    r = await exchange(port, upgrade_request(port, "/ws?token=wrong"))
    assert status_of(r) == 401
    r = await exchange(port, upgrade_request(port, "/ws", "Authorization: Bearer wrong\r\n"))
    assert status_of(r) == 401
    assert server.stats.rejected["token"] == 3 and server.stats.connections_total == 0
    # Query (what the dashboard does) and Bearer (other clients) both work.
    ws = await trio_websocket.connect_websocket(nursery, "127.0.0.1", port, f"/ws?token={TOKEN}", use_ssl=False)
    assert json.loads(await ws.get_message())["type"] == "hello"
    ws2 = await trio_websocket.connect_websocket(nursery, "127.0.0.1", port, "/ws", use_ssl=False,
                                                extra_headers=[(b"Authorization", f"Bearer {TOKEN}".encode())])
    assert json.loads(await ws2.get_message())["type"] == "hello"
    await ws.aclose()
    await ws2.aclose()


async def test_token_guards_metrics_but_not_health_or_the_page(make_server):
    server = await make_server(simulate=True, token=TOKEN)
    port = server.port
    assert status_of(await exchange(port, get("/healthz", port))) == 200
    index = await exchange(port, get("/", port))
    assert status_of(index) == 200 and b"<html" in index.lower()
    assert status_of(await exchange(port, get("/app.js", port))) == 200
    assert status_of(await exchange(port, get("/metrics", port))) == 401
    assert status_of(await exchange(port, get("/metrics?token=nope", port))) == 401
    m = await exchange(port, get(f"/metrics?token={TOKEN}", port))
    assert status_of(m) == 200 and b"sensorstream_connections_total" in m
    m = await exchange(port, get("/metrics", port, f"Authorization: Bearer {TOKEN}"))
    assert status_of(m) == 200


async def test_without_a_token_everything_is_open_on_loopback(make_server):
    server = await make_server()
    port = server.port
    assert status_of(await exchange(port, get("/metrics", port))) == 200
    assert status_of(await exchange(port, upgrade_request(port))) == 101


# ----------------------------------------------------------------- Origin


async def test_origin_check_on_upgrade(make_server, nursery):
    server = await make_server(allow_origins=["https://grafana.example"])
    port = server.port
    own = f"http://127.0.0.1:{port}"
    assert status_of(await exchange(port, upgrade_request(port, extra=f"Origin: {own}\r\n"))) == 101
    assert status_of(await exchange(port, upgrade_request(port, extra="Origin: https://grafana.example\r\n"))) == 101
    assert status_of(await exchange(port, upgrade_request(port))) == 101  # no Origin: not a browser
    for bad in ("http://evil.example", f"http://localhost:{port}", "http://127.0.0.1:1", "null", f"https://127.0.0.1:{port}"):
        r = await exchange(port, upgrade_request(port, extra=f"Origin: {bad}\r\n"))
        assert status_of(r) == 403, bad
    assert server.stats.rejected["origin"] == 5
    assert server.stats.connections_total == 3


async def test_origin_is_checked_before_the_token(make_server):
    server = await make_server(token=TOKEN)
    port = server.port
    r = await exchange(port, upgrade_request(port, f"/ws?token={TOKEN}", "Origin: http://evil.example\r\n"))
    assert status_of(r) == 403
    r = await exchange(port, upgrade_request(port, f"/ws?token={TOKEN}", f"Origin: http://127.0.0.1:{port}\r\n"))
    assert status_of(r) == 101


# ----------------------------------------------------------------- TLS


@pytest.fixture
def cert(tmp_path):
    return self_signed_cert(tmp_path)


async def test_tls_serves_https_and_wss_on_one_port(make_server, nursery, cert):
    certfile, keyfile = cert
    server = await make_server(simulate=True, certfile=str(certfile), keyfile=str(keyfile), token=TOKEN)
    port = server.port
    ctx = client_context(certfile)
    ws = await trio_websocket.connect_websocket(nursery, "127.0.0.1", port, f"/ws?token={TOKEN}", use_ssl=ctx)
    hello = json.loads(await ws.get_message())
    assert hello["type"] == "hello"
    await ws.send_message(json.dumps({"type": "subscribe", "streams": ["sim/env"]}))
    with trio.fail_after(5):
        while not isinstance(await ws.get_message(), bytes):
            pass
    await ws.aclose()
    # https for the page and /healthz, same port.
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    tls = trio.SSLStream(tcp, ctx, server_hostname="127.0.0.1", https_compatible=True)
    await tls.send_all(get("/healthz", port, "Connection: close"))
    r = await read_until_closed(tls)
    assert status_of(r) == 200 and json.loads(r.partition(b"\r\n\r\n")[2])["status"] == "ok"
    await tls.aclose()
    # Same-origin check uses https now.
    r = await _tls_exchange(port, ctx, upgrade_request(port, f"/ws?token={TOKEN}", f"Origin: https://127.0.0.1:{port}\r\n"))
    assert status_of(r) == 101
    r = await _tls_exchange(port, ctx, upgrade_request(port, f"/ws?token={TOKEN}", f"Origin: http://127.0.0.1:{port}\r\n"))
    assert status_of(r) == 403


async def _tls_exchange(port, ctx, raw: bytes) -> bytes:
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    tls = trio.SSLStream(tcp, ctx, server_hostname="127.0.0.1", https_compatible=True)
    await tls.send_all(raw)
    buf = b""
    with trio.fail_after(5):
        while b"\r\n\r\n" not in buf:
            data = await tls.receive_some(4096)
            if not data:
                break
            buf += data
    await trio.aclose_forcefully(tls)
    return buf


async def test_tls_port_survives_plain_http_and_silent_clients(make_server, cert):
    certfile, keyfile = cert
    server = await make_server(certfile=str(certfile), keyfile=str(keyfile), handshake_timeout=0.5)
    port = server.port
    # Plain HTTP on the TLS port: the handshake fails, the connection is closed.
    r = await exchange(port, get("/healthz", port))
    assert status_of(r) is None
    # A client that opens TCP and never starts TLS is dropped within the handshake timeout.
    t0 = trio.current_time()
    silent = await trio.open_tcp_stream("127.0.0.1", port)
    assert await read_until_closed(silent, limit=3) == b""
    assert trio.current_time() - t0 < 1.5
    await silent.aclose()
    assert server.stats.rejected.get("tls_failed", 0) >= 1 and server.stats.rejected.get("tls_timeout", 0) == 1
    # ...and the server still serves TLS clients.
    r = await _tls_exchange(port, client_context(certfile), get("/healthz", port))
    assert status_of(r) == 200


async def test_bad_certificate_is_a_config_error(tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match="TLS"):
        Server(ServerConfig(port=0, certfile=str(bad)))


# ----------------------------------------------------------------- static files


@pytest.fixture
def dashboard(tmp_path):
    root = tmp_path / "dash"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_text("<html>ok</html>")
    (root / "app.js").write_text("export {}")
    (root / "style.css").write_text("body{}")
    (root / "sub" / "icon.svg").write_text("<svg/>")
    (root / "data.bin").write_bytes(b"\x00\x01")
    outside = tmp_path / "secret.txt"
    outside.write_text("TOP SECRET")
    secret_dir = tmp_path / "private"
    secret_dir.mkdir()
    (secret_dir / "key.txt").write_text("TOP SECRET")
    (root / "leak.txt").symlink_to(outside)
    (root / "leakdir").symlink_to(secret_dir, target_is_directory=True)
    (root / "inside-link.js").symlink_to(root / "app.js")  # a link that stays inside is fine
    return root


async def test_static_files_stay_inside_the_dashboard_dir(make_server, dashboard):
    server = await make_server(dashboard_dir=str(dashboard))
    port = server.port
    for path in ("/leak.txt", "/leakdir/key.txt", "/../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E/secret.txt",
                 "/sub/../../secret.txt", "/sub/%2e%2e/%2e%2e/secret.txt", "//etc/passwd", "/%2fetc%2fpasswd",
                 "/..%2fsecret.txt", "/..%5csecret.txt", "/index.html%00", "/./index.html", "/sub//icon.svg",
                 str(dashboard / "index.html"), "http://127.0.0.1/index.html", "/private/key.txt", "/sub"):
        r = await exchange(port, get(path, port))
        assert status_of(r) == 404, path
        assert b"TOP SECRET" not in r
    # A raw `..` in the request line (no client normalises it away here).
    r = await exchange(port, b"GET /../../secret.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(r) in (400, 404) and b"TOP SECRET" not in r


async def test_static_content_types_and_caching(make_server, dashboard):
    server = await make_server(dashboard_dir=str(dashboard))
    port = server.port
    expect = {
        "/": ("text/html; charset=utf-8", "no-cache"),
        "/index.html": ("text/html; charset=utf-8", "no-cache"),
        "/app.js": ("text/javascript; charset=utf-8", "public, max-age=300"),
        "/inside-link.js": ("text/javascript; charset=utf-8", "public, max-age=300"),
        "/style.css": ("text/css; charset=utf-8", "public, max-age=300"),
        "/sub/icon.svg": ("image/svg+xml", "public, max-age=300"),
        "/data.bin": ("application/octet-stream", "public, max-age=300"),
    }
    for path, (ctype, cache) in expect.items():
        r = await exchange(port, get(path, port))
        assert status_of(r) == 200, path
        assert header(r, b"content-type") == ctype.encode(), path
        assert header(r, b"cache-control") == cache.encode(), path
        assert header(r, b"x-content-type-options") == b"nosniff"
    # HEAD: same headers, no body.
    r = await exchange(port, b"HEAD /app.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(r) == 200 and r.endswith(b"\r\n\r\n") and header(r, b"content-length") == b"9"
