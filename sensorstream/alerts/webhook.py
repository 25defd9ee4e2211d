"""`--alert-webhook URL`: POST every alert transition as JSON, off the data path.

`offer` is synchronous and never waits: it puts the transition into a bounded
queue, or counts it as dropped when the queue is full (a receiver that is down
or hangs must cost the data path nothing, and memory stays bounded). One task
delivers the queue in order: each POST has a deadline, a failure (connection
refused, timeout, non-2xx) is retried with exponential backoff, and a
transition that fails every attempt is given up, counted and logged.

The HTTP client is h11 over a trio stream (TLS for https://), so there is no
extra dependency and every byte has a timeout we chose.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11
import trio

from .. import __version__

log = logging.getLogger(__name__)


class WebhookURLError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str
    port: int
    target: str  # path and query
    host_header: str


def parse_url(url: str) -> Target:
    """http(s)://host[:port]/path -> Target, or WebhookURLError with the reason."""
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError as e:
        raise WebhookURLError(f"--alert-webhook {url!r}: {e}") from None
    if u.scheme not in ("http", "https") or not u.hostname:
        raise WebhookURLError(f"--alert-webhook {url!r}: expected http://HOST[:PORT]/PATH or https://...")
    port = port or (443 if u.scheme == "https" else 80)
    target = (u.path or "/") + (f"?{u.query}" if u.query else "")
    return Target(u.scheme, u.hostname, port, target, u.netloc.rpartition("@")[2])


@dataclass
class WebhookStats:
    sent: int = 0  # transitions delivered (2xx)
    failed: int = 0  # attempts that failed (each retry counts)
    given_up: int = 0  # transitions that failed every attempt
    dropped: int = 0  # transitions not queued: the queue was full


async def post_json(t: Target, body: bytes, ssl_context: ssl.SSLContext | None = None) -> int:
    """One POST; returns the status code. The caller bounds it with a deadline."""
    stream: trio.abc.Stream = await trio.open_tcp_stream(t.host, t.port)
    try:
        if t.scheme == "https":
            stream = trio.SSLStream(stream, ssl_context or ssl.create_default_context(), server_hostname=t.host)
        conn = h11.Connection(our_role=h11.CLIENT)
        head = h11.Request(method="POST", target=t.target, headers=[
            ("Host", t.host_header), ("User-Agent", f"sensorstream/{__version__}"),
            ("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("Connection", "close"),
        ])
        await stream.send_all(conn.send(head) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
        status = None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(16384)
                conn.receive_data(data)  # b"" is EOF: h11 then reports it (or a protocol error)
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
        if status is None:
            raise h11.RemoteProtocolError("no response")
        return status
    finally:
        await trio.aclose_forcefully(stream)


class Webhook:
    def __init__(self, url: str, *, queue: int = 256, attempts: int = 5, timeout: float = 5.0,
                 backoff: float = 0.5, backoff_max: float = 30.0, ssl_context: ssl.SSLContext | None = None):
        self.url = url
        self.target = parse_url(url)
        self.attempts = attempts
        self.timeout = timeout
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.ssl_context = ssl_context
        self.stats = WebhookStats()
        self._send, self._receive = trio.open_memory_channel[bytes](queue)
        self._last_drop_log = 0.0

    def offer(self, payload: dict) -> None:
        """Queue one transition; never waits."""
        try:
            self._send.send_nowait(json.dumps(payload, separators=(",", ":")).encode())
        except trio.WouldBlock:
            self.stats.dropped += 1
            now = time.monotonic()
            if now - self._last_drop_log >= 5.0:  # one line per 5 s, not one per transition
                self._last_drop_log = now
                log.warning("alert webhook %s: queue full, %d transitions dropped so far", self.url, self.stats.dropped,
                            extra={"event": "webhook_dropped", "dropped": self.stats.dropped})

    async def run(self) -> None:
        async with self._receive:
            async for body in self._receive:
                await self._deliver(body)

    async def _deliver(self, body: bytes) -> None:
        for attempt in range(self.attempts):
            if attempt:
                await trio.sleep(min(self.backoff_max, self.backoff * 2 ** (attempt - 1)))
            try:
                with trio.fail_after(self.timeout):
                    status = await post_json(self.target, body, self.ssl_context)
                if 200 <= status < 300:
                    self.stats.sent += 1
                    return
                why = f"HTTP {status}"
            except trio.TooSlowError:
                why = f"no answer within {self.timeout:g} s"
            except (OSError, trio.BrokenResourceError, h11.ProtocolError) as e:
                why = f"{type(e).__name__}: {e}"
            self.stats.failed += 1
            log.warning("alert webhook %s: attempt %d/%d failed (%s)", self.url, attempt + 1, self.attempts, why,
                        extra={"event": "webhook_failed", "attempt": attempt + 1, "reason": why})
        self.stats.given_up += 1
        log.error("alert webhook %s: gave up on a transition after %d attempts", self.url, self.attempts,
                  extra={"event": "webhook_gave_up"})
