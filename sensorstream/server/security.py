"""Access control and per-connection limits, sans-I/O.

Everything here is a plain function or a small class over values the front
door already has (the parsed request head, the peer address, a clock reading),
so it is tested without sockets; http.py and ws.py call it.

What each check protects is written up in docs/security.md.
"""

from __future__ import annotations

import hmac
import ipaddress
import ssl
import urllib.parse
from dataclasses import dataclass

from .. import protocol
from ..hub import is_glob


class ConfigError(ValueError):
    """A setting the server refuses to start with (the CLI exits with code 2)."""


# ----------------------------------------------------------------- start-up checks


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach. Names other than
    `localhost` are not resolved: they count as reachable from outside."""
    h = host.strip().strip("[]").lower()
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None, insecure: bool) -> None:
    """Refuse to expose an unauthenticated server beyond this machine."""
    if is_loopback(host) or token or insecure:
        return
    raise ConfigError(
        f"refusing to listen on {host!r} without a token: anyone who can reach it could read every stream. "
        "Set --token (or SENSORSTREAM_TOKEN), bind 127.0.0.1, or pass --insecure if the network is trusted."
    )


def ssl_context(certfile: str, keyfile: str | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"cannot load TLS certificate {certfile!r} / key {keyfile!r}: {e}") from None
    # Browsers and HTTP/1.1 clients only; no h2 (the front door speaks HTTP/1.1).
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


# ----------------------------------------------------------------- request checks


def headers_of(raw: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """Lower-cased names; a repeated header keeps its last value."""
    return {k.lower(): v for k, v in raw}


def token_from(target: str, headers: dict[bytes, bytes]) -> str | None:
    """The token a request presents: `Authorization: Bearer T` or `?token=T`
    (browsers cannot set headers on a WebSocket)."""
    auth = headers.get(b"authorization")
    if auth is not None:
        scheme, _, value = auth.decode("latin-1").strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return query_value(target, "token")


def query_value(target: str, name: str) -> str | None:
    """The last `name=` in a request target's query, if any."""
    query = target.partition("?")[2].partition("#")[0]
    if query:
        values = urllib.parse.parse_qs(query, keep_blank_values=True, max_num_fields=64).get(name)
        if values:
            return values[-1]
    return None


#: Where a client presents the control token (commands, docs/security.md): this
#: header, or `?control_token=T` (browsers cannot set headers on a WebSocket).
CONTROL_TOKEN_HEADER = b"sensorstream-control-token"


def control_token_from(target: str, headers: dict[bytes, bytes]) -> str | None:
    value = headers.get(CONTROL_TOKEN_HEADER)
    if value is not None and value.strip():
        return value.decode("latin-1").strip()
    return query_value(target, "control_token")


def secret_matches(given: str | None, expected: str) -> bool:
    # Constant time in the length of the expected token: a client learns nothing
    # from how long a wrong guess took.
    return given is not None and hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


def check_commands_bind(host: str, allow_commands: bool, control_token: str | None, insecure: bool) -> None:
    """Refuse to let everyone who can reach the server send bytes to its devices. The
    read token is not enough: dashboards that may watch should not all be able to act."""
    if not allow_commands or is_loopback(host) or control_token or insecure:
        return
    raise ConfigError(
        f"refusing --allow-commands on {host!r} without a control token: every client could send commands to "
        "your devices. Set --control-token (or SENSORSTREAM_CONTROL_TOKEN), bind 127.0.0.1, or pass --insecure."
    )


def token_ok(expected: str | None, target: str, headers: dict[bytes, bytes]) -> bool:
    if not expected:
        return True
    return secret_matches(token_from(target, headers), expected)


_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _origin_tuple(origin: str) -> tuple[str, str, int] | None:
    try:
        u = urllib.parse.urlsplit(origin.strip())
        port = u.port
    except ValueError:
        return None
    if u.scheme not in _DEFAULT_PORTS or not u.hostname:
        return None
    return u.scheme, u.hostname.lower(), port or _DEFAULT_PORTS[u.scheme]


def _host_tuple(host: str, scheme: str) -> tuple[str, int] | None:
    try:
        u = urllib.parse.urlsplit("//" + host.strip())
        port = u.port
    except ValueError:
        return None
    if not u.hostname:
        return None
    return u.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def origin_ok(headers: dict[bytes, bytes], allowed: tuple[str, ...] | list[str], tls: bool) -> bool:
    """Cross-site WebSocket hijacking guard.

    A browser always sends `Origin` on a WebSocket upgrade, and a page cannot
    forge it. Accepted: no Origin at all (not a browser; the token still
    applies), an Origin whose scheme, host and port are this server's own (the
    `Host` the browser connected to), or one listed in `allowed` (`*` allows any).
    """
    origin = headers.get(b"origin")
    if origin is None:
        return True
    o = origin.decode("latin-1")
    if "*" in allowed:
        return True
    ot = _origin_tuple(o)
    if ot is None:  # "null" (sandboxed frames, file://) and garbage
        return False
    for a in allowed:
        if _origin_tuple(a) == ot:
            return True
    own_scheme = "https" if tls else "http"
    host = headers.get(b"host")
    if host is None or ot[0] != own_scheme:
        return False
    return _host_tuple(host.decode("latin-1"), own_scheme) == ot[1:]


# ----------------------------------------------------------------- per-connection limits


class TokenBucket:
    """`rate` tokens a second, at most `burst` banked. The clock is passed in."""

    __slots__ = ("rate", "burst", "tokens", "t")

    def __init__(self, rate: float, burst: float, now: float):
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.t = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


#: Compiling a glob costs far more than matching one (0.3-2 ms for a long
#: pattern), so a request carries at most this many, and each costs a token.
MAX_GLOBS_PER_REQUEST = 16


def check_patterns(msg: protocol.Subscribe | protocol.Unsubscribe) -> int:
    """Raise ProtocolError for a request too costly to match; return its glob count."""
    globs = sum(1 for p in msg.streams if is_glob(p))
    if globs > MAX_GLOBS_PER_REQUEST:
        raise protocol.ProtocolError("bad_field", f"at most {MAX_GLOBS_PER_REQUEST} glob patterns per request", msg.ref)
    return globs


@dataclass
class AddressCounts:
    """Open connections per client address (for --max-connections-per-client)."""

    counts: dict[str, int]

    def __init__(self):
        self.counts = {}

    def add(self, addr: str) -> int:
        n = self.counts.get(addr, 0) + 1
        self.counts[addr] = n
        return n

    def remove(self, addr: str) -> None:
        n = self.counts.get(addr, 0) - 1
        if n > 0:
            self.counts[addr] = n
        else:
            self.counts.pop(addr, None)
