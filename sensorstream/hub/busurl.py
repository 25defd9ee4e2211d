"""The `--bus` URL: parsed without the Redis client, so the command line can check it."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BusURL:
    """A parsed `--bus` URL. `shown` is the URL with the password masked: the only
    form that may reach a log line, /healthz or /metrics."""

    cluster: bool
    tls: bool
    nodes: tuple[tuple[str, int], ...]
    db: int
    username: str | None
    password: str | None = field(repr=False)
    ca_certs: str | None
    verify: bool
    shown: str

    def __repr__(self) -> str:
        return f"BusURL({self.shown!r})"


def parse_bus_url(url: str) -> BusURL:
    """redis://[user:pass@]host[:port][/db], rediss://... (TLS),
    redis+cluster://[user:pass@]h1:p1,h2:p2 (and rediss+cluster://).
    TLS options as query: ?ca=/path/ca.pem, ?verify=no. Raises ValueError."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        raise ValueError("the bus URL must start with redis://, rediss://, redis+cluster:// or rediss+cluster://")
    rest, _, query = rest.partition("?")
    rest, _, path = rest.partition("/")
    userinfo, at, hosts = rest.rpartition("@")
    username = password = None
    if at:
        u, colon, p = userinfo.partition(":")
        username = urllib.parse.unquote(u) or None
        password = urllib.parse.unquote(p) if colon else None
        if not colon:  # redis://secret@host: the lone part is the password
            username, password = None, urllib.parse.unquote(u)
    nodes = []
    for part in hosts.split(","):
        host, colon, port = part.rpartition(":") if part.count(":") == 1 or part.startswith("[") else (part, "", "")
        host = host.strip("[]")
        if not host:
            raise ValueError(f"no host in the bus URL ({scheme}://...)")
        try:
            p = int(port) if colon else 6379
        except ValueError:
            raise ValueError(f"the port in the bus URL must be a number, not {port!r}") from None
        if not 0 < p < 65536:
            raise ValueError(f"the port in the bus URL must be 1..65535, not {p}")
        nodes.append((host, p))
    cluster = scheme.endswith("+cluster")
    if len(nodes) > 1 and not cluster:
        raise ValueError("several hosts need redis+cluster:// (or rediss+cluster://)")
    db = 0
    if path:
        if cluster:
            raise ValueError("a Redis Cluster has no database number: drop the /N from the bus URL")
        try:
            db = int(path)
        except ValueError:
            raise ValueError(f"the database in the bus URL must be a number, not {path!r}") from None
    q = urllib.parse.parse_qs(query)
    verify = (q.get("verify") or ["yes"])[0].lower() not in ("no", "false", "0", "none")
    masked = f"{username or ''}:***@" if password is not None else (f"{username}@" if username else "")
    shown = f"{scheme}://{masked}{hosts}" + (f"/{path}" if path else "")
    return BusURL(cluster, scheme.startswith("rediss"), tuple(nodes), db, username, password,
                  (q.get("ca") or [None])[0], verify, shown)
