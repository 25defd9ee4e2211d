"""Which streams take commands, who may send them, and what happened: the server's view.

Sources register a :class:`DevicePort` per device (``port_for``); the server's
sessions call ``send`` with a client's command and subscribe to console lines
(``listen_console``). Everything here is synchronous and never waits.

Permissions (docs/security.md): commands are off unless the server was started
with ``--allow-commands`` or a ``--control-token``. With a control token, only a
connection that presented it may send; without one, every connection that may
read may send. Each connection has its own command rate limit and a size cap.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .. import protocol
from ..hub import Subscriber, is_glob
from .encoding import CommandError
from .port import DevicePort, Done
from .profile import Action, Poll
from .writequeue import MAX_QUEUE_BYTES

log = logging.getLogger(__name__)

#: What `send` reports to /metrics, one counter per result.
RESULTS = ("sent", "forbidden", "not_commandable", "disconnected", "too_large", "rate_limited", "bad_hex")


@dataclass(frozen=True, slots=True)
class CommandPolicy:
    enabled: bool = False  # --allow-commands or a control token
    control_token: str | None = None
    max_bytes: int = 1024  # per command
    rate: float = 10.0  # commands per second per connection
    burst: int = 20
    max_queue_bytes: int = MAX_QUEUE_BYTES  # per port


def _matcher(pattern: str) -> Callable[[str], object]:
    if is_glob(pattern):
        return re.compile(fnmatch.translate(pattern)).match
    return pattern.__eq__


class CommandRegistry:
    def __init__(self, policy: CommandPolicy = CommandPolicy()):
        self.policy = policy
        self.ports: dict[str, DevicePort] = {}
        self._listeners: dict[Subscriber, dict[str, Callable[[str], object]]] = {}
        # /metrics: commands by (stream, result), bytes written by stream.
        self.counts: dict[tuple[str, str], int] = {}

    # ---- sources

    def port_for(self, stream_id: str, *, actions: tuple[Action, ...] = (), polls: tuple[Poll, ...] = (),
                 commandable: bool = True) -> DevicePort:
        """The DevicePort of a stream (the same one again when a device is replugged)."""
        port = self.ports.get(stream_id)
        if port is None:
            port = self.ports[stream_id] = DevicePort(
                stream_id, actions=actions, polls=polls, accepts_commands=commandable and self.policy.enabled,
                max_queue_bytes=self.policy.max_queue_bytes)
            port.on_console = self._console
        return port

    # ---- sessions

    def send(self, peer: str, stream_id: str, data: bytes, done: Done, *, allowed: bool) -> None:
        """Queue a client's command; ``done`` runs once it is written. Raises CommandError."""
        port = self.ports.get(stream_id)
        try:
            if not allowed:
                why = "this server does not accept commands (start it with --allow-commands)" if not self.policy.enabled \
                    else "sending commands needs the control token (?control_token=...)"
                raise CommandError("forbidden", why)
            if port is None or not port.accepts_commands:
                raise CommandError("not_commandable", f"stream {stream_id!r} does not accept commands")
            if len(data) > self.policy.max_bytes:
                raise CommandError("too_large", f"a command is at most {self.policy.max_bytes} bytes")
            if not data:
                raise CommandError("bad_field", "an empty command")

            def written(code: str | None, n: int) -> None:
                self.count(stream_id, code or "sent")
                done(code, n)

            port.submit(data, written)
        except CommandError as e:
            self.count(stream_id, e.code)
            log.info("command from %s to %s refused: %s", peer, stream_id[:128], e.code,
                     extra={"event": "command_refused", "peer": peer, "stream": stream_id[:128], "code": e.code})
            raise
        log.info("command from %s to %s: %d bytes %r", peer, stream_id, len(data), data[:16],
                 extra={"event": "command", "peer": peer, "stream": stream_id, "bytes": len(data), "head": data[:16].hex()})

    def count(self, stream_id: str, result: str) -> None:
        # Labels only for streams that exist and results we know: clients choose
        # what they send, and must not be able to add metric series.
        if result not in RESULTS:
            result = "other"
        if stream_id not in self.ports:
            stream_id = ""
        k = (stream_id, result)
        self.counts[k] = self.counts.get(k, 0) + 1

    def listen_console(self, sub: Subscriber, patterns: Iterable[str]) -> None:
        ms = self._listeners.setdefault(sub, {})
        for p in patterns:
            ms.setdefault(p, _matcher(p))

    def unlisten_console(self, sub: Subscriber, patterns: Iterable[str]) -> None:
        ms = self._listeners.get(sub)
        if ms is not None:
            for p in patterns:
                ms.pop(p, None)
            if not ms:
                del self._listeners[sub]

    def detach(self, sub: Subscriber) -> None:
        self._listeners.pop(sub, None)

    def _console(self, port: DevicePort, lines: list[str], dropped: int) -> None:
        if port.key is None or not self._listeners:
            return
        text = None
        for sub, ms in tuple(self._listeners.items()):
            if any(m(port.stream_id) for m in ms.values()):
                if text is None:  # encoded once, for every listener
                    text = protocol.console(port.key, lines, time.time(), dropped)
                sub.notify(text)


class CommandCollector:
    """/metrics: commands by stream and result, bytes written, queued bytes, polls."""

    def __init__(self, registry: CommandRegistry):
        self.registry = registry

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        reg = self.registry
        commands = CounterMetricFamily("sensorstream_commands", "Commands from clients, by stream and result "
                                       "(sent: written to the device)", labels=["stream", "result"])
        for (stream, result), n in sorted(reg.counts.items()):
            commands.add_metric([stream, result], n)
        written = CounterMetricFamily("sensorstream_command_bytes", "Bytes written to devices (commands and polls)", labels=["stream"])
        queued = GaugeMetricFamily("sensorstream_command_queue_bytes", "Bytes waiting to be written to a device, now", labels=["stream"])
        polls = CounterMetricFamily("sensorstream_polls", "Profile [[poll]] writes, by result (skipped: device away or its queue full)",
                                    labels=["stream", "result"])
        for sid, port in sorted(reg.ports.items()):
            written.add_metric([sid], port.bytes_written)
            queued.add_metric([sid], port.queue.queued_bytes)
            if port.polls:
                polls.add_metric([sid, "sent"], port.polls_sent)
                polls.add_metric([sid, "skipped"], port.polls_skipped)
        yield from (commands, written, queued, polls)
