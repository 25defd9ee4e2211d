"""What can go wrong when a client connects, as types, in words, without I/O.

    ClientError
    ├── ConnectFailed         retried (server down, refused, busy, unknown host, timeout, connection lost)
    └── PermanentError        never retried: retrying cannot help
        ├── BadURL            not a ws://, wss://, http(s):// or HOST:PORT address
        ├── NotFound          404 from sensorstream: wrong path (the WebSocket is at /ws)
        ├── Unauthorized      401/403: the server needs a token, or refused the one given
        ├── UntrustedCertificate   wss:// to a certificate nobody vouches for (--cafile)
        ├── NotSensorstream   something answered, but not a sensorstream server
        └── UnknownStream     subscribed to a stream id the server does not have

`classify(exc, url)` turns what trio, ssl and trio-websocket raise into one of
these; `normalize_url` reads what a user types; `RetryReport` decides which
failures are worth a line (the first, then one every `interval` seconds, or
when the cause changes). All three are pure: tested without sockets.
"""

from __future__ import annotations

import socket
import ssl
import urllib.parse

import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError

from .excgroups import leaves


class ClientError(Exception):
    """Base of every error the client reports. `str(e)` is one line for a user."""

    def __init__(self, message: str, url: str = ""):
        super().__init__(message)
        self.message = message
        self.url = url


class ConnectFailed(ClientError, ConnectionError):
    """The connection failed or was lost; the client retries (with reconnect=True)."""


class PermanentError(ClientError):
    """Retrying cannot help; the client raises it instead."""


class BadURL(PermanentError, ValueError):
    pass


class NotFound(PermanentError):
    pass


class Unauthorized(PermanentError):
    def __init__(self, message: str, url: str = "", status: int = 401):
        super().__init__(message, url)
        self.status = status


class UntrustedCertificate(PermanentError):
    pass


class NotSensorstream(PermanentError):
    pass


class UnknownStream(PermanentError):
    pass


_SCHEMES = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}


def normalize_url(text: str) -> str:
    """What a user types -> the WebSocket URL: `ws://h:p/ws` as is; `http(s)://h:p`
    and `h:p` become `ws(s)://h:p/ws`; an empty path becomes /ws. Raises BadURL."""
    raw = text.strip()
    example = "expected ws://HOST:PORT/ws (or wss://, http://HOST:PORT, HOST:PORT)"
    if not raw:
        raise BadURL(f"empty URL; {example}", text)
    if "://" not in raw:
        raw = "ws://" + raw
    try:
        u = urllib.parse.urlsplit(raw)
        port = u.port
    except ValueError as e:
        raise BadURL(f"bad URL {text!r} ({e}); {example}", text) from None
    scheme = _SCHEMES.get(u.scheme.lower())
    if scheme is None:
        raise BadURL(f"bad URL {text!r}: unknown scheme {u.scheme!r}; {example}", text)
    if not u.hostname:
        raise BadURL(f"bad URL {text!r}: no host; {example}", text)
    path = u.path if u.path not in ("", "/") else "/ws"
    del port  # read only to check it
    return urllib.parse.urlunsplit((scheme, u.netloc, path, u.query, ""))


def redact_url(url: str) -> str:
    """The URL without its token, for messages and logs."""
    u = urllib.parse.urlsplit(url)
    if "token=" not in u.query:
        return url
    q = "&".join("token=…" if p.startswith("token=") else p for p in u.query.split("&"))
    return urllib.parse.urlunsplit((u.scheme, u.netloc, u.path, q, u.fragment))


def _header(headers, name: bytes) -> str:
    for k, v in headers or ():
        if k.lower() == name:
            return v.decode("latin-1", "replace")
    return ""


