"""A trio client for the v1 wire contract.

    async with open_client("ws://127.0.0.1:8765/ws", ["sim/*"]) as client:
        async for batch in client:
            info = client.streams[batch.key]
            print(info.id, batch.seq, batch.values.shape)

It subscribes, decodes binary frames into numpy views, keeps the catalog up
to date, and when the connection drops it reconnects with capped exponential
backoff and subscribes again with a resume point per stream it has seen: the
(epoch, seq) of the last batch it got (protocol.md, "Resume"). The server
replays what came after, so a reconnect shows up as neither a gap nor a
duplicate; when it cannot (the server restarted, the client was away longer
than history), `events()` yields a `Gap` saying how many batches are lost
(when the server knows), and the stream continues live. Batches the server
dropped for a slow client are reported the same way.

Stream keys belong to one connection: resume points are kept by stream id,
and `client.streams` is refreshed from every hello.

A background task drains the socket all the time, which is what keeps
trio-websocket answering the server's pings while the caller is busy.

Commands (docs/protocol.md, "Commands"): `await client.send_command("serial/x",
text="LED 1")` returns once the server wrote the bytes to the device, or raises
`CommandRefused` with the server's code (forbidden, disconnected, ...). A server
started with `--control-token` needs `control_token=` here. `console=True`
subscribes to the devices' raw lines too (`console` messages in `events()`).
"""

from __future__ import annotations

import collections
import logging
import ssl
import urllib.parse
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Iterable

import trio
import trio_websocket
from trio_websocket import ConnectionClosed

from . import excgroups, protocol
from .client_errors import (  # noqa: F401  (re-exported: `from sensorstream.client import Unauthorized`)
    BadURL, ClientError, ConnectFailed, NotFound, NotSensorstream, PermanentError, RetryReport, UnknownStream, Unauthorized,
    UntrustedCertificate, redact_url, classify, normalize_url,
)
from .protocol import Batch, StreamInfo

log = logging.getLogger(__name__)

MAX_ERRORS_KEPT = 100
#: The header a client presents its control token in (or `?control_token=` in the URL).
CONTROL_TOKEN_HEADER = "sensorstream-control-token"


