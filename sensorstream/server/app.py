"""The server: owns the hub, the sources, the listener and every connection.

Task tree (every task has an owner, and shutdown walks it top-down):

    Server.run
    ├── sources            (simulators, serial ports)   -> hub.publish
    ├── listener           (trio.serve_tcp)             -> spawns into `connections`
    ├── keeper             (pings and heartbeats for every session: one task, one heap)
    ├── tick               (one write per client per tick: ws/tick.py)
    └── connections        (one task per TCP connection)
        └── handle_http -> handle_websocket -> ClientSession.run (the session's reader)
            └── sender task    (in the connection's own nursery, only while the
                                client has frames queued: a healthy client is
                                written to directly by the hub and keeper)
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from pathlib import Path
from typing import Callable

import trio

from .. import protocol
from ..alerts.monitor import AlertCollector, AlertMonitor
from ..alerts.webhook import Webhook
from ..commands.registry import CommandCollector, CommandPolicy, CommandRegistry
from ..config import ServerConfig
from ..hub import Hub, HubLimits, open_hub
from ..recording.writer import recorder_for
from ..sources.setup import Source
from ..sources.supervisor import SourceStreams, supervise
from ..staleness import StalenessWatcher
from ..sources.setup import alert_rules
from ..sources.setup import from_config as sources_from_config
from . import export
from .http import HttpContext, StaticFiles, Upgrade, dashboard_dir, handle_http
from .metrics import ServerStats, make_registry, render
from .tcp import TcpStream, as_trio_stream, detach_listeners, serve_tcp
from .security import AddressCounts, ConfigError, check_bind, check_commands_bind, ssl_context
from .ws import ClientSession, Framer, Keeper, ServerConnection, SessionContext, rights_for

log = logging.getLogger(__name__)


def _peer(stream: TcpStream) -> tuple[str, str]:
    """("host:port", "host") of the client."""
    try:
        host, port = stream.address[:2]
        return f"{host}:{port}", host
    except (TypeError, ValueError):
        return "?", "?"


#: The listen queue asked for: as deep as Linux takes (it caps it at
#: net.core.somaxconn, 4,096 by default), so a reconnect storm of thousands of
#: clients waits in the queue instead of being refused or retried by the kernel.
LISTEN_BACKLOG = 65535

#: Connections refused with a 503/429 are answered (that needs their request
#: head, read under a short timeout); beyond this many at once, they are just closed.
MAX_REFUSING = 64


class Server:
    def __init__(self, cfg: ServerConfig, hub: Hub | None = None):
        self.cfg = cfg
        # Refuse unsafe settings before anything starts (the CLI turns this into exit code 2).
        check_bind(cfg.host, cfg.token, cfg.insecure)
        check_commands_bind(cfg.host, cfg.allow_commands, cfg.control_token, cfg.insecure)
        self.ssl_context = ssl_context(cfg.certfile, cfg.keyfile) if cfg.certfile else None
        self.hub = hub or self._open_hub(cfg)
        self.stats = ServerStats()
        self.queue_bytes = int(cfg.queue_mb * 1024 * 1024)  # per client (ClientSession.deliver)
        self.started_wall = time.time()
        self.static = StaticFiles(Path(cfg.dashboard_dir) if cfg.dashboard_dir else dashboard_dir())
        self.registry = make_registry(self)
        # Alerts watch every stream through the hub (docs/alerts.md): --config's rules and the profiles'.
        self.alerts = AlertMonitor(self.hub, alert_rules(cfg), webhook=Webhook(cfg.alert_webhook) if cfg.alert_webhook else None)
        self.registry.register(AlertCollector(self.alerts))
        # Stream statuses that tell the truth: stale when quiet, failed when its source died.
        self.staleness = StalenessWatcher(self.hub, cfg.window_s)
        self.hub.add_observer(SourceStreams())
        self.sessions: set[ClientSession] = set()
        self.keeper = Keeper(cfg.ping_interval, cfg.ping_timeout, cfg.heartbeat_s)
        self.commands = CommandRegistry(CommandPolicy(
            enabled=cfg.allow_commands or bool(cfg.control_token), control_token=cfg.control_token or None,
            max_bytes=cfg.max_command_bytes, rate=cfg.command_rate, burst=cfg.command_burst,
            max_queue_bytes=cfg.command_queue_bytes))
        self.registry.register(CommandCollector(self.commands))
        self.ws_context = SessionContext(cfg, self.hub, self.stats, self.keeper, Framer(), self.queue_bytes, self.alerts,
                                         commands=self.commands)
        self.http_context = HttpContext(cfg, self.stats, self.static, self.ssl_context is not None, self.health,
                                        self.metrics_text, self._websocket, functools.partial(export.respond, self.hub))
        self.sources: list[Source] = []
        self.port: int | None = None
        self._open_connections = 0
        self._refusing = 0
        self._per_address = AddressCounts()
        # WebSocket connections not yet fully closed (close handshake included): what
        # shutdown waits for. Idle HTTP keep-alive connections (a browser keeps the
        # page's) are not waited for; cancelling the nursery ends them.
        self._websockets = 0
        self._no_websockets = trio.Event()
        self._no_websockets.set()
        self._listen_scope = trio.CancelScope()
        self._shutting_down = False
        self._changed: trio.Event | None = None  # see _sessions_changed
        # The nursery of the server's own tasks (sources, keeper...) and of every
        # connection's; run() sets it (a test driving connections itself sets its own).
        self.nursery: trio.Nursery | None = None
        for source in sources_from_config(self.hub, cfg, self.commands):
            self.add_source(source)
        # Another consumer of the hub (docs/recording.md).
        self.recorder = recorder_for(cfg, self.hub)
        self.replay = None

    @staticmethod
    def _open_hub(cfg: ServerConfig) -> Hub:
        limits = HubLimits(history_s=cfg.history_s, history_bytes=int(cfg.history_mb * 1024 * 1024))
        if not cfg.bus:
            return open_hub(None, limits)
        try:
            return open_hub(cfg.bus, limits, ttl_s=cfg.bus_ttl_s, outbox_bytes=int(cfg.bus_outbox_mb * 1024 * 1024),
                            cafile=cfg.bus_cafile)
        except ValueError as e:
            raise ConfigError(f"--bus: {e}") from None

    # ------------------------------------------------------------------ sources

    def use_replay(self, replay) -> None:
        """Serve `replay` (sources/replay.py): a source that also takes `playback` messages."""
        self.replay = replay
        # (At speed 0 it publishes as fast as the clients read: sources/pacing.py.)
        self.ws_context = dataclasses.replace(self.ws_context, replay=replay, backlog_changed=replay.backlog_changed)
        self.add_source(replay.run)

    def add_source(self, source: Source) -> None:
        self.sources.append(source)

    # ------------------------------------------------------------------ lifecycle

    async def _run_source(self, source: Source) -> None:
        """Every source runs under the supervisor (sources/supervisor.py): one that
        fails marks its streams `failed`, is logged and counted, and is restarted with
        backoff; the server and the other sources go on."""
        await supervise(self.hub, source, on_failure=self._source_failed)

    def _source_failed(self) -> None:
        self.stats.source_failures_total += 1

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            await nursery.start(self.hub.run)  # the bus connection, if any, before sources publish
            if self.recorder is not None:
                # Before the sources, so the recording starts with their first batch.
                await nursery.start(self.recorder.run)
            for source in self.sources:
                nursery.start_soon(self._run_source, source)
            # Opened here (a taken port fails before anything is served) and served in a
            # task that _listen_scope covers, so shutdown() really stops accepting.
            listeners = await trio.open_tcp_listeners(self.cfg.port, host=self.cfg.host, backlog=LISTEN_BACKLOG)
            self.port = listeners[0].socket.getsockname()[1]
            nursery.start_soon(self._accept, detach_listeners(listeners), nursery)
            nursery.start_soon(self._log_drops)
            nursery.start_soon(self.keeper.run)
            nursery.start_soon(self.ws_context.tick.run)
            nursery.start_soon(self.alerts.run)
            nursery.start_soon(self.staleness.run)
            log.info("listening on %s://%s:%d/", "https" if self.ssl_context else "http", self.cfg.host, self.port,
                     extra={"event": "listening", "port": self.port, "tls": bool(self.ssl_context), "token": bool(self.cfg.token)})
            task_status.started(self.port)

    async def _accept(self, socks, nursery: trio.Nursery) -> None:
        with self._listen_scope:  # cancelling it closes the listening sockets (tcp.serve_tcp)
            await serve_tcp(self._handle_tcp, socks, nursery, on_capacity=self._out_of_capacity)

    def _out_of_capacity(self, errno_name: str) -> None:
        # accept() failed for want of descriptors or memory: counted like a refusal.
        self.stats.reject("accept_" + errno_name.lower())

    async def shutdown(self) -> None:
        """Stop accepting (listeners closed first: a dashboard reconnecting at once is
        refused, not served and closed again), close every client with 1001, then
        stop the sources."""
        self._shutting_down = True
        self._listen_scope.cancel()
        for s in list(self.sessions):
            s.stop("server shutting down", 1001)
        with trio.move_on_after(self.cfg.close_timeout + 1.0):
            await self._no_websockets.wait()
        if self.nursery is not None:
            self.nursery.cancel_scope.cancel()

    # ------------------------------------------------------------------ connections

    def _sessions_changed(self) -> None:
        # Made only when someone waits (wait_sessions): not twice per connection.
        ev, self._changed = self._changed, None
        if ev is not None:
            ev.set()

    async def wait_sessions(self, predicate: Callable[[set[ClientSession]], bool]) -> None:
        """Wait until predicate(sessions) holds; re-checked whenever a session opens or closes."""
        while not predicate(self.sessions):
            if self._changed is None:
                self._changed = trio.Event()
            await self._changed.wait()

    async def _handle_tcp(self, stream: TcpStream) -> None:
        if self._shutting_down:  # accepted in the instant before the listener closed
            await trio.aclose_forcefully(stream)
            return
        cfg = self.cfg
        peer, address = _peer(stream)
        refuse = None
        if self._open_connections >= cfg.max_connections:
            refuse = (503, "max_connections", "too many connections")
        elif self._per_address.counts.get(address, 0) >= cfg.max_connections_per_client:
            refuse = (429, "max_connections_per_client", "too many connections from your address")
        if refuse is not None:
            self.stats.reject(refuse[1])
            log.warning("refusing %s: %s", peer, refuse[1], extra={"event": "refused", "peer": peer, "reason": refuse[1]})
            if self._refusing >= MAX_REFUSING:
                await trio.aclose_forcefully(stream)
                return
            self._refusing += 1
            try:
                # Answered, not just closed, so a browser shows why; the request
                # head gets a short deadline of its own.
                with trio.move_on_after(min(cfg.handshake_timeout, 2.0)):
                    tls = await self._start_tls(stream, peer)
                    if tls is not None:
                        await handle_http(self.http_context, tls, peer, refuse=refuse[::2])
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            except Exception:
                log.exception("connection %s failed", peer)
            finally:
                self._refusing -= 1
                await trio.aclose_forcefully(stream)
            return
        self._open_connections += 1
        self.stats.tcp_connections_open += 1
        self._per_address.add(address)
        conn: trio.abc.Stream = stream
        try:
            tls = await self._start_tls(stream, peer)
            if tls is not None:
                conn = tls
                await handle_http(self.http_context, conn, peer)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            # A bug in one connection must not take the server (or anyone else) down.
            log.exception("connection %s failed", peer)
        finally:
            await trio.aclose_forcefully(conn)
            self._per_address.remove(address)
            self.stats.tcp_connections_open -= 1
            self._open_connections -= 1

    async def _start_tls(self, stream: TcpStream, peer: str) -> trio.abc.Stream | None:
        """The stream to speak HTTP on: the TCP stream itself, or TLS around it
        once the TLS handshake is done (within the handshake timeout). None: it failed."""
        if self.ssl_context is None:
            return stream
        tls = trio.SSLStream(as_trio_stream(stream), self.ssl_context, server_side=True, https_compatible=True)
        try:
            with trio.fail_after(self.cfg.handshake_timeout):
                await tls.do_handshake()
        except trio.TooSlowError:
            self.stats.reject("tls_timeout")
            log.info("tls %s: handshake not complete within %gs", peer, self.cfg.handshake_timeout, extra={"event": "refused", "peer": peer, "reason": "tls_timeout"})
            return None
        except trio.BrokenResourceError as e:
            # Plain HTTP on the TLS port, a client that does not trust our
            # certificate, a scanner...
            self.stats.reject("tls_failed")
            log.info("tls %s: handshake failed (%s)", peer, e.__cause__ or e, extra={"event": "refused", "peer": peer, "reason": "tls_failed"})
            return None
        return tls

    async def _websocket(self, up: Upgrade) -> None:
        """handle_websocket, counted until its close handshake is over (for shutdown)."""
        self._websockets += 1
        if self._websockets == 1:
            self._no_websockets = trio.Event()
        try:
            await self.handle_websocket(up)
        finally:
            self._websockets -= 1
            if self._websockets == 0:
                self._no_websockets.set()

    async def handle_websocket(self, up: Upgrade) -> None:
        """The WebSocket life of a connection whose upgrade the front door accepted."""
        cfg = self.cfg
        peer = up.peer
        conn = ServerConnection(up.stream, trailing=up.trailing, preface=up.response, max_message_bytes=cfg.max_message_bytes)
        rights = rights_for(self.commands, up.control_token)
        del up
        session = ClientSession(self.ws_context, conn, peer)
        session.control = rights
        self.sessions.add(session)
        self.stats.connections_total += 1
        self.stats.connections_open += 1
        self._sessions_changed()
        # Debug: the close line says all of a connection (its life included), and a
        # line per open is a tenth of what a reconnect storm costs the server.
        log.debug("ws %s: open (session %s)", peer, session.id, extra={"event": "ws_open", "peer": peer, "session": session.id})
        opened = trio.current_time()
        try:
            # The session's sender task, when it needs one, runs in the server's
            # nursery (a nursery per connection cost ~5 % of a handshake); run()
            # does not return before that task has ended.
            await session.run(self.nursery)
        finally:
            self.sessions.discard(session)
            self.stats.connections_open -= 1
            code = session.close_code
            self.stats.close(code)
            self._sessions_changed()
            # Dead or stuck peers get no close handshake: it would only wait.
            if not session.abort and conn.closed is None:
                with trio.move_on_after(cfg.close_timeout):
                    await conn.aclose(code, session.close_reason[:120])
            elif not session.abort and not conn.closed.by_peer:
                # We failed it (1002, 1007, 1009): our close frame must reach the peer.
                with trio.move_on_after(cfg.close_timeout):
                    await conn.linger()
            life = trio.current_time() - opened
            log.info("ws %s: closed (%s, code %d, %d frames sent, open %.1f s)", peer, session.close_reason, code, session.frames_sent, life,
                     extra={"event": "ws_close", "peer": peer, "session": session.id, "reason": session.close_reason,
                            "code": code, "frames_sent": session.frames_sent, "open_s": round(life, 3)})

    async def _log_drops(self, every: float = 1.0) -> None:
        """Drops are counted on the hot path; this logs them, at most one line a second."""
        last = self.stats.dropped_batches_total
        while True:
            await trio.sleep(every)
            now = self.stats.dropped_batches_total
            if now != last:
                log.warning("dropped %d batches for slow clients in the last %gs (%d in all)", now - last, every, now,
                            extra={"event": "dropped", "batches": now - last, "total": now})
                last = now

    # ------------------------------------------------------------------ health and metrics

    def health(self) -> tuple[int, dict]:
        now = time.time()
        streams = []
        unhealthy = []
        for info in self.hub.catalog():
            st = self.hub.stats(info.key)
            age = None if st.last_batch_wall is None else round(now - st.last_batch_wall, 3)
            since = now - st.status_since
            # stale and failed at once; disconnected (or anything else not live) after --unhealthy-after
            if info.status != protocol.LIVE and (info.status in protocol.UNHEALTHY_AT_ONCE or since > self.cfg.unhealthy_after_s):
                unhealthy.append(info.id)
            streams.append({
                "id": info.id, "key": info.key, "status": info.status, **({"error": info.error} if info.error else {}),
                "status_for_s": round(since, 3),
                "last_batch_age_s": age, "batches": st.batches, "samples": st.samples, "subscribers": self.hub.subscriber_count_of(info.key),
                **({"source": dict(st.source)} if st.source else {}),
            })
        bus = self.hub.bus_status()
        bus_down = bus is not None and not bus["up"]
        body = {
            "status": "degraded" if unhealthy or bus_down else "ok",
            "uptime_s": round(now - self.started_wall, 3),
            "connections": self.stats.connections_open,
            "streams": streams,
        }
        if bus is not None:
            body["bus"] = bus
        if unhealthy:
            body["unhealthy_streams"] = unhealthy
        if self.recorder is not None:
            body["recording"] = self.recorder.stats.to_json()
        return (503 if unhealthy or bus_down else 200), body

    def metrics_text(self) -> bytes:
        return render(self.registry)