def rejected(status: int, headers, body: bytes | None, url: str) -> ClientError:
    """The error for an HTTP answer that is not the WebSocket upgrade."""
    shown = redact_url(url)
    server = _header(headers, b"server")
    ours = server.startswith("sensorstream")
    u = urllib.parse.urlsplit(url)
    if not ours and status not in (401, 403, 429, 503):
        what = f" (Server: {server[:60]})" if server else ""
        return NotSensorstream(f"{u.netloc} answered HTTP {status} and is not a sensorstream server{what}; check the host and port", url)
    if status == 404:
        return NotFound(f"{shown}: HTTP 404, no WebSocket at {u.path or '/'}; sensorstream serves it at /ws "
                        f"(try {u.scheme}://{u.netloc}/ws)", url)
    if status in (401, 403):
        has_token = "token=" in u.query
        why = ("refused the token in the URL (wrong token?)" if has_token
               else "needs an access token: add ?token=TOKEN to the URL")
        return Unauthorized(f"{shown}: HTTP {status}, the server {why}", url, status)
    if status in (429, 503) or status >= 500:
        text = (body or b"").decode("utf-8", "replace").strip().splitlines()[:1]
        return ConnectFailed(f"{shown}: server busy (HTTP {status}{': ' + text[0][:80] if text else ''})", url)
    return PermanentError(f"{shown}: the server refused the connection with HTTP {status}", url)


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, its causes and contexts, groups flattened, nearest first."""
    out: list[BaseException] = []
    seen: set[int] = set()
    todo = [exc]
    while todo:
        for leaf in leaves(todo.pop(0)):
            if id(leaf) not in seen:
                seen.add(id(leaf))
                out.append(leaf)
                todo.extend(x for x in (leaf.__cause__, leaf.__context__) if x is not None)
    return out


def classify(exc: BaseException, url: str) -> ClientError:
    """A ClientError for whatever connecting (or reading) raised."""
    if isinstance(exc, ClientError):
        return exc
    shown = redact_url(url)
    u = urllib.parse.urlsplit(url)
    where = u.netloc
    chain = _chain(exc)
    for e in chain:
        if isinstance(e, ConnectionRejected):
            return rejected(e.status_code, e.headers, e.body, url)
        if isinstance(e, ssl.SSLCertVerificationError):
            return UntrustedCertificate(f"{shown}: the server's certificate is not trusted ({e.verify_message}); "
                                        "pass the CA or self-signed certificate with --cafile (ssl_context= in Python)", url)
    for e in chain:
        if isinstance(e, socket.gaierror):
            return ConnectFailed(f"cannot connect to {shown}: unknown host {u.hostname!r} ({e.strerror})", url)
        if isinstance(e, ConnectionRefusedError):
            return ConnectFailed(f"cannot connect to {shown}: connection refused (is `sensorstream serve` running on {where}?)", url)
        if isinstance(e, ssl.SSLError):
            return ConnectFailed(f"cannot connect to {shown}: TLS failed ({e.reason or e}); "
                                 f"{'is the server plain ws://?' if u.scheme == 'wss' else ''}".rstrip("; "), url)
        if isinstance(e, trio.TooSlowError):
            return ConnectFailed(f"cannot connect to {shown}: no answer in time (a firewall, or not a WebSocket server?)", url)
        if isinstance(e, ConnectionClosed):
            r = e.reason
            detail = f"code {r.code}{', ' + r.reason if r and r.reason else ''}" if r is not None else "closed"
            return ConnectFailed(f"connection to {shown} lost ({detail})", url)
    for e in chain:
        if isinstance(e, OSError):
            return ConnectFailed(f"cannot connect to {shown}: {e.strerror or e}", url)
        if isinstance(e, (trio.BrokenResourceError, HandshakeError)):
            return ConnectFailed(f"connection to {shown} failed ({type(e).__name__})", url)
    return ConnectFailed(f"connection to {shown} failed ({type(exc).__name__}: {exc})", url)


class RetryReport:
    """Which failures get a line: the first one, a changed cause, and then one
    every `interval` seconds (with how many attempts failed in between). Pure:
    the caller passes the clock."""

    def __init__(self, interval: float = 10.0):
        self.interval = interval
        self.failures = 0
        self._last_at: float | None = None
        self._last_text = ""

    def failed(self, message: str, now: float) -> str | None:
        """Count a failure; the line to show for it, or None (rate-limited)."""
        self.failures += 1
        if self._last_at is None or message != self._last_text or now - self._last_at >= self.interval:
            first = self._last_at is None
            self._last_at, self._last_text = now, message
            return message if first else f"{message} (attempt {self.failures})"
        return None

    def connected(self) -> str | None:
        """A success: the line to show if failures were reported since the last one."""
        had = self.failures
        self.failures = 0
        self._last_at = None
        self._last_text = ""
        return f"connected after {had} failed attempt{'s' if had != 1 else ''}" if had else None