class CommandRefused(Exception):
    """The server did not send a command: `code` is its error code (forbidden, not_commandable,
    disconnected, too_large, rate_limited, bad_hex, ...)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Gap:
    """Batches of one stream this client will never get.

    reason: "epoch_changed" (the server lost that stream's history: a restart),
    "too_old" (away longer than the server's history), "unavailable" (the
    server's bus was down), or "dropped" (the server dropped them for a slow
    client). `batches` is None when the server cannot know (an epoch change
    with no link to the old one)."""

    stream: str
    key: int
    batches: int | None
    reason: str


@dataclass
class ClientState:
    session: str | None = None
    heartbeat_s: float | None = None
    connects: int = 0
    last_seq: dict[int, int] = field(default_factory=dict)
    # stream id -> (epoch, last seq received): what a reconnect resumes from.
    resume: dict[str, tuple[str, int]] = field(default_factory=dict)
    dropped: dict[int, int] = field(default_factory=dict)
    gaps: int = 0  # Gap events, and the batches they counted
    lost: int = 0
    # The newest server errors (a long-lived client must not keep them all).
    errors: collections.deque[dict[str, Any]] = field(default_factory=lambda: collections.deque(maxlen=MAX_ERRORS_KEPT))


class Client:
    def __init__(self, url: str, streams: Iterable[str], *, history_s: float = 0.0, reconnect: bool = True,
                 backoff_min: float = 0.5, backoff_max: float = 5.0, buffer: int = 4096,
                 ssl_context: "ssl.SSLContext | None" = None, connect_timeout: float = 10.0, report_interval: float = 10.0,
                 control_token: str | None = None, console: bool = False):
        self.url = normalize_url(url)  # raises BadURL
        self.patterns = list(streams)
        self.history_s = history_s
        self.reconnect = reconnect
        self.backoff_min, self.backoff_max = backoff_min, backoff_max
        self.ssl_context = ssl_context  # for wss:// with a private CA or a self-signed certificate
        self.connect_timeout = connect_timeout
        self.last_error: ClientError | None = None  # the newest failure (retried or not)
        self._report = RetryReport(report_interval)
        self.control_token = control_token
        self.console = console
        self._commands: dict[str, list] = {}  # ref -> [Event, reply] of commands awaiting their answer
        self._next_ref = 0
        self.streams: dict[int, StreamInfo] = {}
        self.state = ClientState()
        self.connected = trio.Event()
        self._send, self._recv = trio.open_memory_channel[Batch | Gap | dict](buffer)
        self._ws: trio_websocket.WebSocketConnection | None = None

    # ------------------------------------------------------------------ consuming

    def __aiter__(self) -> AsyncIterator[Batch]:
        return self.batches()

    async def batches(self) -> AsyncIterator[Batch]:
        async for item in self.events():
            if isinstance(item, Batch):
                yield item

    async def events(self) -> AsyncIterator[Batch | Gap | dict]:
        """Batches, gaps and control messages (dicts) in arrival order."""
        async for item in self._recv:
            yield item

    async def send(self, text: str) -> None:
        if self._ws is None:
            raise ConnectionClosed(None)
        await self._ws.send_message(text)

    async def send_command(self, stream: str, *, text: str | None = None, hex: str | None = None, eol: str = "lf") -> int:
        """Send `text` (with line ending `eol`: none, lf, cr, crlf) or `hex` to a stream's
        device; the number of bytes written, once the server wrote them. Raises
        CommandRefused, or ConnectionClosed if the connection drops first."""
        self._next_ref += 1
        ref = f"cmd-{self._next_ref}"
        text_msg = protocol.command(stream, text=text, hex=hex, eol=eol, ref=ref)
        waiter = self._commands[ref] = [trio.Event(), None]
        try:
            await self.send(text_msg)
            await waiter[0].wait()
        finally:
            del self._commands[ref]
        reply = waiter[1]
        if reply is None:
            raise ConnectionClosed(None)
        if reply["type"] == "error":
            raise CommandRefused(str(reply.get("code")), str(reply.get("message")))
        return int(reply["bytes"])

    def _answer(self, m: dict) -> bool:
        """A command_sent or error for a command awaiting its answer: True if it was one."""
        ref = m.get("ref")
        if ref is None and m["type"] == "error":
            # Refused before it was read (the connection's control-message rate
            # limit): no ref to match, so it answers the oldest command waiting.
            ref = next((r for r, w in self._commands.items() if w[1] is None), None)
        waiter = self._commands.get(ref) if isinstance(ref, str) else None
        if waiter is None:
            return False
        waiter[1] = m
        waiter[0].set()
        return True

    # ------------------------------------------------------------------ connection loop

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Connect, subscribe and read, reconnecting with backoff. A failure that
        retrying cannot fix (PermanentError: a bad URL, 404, 401/403, an untrusted
        certificate, not a sensorstream server, an unknown stream id) is raised;
        the others are logged (the first, then one every `report_interval` s) and retried."""
        delay = self.backoff_min
        started = False
        # Closed without a checkpoint: a cancellation there would replace the error being raised.
        try:
            while True:
                try:
                    with excgroups.unwrapped():
                        async with trio.open_nursery() as conn_nursery:
                            ws = await self._open(conn_nursery)
                            try:
                                self._ws = ws
                                self.state.connects += 1
                                delay = self.backoff_min
                                await self._subscribe(ws)
                                if not started:
                                    started = True
                                    task_status.started()
                                await self._pump(ws)
                            finally:
                                conn_nursery.cancel_scope.cancel()
                except Exception as e:
                    err = classify(e, self.url)
                    self.last_error = err
                    if isinstance(err, PermanentError):
                        raise err from None
                    line = self._report.failed(err.message, trio.current_time())
                    if line is not None and self.reconnect:
                        log.warning("%s; retrying in %.1f s", line, delay)
                    if not self.reconnect:
                        if not started:
                            raise err from None
                        return
                finally:
                    self._ws = None
                    self.connected = trio.Event()
                    for waiter in self._commands.values():  # no answer will come on this connection
                        waiter[0].set()
                await trio.sleep(delay)
                delay = min(delay * 2, self.backoff_max)
        finally:
            self._send.close()

    async def _open(self, nursery: trio.Nursery) -> trio_websocket.WebSocketConnection:
        """TCP, TLS and the WebSocket handshake, each step's failure its own error.

        The TLS handshake is done here, not inside trio-websocket, which would
        report a certificate it does not trust as a 60 s handshake timeout."""
        u = urllib.parse.urlsplit(self.url)
        tls = u.scheme == "wss"
        port = u.port or (443 if tls else 80)
        host = u.hostname or ""
        with trio.fail_after(self.connect_timeout):
            stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
            try:
                if tls:
                    ctx = self.ssl_context or ssl.create_default_context()
                    stream = trio.SSLStream(stream, ctx, server_hostname=host, https_compatible=True)
                    await stream.do_handshake()
                name = f"[{host}]" if ":" in host else host
                ws = await trio_websocket.wrap_client_stream(
                    nursery, stream, name if port == (443 if tls else 80) else f"{name}:{port}",
                    u.path + (f"?{u.query}" if u.query else ""),
                    extra_headers=[(CONTROL_TOKEN_HEADER.encode(), self.control_token.encode())] if self.control_token else None,
                )
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
        line = self._report.connected()
        if line is not None:
            log.warning("%s: %s", redact_url(self.url), line)
        return ws

    async def _subscribe(self, ws) -> None:
        # A stream seen before resumes where it stopped; any other gets the history
        # asked for (the server applies one or the other per stream).
        if not self.patterns:
            return  # a client that only sends commands (`sensorstream send`)
        await ws.send_message(protocol.subscribe(self.patterns, ref="sub", history_s=self.history_s,
                                                 resume=dict(self.state.resume) or None, console=self.console))

    async def _gap(self, stream: str, key: int, batches: int | None, reason: str) -> None:
        self.state.gaps += 1
        self.state.lost += batches or 0
        log.info("client: %s lost %s batches (%s)", stream, "?" if batches is None else batches, reason)
        await self._send.send(Gap(stream, key, batches, reason))

    async def _pump(self, ws) -> None:
        await self._hello(ws)
        while True:
            msg = await ws.get_message()
            if isinstance(msg, bytes):
                batch = protocol.decode_batch(msg)
                info = self.streams.get(batch.key)
                if info is not None:
                    point = self.state.resume.get(info.id)
                    if point is not None and point[0] == info.epoch and batch.seq <= point[1]:
                        continue  # seen already (a replay overlapping what we had)
                    self.state.resume[info.id] = (info.epoch, batch.seq)
                self.state.last_seq[batch.key] = batch.seq
                await self._send.send(batch)
                continue
            m = protocol.parse_server_message(msg)
            kind = m["type"]
            answered = kind in ("command_sent", "error") and bool(self._commands) and self._answer(m)
            if kind == "stream":
                info = StreamInfo.from_json(m["stream"])
                old = self.streams.get(info.key)
                self.streams[info.key] = info
                point = self.state.resume.get(info.id)
                if point is not None and point[0] != info.epoch and old is not None and old.epoch == point[0]:
                    # The server lost this stream's history while we were connected
                    # (its bus restarted empty): seqs go on, what we missed comes as
                    # `dropped`; keep our place under the new epoch.
                    self.state.resume[info.id] = (info.epoch, point[1])
            elif kind == "stream_removed":
                key = m["key"]
                self.streams.pop(key, None)
                for per_key in (self.state.last_seq, self.state.dropped):
                    per_key.pop(key, None)
            elif kind == "subscribed":
                if m.get("ref") == "sub" and not m.get("keys"):
                    have = ", ".join(sorted(i.id for i in self.streams.values())[:20]) or "none yet"
                    log.warning("no stream matches %s yet; waiting for one (streams now: %s)", " ".join(self.patterns), have)
                await self._send.send(m)
                for sid, r in (m.get("resumed") or {}).items():
                    key = next((k for k, i in self.streams.items() if i.id == sid), -1)
                    if not r.get("recovered"):
                        await self._gap(sid, key, r.get("lost"), str(r.get("reason", "")))
                        info = self.streams.get(key)
                        if info is not None:  # what comes now is this epoch's, live
                            self.state.resume.pop(sid, None)
                continue
            elif kind == "dropped":
                self.state.dropped[m["key"]] = self.state.dropped.get(m["key"], 0) + m["batches"]
                await self._send.send(m)
                info = self.streams.get(m["key"])
                await self._gap(info.id if info else f"key{m['key']}", m["key"], m["batches"], "dropped")
                continue
            elif kind == "error" and not answered:  # a command's refusal is its caller's to report
                self.state.errors.append(m)
                if m.get("ref") == "sub" and m.get("code") == "unknown_stream":
                    have = ", ".join(sorted(i.id for i in self.streams.values())[:20]) or "none"
                    raise UnknownStream(f"{m.get('message')} on {redact_url(self.url)} (streams: {have}; globs such as 'sim/*' also match streams added later)", self.url)
                log.warning("server error: %s %s", m.get("code"), m.get("message"))
            await self._send.send(m)

    async def _hello(self, ws) -> None:
        """The first message must be a sensorstream hello: anything else is another server."""
        msg = await ws.get_message()
        m = None
        if isinstance(msg, str):
            try:
                m = protocol.parse_server_message(msg)
            except ValueError:
                m = None
        if m is None or m.get("type") != "hello" or not isinstance(m.get("streams"), list):
            raise NotSensorstream(f"{redact_url(self.url)} speaks WebSocket but is not a sensorstream server (its first message was not a hello)", self.url)
        self.state.session = m.get("session")
        self.state.heartbeat_s = m.get("heartbeat_s")
        self.streams = {s["key"]: StreamInfo.from_json(s) for s in m["streams"]}
        self.state.last_seq.clear()  # keys belong to the connection
        self.connected.set()
        await self._send.send(m)


@asynccontextmanager
async def open_client(url: str, streams: Iterable[str] = ("*",), **kwargs) -> AsyncIterator[Client]:
    """Connect (waiting for the first connection) and run the client until the block ends.

    Raises a PermanentError (BadURL, NotFound, Unauthorized, UntrustedCertificate,
    NotSensorstream, UnknownStream) when retrying cannot help; waits, retrying and
    logging, while the server cannot be reached. KeyboardInterrupt, trio.Cancelled
    and the errors above come out as themselves, not wrapped in an exception group,
    so `except KeyboardInterrupt:` in a script works."""
    client = Client(url, streams, **kwargs)
    with excgroups.unwrapped():
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            try:
                yield client
            finally:
                nursery.cancel_scope.cancel()
