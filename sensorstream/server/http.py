"""The h11 front door: one port for the dashboard, /healthz, /metrics and /ws.

Every connection is read by h11 first. A plain request is answered here
(keep-alive, so a browser loads the page and its assets over one connection).
An upgrade to /ws is checked (origin, token, the WebSocket headers: see
ws/handshake.py), answered with the 101 through the same h11 connection, and
handed to the context's `upgrade` callback with the bytes read past the request:
the request is parsed once. This module knows nothing else of the server: it
gets an `HttpContext`.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

import h11
import trio

from ..config import ServerConfig
from .metrics import ServerStats
from .security import control_token_from, headers_of, origin_ok, token_ok
from .ws.handshake import HandshakeError, accept_response

log = logging.getLogger(__name__)

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
}


# ----------------------------------------------------------------- static files


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    cache_control: str


class StaticFiles:
    """The dashboard, read into memory once at start-up.

    Only regular files that really live under the root are loaded (symlinks
    pointing out of it are skipped), and lookups are exact dictionary hits on
    normalised names, so `..`, `%2e%2e`, absolute paths and the like cannot
    reach anything else: they simply are not keys.
    """

    MAX_TOTAL = 32 * 1024 * 1024

    def __init__(self, root: Path):
        self.root = root.resolve()
        self.files: dict[str, StaticFile] = {}
        total = 0
        for p in sorted(self.root.rglob("*")):
            if not p.is_file() or p.suffix in (".py", ".pyc") or "__pycache__" in p.parts:
                continue
            real = p.resolve()
            if not real.is_relative_to(self.root):
                log.warning("static: skipping %s (links outside %s)", p, self.root)
                continue
            body = real.read_bytes()
            total += len(body)
            if total > self.MAX_TOTAL:
                raise ValueError(f"dashboard directory {self.root} is larger than {self.MAX_TOTAL} bytes")
            rel = p.relative_to(self.root).as_posix()
            ctype = _TYPES.get(p.suffix) or mimetypes.guess_type(p.name)[0] or "application/octet-stream"
            # The page itself is revalidated every time so an upgrade shows at once;
            # assets may be cached briefly.
            cache = "no-cache" if p.suffix == ".html" else "public, max-age=300"
            self.files[rel] = StaticFile(body, ctype, cache)

    def lookup(self, target: str) -> StaticFile | None:
        path = urllib.parse.unquote(target.split("?", 1)[0].split("#", 1)[0])
        if path in ("", "/"):
            path = "/index.html"
        if not path.startswith("/") or "\x00" in path or "\\" in path:
            return None
        rel = path[1:]
        if any(seg in ("", ".", "..") for seg in rel.split("/")):
            return None
        return self.files.get(rel)


def dashboard_dir() -> Path:
    """dashboard/ in a source checkout, or the copy shipped inside the wheel."""
    try:
        from importlib.resources import files

        p = Path(str(files("sensorstream.dashboard")))
        if (p / "index.html").exists():
            return p
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parents[2] / "dashboard"


# ----------------------------------------------------------------- connection handling


@dataclass(frozen=True, slots=True)
class Upgrade:
    """An accepted WebSocket upgrade. `response` (the 101) is not written yet: the
    callback writes it, with its own first frames if it has some (one system call
    instead of two: see ws.ServerConnection's `preface`)."""

    stream: trio.abc.Stream
    peer: str
    target: str  # the request target, e.g. "/ws?token=..."
    trailing: bytes  # read past the request: the client's first frames, if any
    response: bytes  # the 101 Switching Protocols, to write before anything else
    control_token: str | None = None  # what the client presented to send commands (header or query)


@dataclass(frozen=True, slots=True)
class HttpContext:
    """What the front door needs from the server, and nothing more."""

    cfg: ServerConfig
    stats: ServerStats
    static: StaticFiles
    tls: bool  # the connection is TLS (the origin check compares schemes)
    health: Callable[[], tuple[int, dict]]  # (status, body) of /healthz
    metrics_text: Callable[[], bytes]  # the body of /metrics
    upgrade: Callable[[Upgrade], Awaitable[None]]  # runs the WebSocket until it ends
    # GET /export: query string -> (status, body, content type, extra headers) (server/export.py)
    export: Callable[[str], Awaitable[tuple[int, bytes, str, list]]] | None = None


class _Reject(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _headers(req: h11.Request) -> dict[bytes, bytes]:
    # From raw_items(), lower-cased by headers_of: iterating `req.headers` (h11's
    # already lower-cased view) goes through a Python-level Sequence.__iter__, ~40 % slower.
    return headers_of(req.headers.raw_items())


def _has_body(h: dict[bytes, bytes]) -> bool:
    # h11 has checked both headers (a valid integer; not both at once).
    return b"transfer-encoding" in h or int(h.get(b"content-length", b"0")) > 0


def is_websocket_upgrade(h: dict[bytes, bytes]) -> bool:
    """`h`: the request's headers, as `_headers` gives them."""
    return b"websocket" in h.get(b"upgrade", b"").lower() and b"upgrade" in h.get(b"connection", b"").lower()


async def _read_request(conn: h11.Connection, stream: trio.abc.Stream, raw: bytearray, max_head: int, deadline: float):
    """Next h11 event, keeping every byte of this request cycle in `raw`. Raises
    trio.TooSlowError once `deadline` (trio time) passes while waiting for bytes."""
    nowait = getattr(stream, "receive_nowait", None)  # server/tcp.py's TcpStream
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as e:
            status = e.error_status_hint
            if status == 400 and len(raw) > max_head:
                status = 431
            raise _Reject(status, str(e)) from None
        if event is h11.NEED_DATA:
            if len(raw) > max_head:
                raise _Reject(431, "request head too large")
            # The whole head must arrive by the deadline. A bytes-already-there read
            # needs no timeout (a cancel scope is ~5 % of a storm's handshake).
            data = None if nowait is None else nowait(16384)
            if data is None:
                # A bare CancelScope: trio.move_on_at adds a generator context manager.
                with trio.CancelScope(deadline=deadline):
                    data = await stream.receive_some(16384)
                if data is None:
                    raise trio.TooSlowError
            raw += data
            conn.receive_data(data)
            continue
        # h11 only bounds a head it is still waiting for; one that arrived whole
        # in a single read is measured here.
        if isinstance(event, h11.Request) and len(raw) - len(conn.trailing_data[0]) > max_head:
            raise _Reject(431, "request head too large")
        return event


async def handle_http(ctx: HttpContext, stream: trio.abc.Stream, peer: str, *, refuse: tuple[int, str] | None = None) -> None:
    """Serve one TCP connection: HTTP requests until close, or a WebSocket upgrade.

    `refuse` = (status, message): the server is over a connection limit; the
    first request is answered with it and the connection closed."""
    cfg = ctx.cfg
    stats = ctx.stats
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=cfg.max_head_bytes)
    raw = bytearray()
    first = True
    while True:
        try:
            # The whole request head must arrive within the handshake timeout:
            # a client that connects and dribbles bytes does not hold a slot.
            deadline = trio.current_time() + cfg.handshake_timeout
            event = await _read_request(conn, stream, raw, cfg.max_head_bytes, deadline)
        except trio.TooSlowError:
            if raw or first:
                # (An idle keep-alive connection timing out between requests is no rejection.)
                stats.reject("head_timeout")
            if raw:
                log.info("http %s: request head not complete within %gs", peer, cfg.handshake_timeout,
                         extra={"event": "refused", "peer": peer, "reason": "head_timeout"})
                await _send_simple(conn, stream, 408, "request timeout")
            return
        except _Reject as e:
            stats.http_rejected_total += 1
            stats.reject(_REASONS.get(e.status, "bad_request"))
            # h11 may quote a bad header line: never one that could carry the token.
            msg = "malformed request" if b"authorization" in e.message.lower().encode("latin-1", "replace") else e.message[:120]
            log.info("http %s: %d %s", peer, e.status, msg, extra={"event": "refused", "peer": peer, "status": e.status})
            await _send_simple(conn, stream, e.status, e.message)
            return
        if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return
        if not isinstance(event, h11.Request):
            return
        if refuse is not None:
            stats.http_rejected_total += 1
            await _send_simple(conn, stream, refuse[0], refuse[1], extra=[(b"retry-after", b"5")])
            return
        headers = _headers(event)  # once per request
        if _has_body(headers):
            # No route takes a body, so none is read: draining it would hold up to
            # a body's worth of memory per connection for nothing.
            stats.http_rejected_total += 1
            stats.reject("body")
            log.info("http %s: 413 request body refused", peer, extra={"event": "refused", "peer": peer, "status": 413})
            await _send_simple(conn, stream, 413, "request bodies are not accepted")
            return
        target = event.target.decode("latin-1")
        if is_websocket_upgrade(headers):
            if target.split("?", 1)[0] != "/ws":
                await _respond(ctx, conn, stream, 404, b"not found\n", "text/plain")
                return
            # Origin first: a cross-site page is refused whatever it presents.
            if not origin_ok(headers, cfg.allow_origins, tls=ctx.tls):
                stats.reject("origin")
                log.warning("ws %s: origin %r not allowed", peer, headers.get(b"origin", b"").decode("latin-1")[:200],
                            extra={"event": "refused", "peer": peer, "reason": "origin"})
                await _respond(ctx, conn, stream, 403, b"origin not allowed\n", "text/plain")
                return
            if not token_ok(cfg.token, target, headers):
                stats.reject("token")
                log.warning("ws %s: missing or wrong token", peer, extra={"event": "refused", "peer": peer, "reason": "token"})
                await _respond(ctx, conn, stream, 401, b"token required\n", "text/plain", extra=[(b"www-authenticate", b"Bearer")])
                return
            try:
                head = accept_response(event.method, headers)
            except HandshakeError as e:
                stats.reject("ws_handshake")
                log.info("ws %s: %d %s", peer, e.status, e.message, extra={"event": "refused", "peer": peer, "reason": "ws_handshake"})
                await _respond(ctx, conn, stream, e.status, (e.message + "\n").encode(), "text/plain", extra=e.headers)
                return
            # The request has no body (refused above): h11 ends it at once. The
            # 101 is not h11's to write: the connection leaves HTTP for good.
            if not isinstance(conn.next_event(), h11.EndOfMessage):
                return
            # Whatever came after the request (a client may send frames at once)
            # is the WebSocket's. The HTTP parser's state is not needed for the
            # (long) WebSocket life of this connection: it goes here.
            up = Upgrade(stream, peer, target, bytes(conn.trailing_data[0]), head, control_token_from(target, headers))
            del conn, raw, event, headers, head
            await ctx.upgrade(up)
            return
        stats.http_requests_total += 1
        first = False
        keep_alive = await _route(ctx, conn, stream, event, target, headers)
        if not keep_alive or conn.our_state is not h11.DONE:
            return
        # The request has no body (refused above): h11 ends it at once.
        if not isinstance(conn.next_event(), h11.EndOfMessage) or conn.their_state is not h11.DONE:
            return
        conn.start_next_cycle()
        raw = bytearray(conn.trailing_data[0])


async def _route(ctx: HttpContext, conn: h11.Connection, stream, req: h11.Request, target: str, headers: dict[bytes, bytes]) -> bool:
    method = req.method
    path = target.split("?", 1)[0]
    if method not in (b"GET", b"HEAD"):
        await _respond(ctx, conn, stream, 405, b"method not allowed\n", "text/plain", head=False, extra=[(b"allow", b"GET, HEAD")])
        return False
    head = method == b"HEAD"
    if path == "/healthz":
        status, body = ctx.health()
        await _respond(ctx, conn, stream, status, json.dumps(body).encode(), "application/json", head=head, cache="no-store")
        return True
    # /metrics, and /export (data, like /ws: docs/recording.md), need the token.
    if (path == "/metrics" or (path == "/export" and ctx.export is not None)) and not token_ok(ctx.cfg.token, target, headers):
        ctx.stats.reject("token")
        await _respond(ctx, conn, stream, 401, b"token required\n", "text/plain", head=head, extra=[(b"www-authenticate", b"Bearer")])
        return True
    if path == "/metrics":
        await _respond(ctx, conn, stream, 200, ctx.metrics_text(), "text/plain; version=0.0.4; charset=utf-8", head=head, cache="no-store")
        return True
    if path == "/export" and ctx.export is not None:
        status, body, ctype, extra = await ctx.export(target.partition("?")[2])
        await _respond(ctx, conn, stream, status, body, ctype, head=head, cache="no-store", extra=extra)
        return True
    if path == "/ws":
        await _respond(ctx, conn, stream, 426, b"this endpoint speaks WebSocket\n", "text/plain", head=head, extra=[(b"upgrade", b"websocket")])
        return True
    f = ctx.static.lookup(target)
    if f is None:
        await _respond(ctx, conn, stream, 404, b"not found\n", "text/plain", head=head)
        return True
    await _respond(ctx, conn, stream, 200, f.body, f.content_type, head=head, cache=f.cache_control)
    return True


async def _respond(ctx: HttpContext, conn, stream, status, body: bytes, ctype: str, *, head=False, cache=None, extra=()):
    if status >= 400:
        ctx.stats.http_rejected_total += 1
    headers = [
        (b"content-type", ctype.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"server", b"sensorstream"),
    ]
    if cache:
        headers.append((b"cache-control", cache.encode()))
    headers.extend(extra)
    try:
        with trio.fail_after(ctx.cfg.send_timeout):
            await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
            if not head:
                await stream.send_all(conn.send(h11.Data(data=body)))
            await stream.send_all(conn.send(h11.EndOfMessage()))
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, h11.LocalProtocolError):
        # The caller sees our_state is not DONE and closes the connection.
        pass


async def _send_simple(conn: h11.Connection, stream, status: int, message: str, extra=()) -> None:
    """An error response on a connection that is about to close."""
    body = (message + "\n").encode("utf-8", "replace")
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()), (b"connection", b"close"), *extra]
    try:
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            data = conn.send(h11.Response(status_code=status, headers=headers)) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        else:
            # h11 is in an error state (it could not parse the request): write the response by hand.
            data = b"HTTP/1.1 %d %s\r\n" % (status, _reason(status)) + b"".join(k + b": " + v + b"\r\n" for k, v in headers) + b"\r\n" + body
        with trio.move_on_after(1.0):
            await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
        pass


_REASONS = {431: "head_too_large", 414: "head_too_large", 408: "head_timeout"}


def _reason(status: int) -> bytes:
    return {400: b"Bad Request", 408: b"Request Timeout", 414: b"URI Too Long", 431: b"Request Header Fields Too Large",
            429: b"Too Many Requests", 501: b"Not Implemented", 503: b"Service Unavailable",
            505: b"HTTP Version Not Supported"}.get(status, b"Error")
