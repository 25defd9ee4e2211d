"""The server: owns the hub, the sources, the listener and every connection.

Task tree (every task has an owner, and shutdown walks it top-down):

    Server.run
    ├── sources            (simulators, serial ports)   -> hub.publish
    ├── listener           (trio.serve_tcp)             -> spawns into `connections`
    └── connections        (one task per TCP connection)
        └── handle_http -> handle_websocket
            ├── trio-websocket reader task  (in the connection's own nursery,
            │                                 cancelled when the connection ends)
            └── ClientSession: reader, sender, pinger
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Awaitable, Callable

import trio
import trio_websocket
from trio_websocket import ConnectionClosed

from ..config import ServerConfig
from ..hub import Hub, HubLimits, LocalHub
from ..metrics import ServerStats, make_registry, render
from ..sources.simulator import default_profiles, run_simulator, wide_profile
from .http import StaticFiles, dashboard_dir, handle_http
from .ws import ClientSession

log = logging.getLogger(__name__)

Source = Callable[[], Awaitable[None]]


def _peer(stream: trio.abc.Stream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
        return f"{host}:{port}"
    except (AttributeError, OSError):
        return "?"


class Server:
    def __init__(self, cfg: ServerConfig, hub: Hub | None = None):
        self.cfg = cfg
        self.hub = hub or LocalHub(HubLimits(history_s=cfg.history_s, history_bytes=int(cfg.history_mb * 1024 * 1024)))
        self.stats = ServerStats()
        self.started_wall = time.time()
        self.static = StaticFiles(Path(cfg.dashboard_dir) if cfg.dashboard_dir else dashboard_dir())
        self.registry = make_registry(self)
        self.sessions: set[ClientSession] = set()
        self.sources: list[Source] = []
        self.port: int | None = None
        self._open_connections = 0
        self._no_connections = trio.Event()
        self._no_connections.set()
        self._listen_scope = trio.CancelScope()
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._add_simulators()

    # ------------------------------------------------------------------ sources

    def add_source(self, source: Source) -> None:
        self.sources.append(source)

    def _add_simulators(self) -> None:
        cfg = self.cfg
        profiles = default_profiles()
        sim = functools.partial(run_simulator, self.hub, seed=cfg.seed, window_s=cfg.window_s, max_samples=cfg.max_batch_samples)
        for p in profiles if cfg.simulate else ():
            if cfg.imu_rate and p.id == "sim/imu":
                p = p.with_rate(cfg.imu_rate)
            self.add_source(functools.partial(sim, p))
        if cfg.simulate_wide:
            channels, rate = cfg.simulate_wide
            self.add_source(functools.partial(sim, wide_profile(channels, rate)))
        for stream_id, delay in cfg.simulate_late:
            # A stream that appears while clients are connected (demos, dashboard tests).
            late = profiles[0].with_id(stream_id)

            async def later(late=late, delay=delay):
                await trio.sleep(delay)
                await sim(late)

            self.add_source(later)

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for source in self.sources:
                nursery.start_soon(source)
            with self._listen_scope:
                listeners = await nursery.start(
                    functools.partial(trio.serve_tcp, self._handle_tcp, self.cfg.port, host=self.cfg.host, handler_nursery=nursery)
                )
            self.port = listeners[0].socket.getsockname()[1]
            log.info("listening on http://%s:%d/", self.cfg.host, self.port)
            task_status.started(self.port)

    async def shutdown(self) -> None:
        """Stop accepting, close every client with 1001, then stop the sources."""
        self._listen_scope.cancel()
        for s in list(self.sessions):
            s.stop("server shutting down", 1001)
        with trio.move_on_after(self.cfg.close_timeout + 1.0):
            await self._no_connections.wait()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # ------------------------------------------------------------------ connections

    def _sessions_changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_sessions(self, predicate: Callable[[set[ClientSession]], bool]) -> None:
        """Wait until predicate(sessions) holds; re-checked whenever a session opens or closes."""
        while not predicate(self.sessions):
            await self._changed.wait()

    async def _handle_tcp(self, stream: trio.SocketStream) -> None:
        peer = _peer(stream)
        self._open_connections += 1
        self._no_connections = trio.Event() if self._open_connections == 1 else self._no_connections
        try:
            await handle_http(self, stream, peer)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            # A bug in one connection must not take the server (or anyone else) down.
            log.exception("connection %s failed", peer)
        finally:
            await trio.aclose_forcefully(stream)
            self._open_connections -= 1
            if self._open_connections == 0:
                self._no_connections.set()

    async def handle_websocket(self, stream: trio.abc.Stream, peer: str, request) -> None:
        cfg = self.cfg
        async with trio.open_nursery() as ws_nursery:
            try:
                with trio.fail_after(cfg.handshake_timeout):
                    wsreq = await trio_websocket.wrap_server_stream(
                        ws_nursery, stream, message_queue_size=4, max_message_size=cfg.max_message_bytes
                    )
                    ws = await wsreq.accept()
            except (trio.TooSlowError, ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError) as e:
                log.info("ws %s: handshake failed (%s)", peer, type(e).__name__)
                ws_nursery.cancel_scope.cancel()
                return
            session = ClientSession(self, ws, peer)
            self.sessions.add(session)
            self.stats.connections_total += 1
            self.stats.connections_open += 1
            self._sessions_changed()
            log.info("ws %s: open (session %s)", peer, session.id)
            try:
                await session.run()
            finally:
                self.sessions.discard(session)
                self.stats.connections_open -= 1
                self._sessions_changed()
                code = session.close_code
                # Dead or stuck peers get no close handshake: it would only wait.
                if not session.abort and ws.closed is None:
                    with trio.move_on_after(cfg.close_timeout):
                        try:
                            await ws.aclose(code, session.close_reason[:120])
                        except ConnectionClosed:
                            pass
                log.info("ws %s: closed (%s, code %d, %d frames sent)", peer, session.close_reason, code, session.frames_sent)
                # The trio-websocket reader lives in ws_nursery: cancel it or the socket stays open.
                ws_nursery.cancel_scope.cancel()

    # ------------------------------------------------------------------ health and metrics

    def health(self) -> tuple[int, dict]:
        now = time.time()
        streams = []
        unhealthy = []
        for info in self.hub.catalog():
            st = self.hub.stats(info.key)
            age = None if st.last_batch_wall is None else round(now - st.last_batch_wall, 3)
            since = now - st.status_since
            if info.status != "live" and since > self.cfg.unhealthy_after_s:
                unhealthy.append(info.id)
            streams.append({
                "id": info.id, "key": info.key, "status": info.status, "status_for_s": round(since, 3),
                "last_batch_age_s": age, "batches": st.batches, "samples": st.samples, "subscribers": self.hub.subscriber_count_of(info.key),
                **({"source": dict(st.source)} if st.source else {}),
            })
        body = {
            "status": "degraded" if unhealthy else "ok",
            "uptime_s": round(now - self.started_wall, 3),
            "connections": self.stats.connections_open,
            "streams": streams,
        }
        if unhealthy:
            body["unhealthy_streams"] = unhealthy
        return (503 if unhealthy else 200), body

    def metrics_text(self) -> bytes:
        return render(self.registry)
