"""One WebSocket client: its subscriptions, its control messages, how its frames get out.

Per connection:

- the reader, in the connection's own task (`ClientSession.run`): reads
  messages all the time (which also answers Pings), and dispatches each to the
  handler of its type (`HANDLERS`, see "Control messages" below).
- a sender task, only while the client has a backlog: it empties the client's
  `Outbox`, coalescing consecutive frames into one write. Every write runs
  under `send_timeout`; a client whose socket stays blocked longer is closed.
  When the outbox is empty the task ends.

A healthy client needs neither outbox nor sender: the hub's `deliver`, control
replies and the keeper's pings and heartbeats write pre-framed bytes straight
to its socket (`ServerConnection.send_now`). Liveness and heartbeats for all
sessions are one task (keeper.py). Per connection, a task costs memory and a
timer costs wake-ups; with thousands of clients those were most of the server's
idle CPU and a third of its memory.

The hub calls `deliver`/`notify` synchronously. What cannot be written at once
goes to the outbox, whose policy (drop-oldest with `dropped` notices, byte
caps, control messages never dropped) is outbox.py's.

Control messages
----------------
`protocol.parse_client_message` turns a client's text into a request object;
`HANDLERS` maps its type to a function `(session, request) -> None`. A new
message type is one parser in protocol.py and one handler here:

    @handles(protocol.Command)
    def _command(s: ClientSession, req: protocol.Command) -> None:
        ...
        s.reply(protocol.command_ack(req.ref, ...))

Handlers run synchronously in the reader task (no await: nothing can be
published in between, so e.g. a subscribe's history meets live data exactly).
They answer with `s.reply(text)`, raise `protocol.ProtocolError` for a typed
error to the client (counted, logged at debug), or `CloseSession` to end the
session. Every message has passed the rate limit before its handler runs.
"""

from __future__ import annotations

import logging
import math
import os
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import trio

from ... import __version__, protocol
from ...config import ServerConfig
from ...hub import Frame, Hub, HubError
from .. import playback
from ..metrics import ServerStats
from ..security import TokenBucket, check_patterns
from .connection import ConnectionClosed, ServerConnection
from .frames import Framed, Framer, ws_binary_frame, ws_text_frame
from .keeper import Keeper, Pong
from .outbox import CONTROL, DATA, NOTICES, History, Outbox
from .tick import Tick

if TYPE_CHECKING:
    from ...alerts.monitor import AlertMonitor
    from ...sources.replay import Replay
    from ...commands.registry import CommandRegistry
    from .control import CommandRights

log = logging.getLogger(__name__)


_ids: list[str] = []


def new_session_id() -> str:
    """16 hex digits from the OS's random source, like secrets.token_hex(8); drawn
    256 at a time, so a reconnect storm makes one system call per 256 sessions."""
    if not _ids:
        raw = os.urandom(8 * 256).hex()
        _ids.extend(raw[i:i + 16] for i in range(0, len(raw), 16))
    return _ids.pop()

# Coalesce queued frames into writes of up to this many bytes.
MAX_WRITE = 256 * 1024


@dataclass(frozen=True, slots=True)
class SessionContext:
    """What a session needs from the server, and nothing more."""

    cfg: ServerConfig
    hub: Hub
    stats: ServerStats
    keeper: Keeper
    framer: Framer
    queue_bytes: int  # per client: the outbox's byte cap
    alerts: "AlertMonitor | None" = None  # what is firing now, for a late subscriber (docs/alerts.md)
    replay: "Replay | None" = None  # takes `playback` messages (`sensorstream replay`, docs/recording.md)
    commands: "CommandRegistry | None" = None  # devices' write sides and consoles (control.py)
    tick: Tick = field(default_factory=Tick)  # one write per client per tick (tick.py)
    # Called when a client's queue shrinks, it subscribes, unsubscribes or leaves
    # (`replay --speed 0` waits for its clients: sources/pacing.py).
    backlog_changed: Callable[[], None] | None = None


class CloseSession(Exception):
    """Ends a session. `abort`: the peer is dead or stuck (or a write was cut off
    mid-frame), so no close handshake is attempted: the socket is just closed."""

    def __init__(self, reason: str, code: int = 1000, abort: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.abort = abort


# ----------------------------------------------------------------- control messages

Handler = Callable[["ClientSession", Any], None]
#: Request type (what protocol.parse_client_message returns) -> its handler.
HANDLERS: dict[type, Handler] = {}


def handles(kind: type) -> Callable[[Handler], Handler]:
    """Register `fn` as the handler of client messages of type `kind` (see the module docstring)."""

    def register(fn: Handler) -> Handler:
        if kind in HANDLERS:
            raise ValueError(f"{kind.__name__} already has a handler")
        HANDLERS[kind] = fn
        return fn

    return register


def _hub_call(ref, call, *args):
    """A hub call whose refusal (HubError) is the client's typed error."""
    try:
        return call(*args)
    except HubError as e:
        raise protocol.ProtocolError(e.code, e.message, ref) from None


@handles(protocol.Subscribe)
def _subscribe(s: "ClientSession", req: protocol.Subscribe) -> None:
    globs = check_patterns(req)
    if globs:
        s.rate_limit(req.ref, globs)
    limit = s.cfg.max_subscriptions
    if len(s.subscriptions.union(req.streams)) > limit:
        raise protocol.ProtocolError("too_many_subscriptions", f"a connection holds at most {limit} stream patterns", req.ref)
    got = _hub_call(req.ref, s.hub.subscribe, s, req.streams, req.history_s, req.resume)
    keys, history = got.keys, got.history
    s.subscriptions.update(req.streams)
    s.reply(protocol.subscribed(req.ref, keys, {sid: r.to_json() for sid, r in got.resumed.items()}))
    if req.console and s.ctx.commands is not None:
        s.ctx.commands.listen_console(s, req.streams)
    if s.ctx.alerts is not None:
        for text in s.ctx.alerts.firing_messages(keys):
            s.reply(text)  # a late subscriber learns what is firing now
    if history:
        # Same synchronous step as the subscribe: nothing can be published in
        # between, so history meets live exactly.
        s.outbox_().push_history(History.of(history))
        s._kick()
    if s.ctx.backlog_changed is not None:
        s.ctx.backlog_changed()


@handles(protocol.Unsubscribe)
def _unsubscribe(s: "ClientSession", req: protocol.Unsubscribe) -> None:
    globs = check_patterns(req)
    if globs:
        s.rate_limit(req.ref, globs)
    keys = _hub_call(req.ref, s.hub.unsubscribe, s, req.streams)
    s.subscriptions.difference_update(req.streams)
    if s.ctx.commands is not None:
        s.ctx.commands.unlisten_console(s, req.streams)
    if s.outbox is not None:
        s.outbox.purge(keys)
    s.reply(protocol.unsubscribed(req.ref, keys))
    if s.ctx.backlog_changed is not None:
        s.ctx.backlog_changed()


@handles(protocol.Ping)
def _ping(s: "ClientSession", req: protocol.Ping) -> None:
    s.reply(protocol.pong(req.ref))


@handles(protocol.Playback)
def _playback(s: "ClientSession", req: protocol.Playback) -> None:
    s.reply(playback.answer(s.ctx.replay, req))


# ----------------------------------------------------------------- session


class ClientSession:
    """One WebSocket client. Its tasks: the connection's own task runs the reader
    (inline, in `run`); the sender task runs only while the client has something
    queued. With direct writes (plain TCP) a healthy client has no task of ours
    at all besides that one, and no timer: the keeper pings it."""

    # Slots: thousands of these live at once, and a __dict__ costs more than the rest.
    __slots__ = ("ctx", "cfg", "hub", "stats", "conn", "peer", "id", "outbox", "subscriptions", "overflowed", "abort",
                 "ended", "close_reason", "close_code", "frames_sent", "_direct", "_nursery", "_scope",
                 "_sender_scope", "_sender_done", "_sender_running", "_wake", "_bucket", "_refused_in_a_row",
                 "ping_due", "pong", "pong_deadline", "_ping_owed", "_beat_owed", "control", "tick", "__weakref__")

    def __init__(self, ctx: SessionContext, conn: ServerConnection, peer: str):
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.hub = ctx.hub
        self.stats = ctx.stats
        self.conn = conn
        self.peer = peer
        self.id = new_session_id()
        # Most clients never need an outbox: it is made on first use.
        self.outbox: Outbox | None = None
        self.subscriptions: set[str] = set()
        self.overflowed = False
        self.abort = False  # close without a handshake (dead or stuck peer)
        self.ended = False
        self.close_reason = "closed"
        self.close_code = 1000
        self.frames_sent = 0
        # The connection, when it takes direct writes (plain TCP); None: never.
        self._direct: ServerConnection | None = conn if conn.direct else None
        self._nursery: trio.Nursery | None = None  # where a sender task runs
        self._scope = trio.CancelScope()  # the session (its reader); stop() cancels it
        self._sender_scope: trio.CancelScope | None = None
        self._sender_done: trio.Event | None = None  # set when the last sender task started has ended
        self._sender_running = False
        self._wake: trio.Event | None = None  # a parked sender (no direct writes) waits on it
        # Control messages: `control_rate` a second, `control_burst` at once; a
        # client refused `control_burst` times in a row is closed (1008).
        self._bucket = TokenBucket(self.cfg.control_rate, self.cfg.control_burst, trio.current_time())
        self._refused_in_a_row = 0
        # Liveness, kept by the keeper: when the next ping is due, the outstanding
        # ping's Pong, and when that Pong is overdue.
        self.ping_due = 0.0
        self.pong: Pong | None = None
        self.pong_deadline = math.inf
        # Owed to the peer by the sender task (the keeper could not write them directly).
        self._ping_owed = False
        self._beat_owed = False
        self.control: CommandRights | None = None  # may it send commands (set at the upgrade, control.py)
        # Frames of the current tick not written yet: None, one Framed, or a list (tick.py).
        self.tick: Framed | list[Framed] | None = None

    def outbox_(self) -> Outbox:
        """The outbox, made on first use."""
        o = self.outbox
        if o is None:
            cfg = self.cfg
            o = self.outbox = Outbox(cfg.queue_batches, self.ctx.queue_bytes, cfg.queue_control, MAX_WRITE)
        return o

    @property
    def n_data(self) -> int:
        """Data frames queued."""
        return 0 if self.outbox is None else self.outbox.n_data

    @property
    def n_bytes(self) -> int:
        """Payload bytes of the queued data frames."""
        return 0 if self.outbox is None else self.outbox.n_bytes

    @property
    def behind(self) -> bool:
        """The client has a backlog: frames or messages queued, or a frame half written."""
        d = self._direct
        return bool(self.outbox) or (d is not None and d.partial is not None)

    # ---- hub side: synchronous, never blocks

    def deliver(self, frame: Frame) -> None:
        # The hot path: once per client per batch. The frame's bytes and time are
        # shared by every client (Framer); a healthy client keeps it for the
        # tick's one write (tick.py), costing a few attribute reads here.
        framed = self.ctx.framer.of(frame)
        direct = self._direct
        if direct is not None and direct.idle and not self.outbox:
            t = self.tick
            if t is None:
                self.tick = framed
                tick = self.ctx.tick
                if tick.running:
                    tick.add(self)
                else:
                    self.flush_tick()  # no tick task (a bare Server in tests): at once
            elif type(t) is Framed:
                self.tick = [t, framed]
            else:
                t.append(framed)
            return
        self.flush_tick()
        self._queue_frames((framed,))

    def _queue_frames(self, frames) -> None:
        """Into the outbox (its limits drop the oldest), and make sure the sender runs."""
        outbox = self.outbox_()
        dropped = 0
        for f in frames:
            dropped += outbox.push_frame(f)
        if dropped:
            self.stats.dropped_batches_total += dropped
        self._kick()

    def flush_tick(self) -> None:
        """Write this tick's frames, all in one system call (called by the tick task,
        and before anything else is written or queued, so order is kept)."""
        t = self.tick
        if t is None:
            return
        self.tick = None
        if self.ended:
            return
        direct = self._direct
        if type(t) is Framed:
            frames = 1
            n = direct.send_now(t.wire, 1, t.at)
        else:
            frames = len(t)
            n = direct.send_now_many([f.wire for f in t], t[0].at)
        # All of it went out unless the write was cut short, which leaves the rest in
        # `partial` (the connection has summed the sizes: not again here, per client).
        if n and direct.partial is None:
            self.frames_sent += frames
            stats = self.stats
            stats.frames_sent_total += frames
            stats.bytes_sent_total += n
            stats.writes_total += 1
            return
        if n:
            # Cut short: the sender writes the rest (and counts the frames) before anything else.
            self.stats.bytes_sent_total += n
            self._kick()
            return
        # Not writable now: the outbox takes them, in order, with its limits.
        self._queue_frames((t,) if type(t) is Framed else t)

    def notify(self, text: str) -> None:
        self.reply(text)

    def _write_now(self, data: bytes) -> bool:
        """Write `data` directly if nothing else is being written. False: nothing
        went out (no direct writes on this connection, sender running, socket
        full). A write cut short starts the sender, which writes the rest first."""
        direct = self._direct
        if direct is None:
            return False
        if self.tick is not None:
            self.flush_tick()
        n = direct.write(data)
        if 0 < n < len(data):
            self._kick()
        return n > 0

    def reply(self, text: str) -> None:
        """Send a control message: now if nothing is ahead of it, else queued (never dropped)."""
        d = self._direct
        # Framed only when it can go out now (the sender frames queued text itself),
        # and once for all clients when it is a notice to all (Framer.text).
        if d is not None and d.idle and not self.outbox and self._write_now(self.ctx.framer.text(text)):
            return
        if self.tick is not None:
            self.flush_tick()
        if not self.outbox_().push_control(text) and not self.overflowed:
            # A client this far behind is cut off.
            self.overflowed = True
            self.abort = True
            self.stats.slow_control_closed_total += 1
            self.stop("control queue overflow (client too slow)", 1008)
        self._kick()

    def stop(self, reason: str, code: int) -> None:
        self.close_reason, self.close_code = reason, code
        self._scope.cancel()
        if self._sender_scope is not None:
            self._sender_scope.cancel()

    # ---- keeper side: synchronous too

    def last_write_at(self) -> float:
        return self.conn.last_write

    def ping(self, payload: bytes, frame: bytes) -> None:
        """Ping the peer (its Pong sets `self.pong`): directly if nothing else is being
        written, else the sender task sends one when it gets to it."""
        if self._write_now(frame):
            self.conn.expect_pong(payload, self.pong)
            return
        self._ping_owed = True
        self._kick()

    def heartbeat(self, frame: bytes) -> None:
        if self._write_now(frame):
            return
        self._beat_owed = True
        self._kick()

    def ping_timed_out(self, timeout: float) -> None:
        self.stats.ping_timeouts_total += 1
        self.abort = True
        self.stop(f"ping timeout (no pong in {timeout:g} s)", 1011)

    # ---- tasks

    async def run(self, nursery: trio.Nursery) -> None:
        """Run until the client goes away, a limit trips or the server stops. The
        reader runs here, in the connection's own task; a sender task, when one
        is needed, runs in `nursery`, and has ended when this returns."""
        bus = self.hub.bus_status()
        hello = protocol.hello(f"sensorstream/{__version__}", self.id, self.cfg.heartbeat_s, self.hub.catalog(),
                               bus=None if bus is None else bus["up"])
        self._nursery = nursery
        keeper = None
        try:
            with self._scope:
                try:
                    # The 101 and the hello: one write.
                    await self.conn.start(ws_text_frame(hello))
                    self.hub.attach(self)
                    keeper = self.ctx.keeper
                    keeper.add(self)
                    receive = self.conn.receive
                    while True:
                        msg = await receive()
                        if self.hub.needs_ready and type(msg) is str and '"subscribe"' in msg:
                            await self._ready(msg)
                        self.handle_message(msg)
                except (ConnectionClosed, CloseSession) as e:
                    self._ended_by(e)
        finally:
            self.ended = True
            if keeper is not None:
                keeper.discard(self)
            if self._sender_scope is not None:
                self._sender_scope.cancel()
                # Joined, as a nursery of our own would: nothing of this session
                # writes once its owner goes on to close the connection.
                with trio.CancelScope(shield=True):
                    await self._sender_done.wait()
            self.hub.detach(self)
            if self.ctx.commands is not None:
                self.ctx.commands.detach(self)
            if self.ctx.backlog_changed is not None:
                self.ctx.backlog_changed()

    async def _ready(self, msg: str) -> None:
        """A bus hub fetches the history of the streams a subscribe names first (one
        read per stream for all clients asking at once); the subscribe itself then
        runs synchronously as always, so history still meets live exactly."""
        try:
            req = protocol.parse_client_message(msg)
        except protocol.ProtocolError:
            return  # handle_message answers it
        if isinstance(req, protocol.Subscribe):
            await self.hub.ready(req.streams)

    def _ended_by(self, e: "ConnectionClosed | CloseSession") -> None:
        """The one place that turns how a session ended into a reason and a close code."""
        if isinstance(e, CloseSession):
            self.close_reason, self.close_code, self.abort = e.reason, e.code, e.abort
            return
        if not e.by_peer:
            # We failed the connection (our close frame has gone out).
            self.close_reason = {1002: "protocol error", 1007: "invalid UTF-8", 1009: "message too big"}.get(e.code, e.reason)
            self.close_code = e.code
        elif self.close_reason == "closed":
            self.close_reason = f"client closed ({e.code if e.code != 1006 else 'no close frame'})"
            self.close_code = e.code

    def handle_message(self, msg: str | bytes) -> None:
        try:
            # Before parsing, so a refused message costs next to nothing (and so
            # its `rate_limited` error carries no ref).
            self.rate_limit(None, 1)
            req = protocol.parse_client_message(msg)
            handler = HANDLERS.get(type(req))
            if handler is None:
                raise protocol.ProtocolError("unknown_type", f"no handler for {type(req).__name__}", getattr(req, "ref", None))
            handler(self, req)
        except protocol.ProtocolError as e:
            if e.code != "rate_limited":
                self.stats.protocol_errors_total += 1
            log.debug("client %s: %s (%s)", self.peer, e.code, e.message)
            self.reply(e.to_message())

    def rate_limit(self, ref, cost: int) -> None:
        """Take `cost` tokens or refuse the message; too many refusals in a row end the session."""
        if self._bucket.take(trio.current_time(), cost):
            self._refused_in_a_row = 0
            return
        self._refused_in_a_row += 1
        self.stats.rate_limited_total += 1
        if self._refused_in_a_row > self.cfg.control_burst:
            log.warning("client %s: still over the control-message rate limit, closing", self.peer,
                        extra={"event": "rate_limit_close", "peer": self.peer, "session": self.id})
            raise CloseSession("control-message rate limit exceeded", 1008)
        raise protocol.ProtocolError("rate_limited", f"at most {self.cfg.control_rate:g} control messages a second", ref)

    # ---- the sender task: runs while something is queued (or owed)

    def _kick(self) -> None:
        """Make sure the sender task runs: start it, or wake it if it is parked."""
        if self.tick is not None:
            self.flush_tick()  # this tick's frames go first
        if self._sender_running:
            if self._wake is not None:
                self._wake.set()
            return
        if self._nursery is None or self.ended or self._scope.cancel_called:
            return  # not started, or ending: a new sender would write after the end
        self._sender_running = True
        if self._direct is not None:
            self._direct.idle = False
        self._sender_scope = trio.CancelScope()
        self._sender_done = trio.Event()
        self._nursery.start_soon(self._run_sender, self._sender_scope, self._sender_done)

    async def _run_sender(self, scope: trio.CancelScope, done: trio.Event) -> None:
        try:
            with scope:
                try:
                    await self._sender()
                except (ConnectionClosed, CloseSession) as e:
                    self._ended_by(e)
                    self._scope.cancel()
                except Exception:
                    # The nursery is the server's: a bug here ends this session, not the server.
                    log.exception("client %s: sender failed", self.peer)
                    self.abort = True
                    self.stop("internal error", 1011)
        finally:
            done.set()

    def _too_slow(self) -> CloseSession:
        self.stats.send_timeouts_total += 1
        return CloseSession(f"send timeout ({self.cfg.send_timeout:g} s)", 1008, abort=True)

    async def _sender(self) -> None:
        try:
            while True:
                direct = self._direct
                if direct is not None and direct.partial is not None:
                    await self._flush_direct(direct)
                elif self._ping_owed:
                    await self._send_owed_ping()
                elif self.outbox:
                    await self._send_next()
                elif self._beat_owed:
                    self._beat_owed = False
                    if self.last_write_at() + self.cfg.heartbeat_s <= trio.current_time():
                        await self._send_text(protocol.heartbeat(time.time()))
                elif direct is not None:
                    # Nothing left: direct writes take over, and this task ends.
                    direct.idle = True
                    self._sender_running = False
                    return
                else:
                    # No direct writes on this connection (TLS): park until there is work.
                    self._wake = trio.Event()
                    await self._wake.wait()
                    self._wake = None
        except BaseException:
            self._sender_running = False
            if self._direct is not None and self._direct.partial is not None:
                # Half a frame on the wire: a close frame now would be garbage to the peer.
                self.abort = True
            raise

    async def _timed_write(self, send, *args) -> None:
        """Every write the sender task waits for: bounded by `send_timeout` (a
        stuck peer is closed with 1008). A dead peer is the keeper's to close (no
        pong); this bounds a live but stuck one."""
        try:
            with trio.fail_after(self.cfg.send_timeout):
                await send(*args)
        except trio.TooSlowError:
            raise self._too_slow() from None

    async def _send_owed_ping(self) -> None:
        self._ping_owed = False
        pong = self.pong
        if pong is None or pong.answered:
            return
        await self._timed_write(self.conn.ping, os.urandom(8), pong)

    def _sent(self, frames: int, nbytes: int) -> None:
        """Count what the sender task wrote (`deliver` counts its own direct writes inline)."""
        self.frames_sent += frames
        self.stats.frames_sent_total += frames
        self.stats.bytes_sent_total += nbytes
        if frames:
            self.stats.writes_total += 1
            if self.ctx.backlog_changed is not None:
                self.ctx.backlog_changed()

    async def _send_bytes(self, data: bytes, frames: int) -> None:
        direct = self._direct
        if direct is not None:
            n = direct.send_now(data, frames)
            if n == len(data):
                self._sent(frames, n)
                return
            if n:
                self._sent(0, n)
                await self._flush_direct(direct)
                return
        await self._timed_write(self.conn.send_all, data)
        self._sent(frames, len(data))

    async def _flush_direct(self, direct: ServerConnection) -> None:
        try:
            with trio.fail_after(self.cfg.send_timeout):
                n = await direct.flush()
        except trio.TooSlowError:
            raise self._too_slow() from None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise CloseSession("connection lost mid-frame", 1006, abort=True) from None
        self._sent(direct.partial_frames, n)

    async def _send_next(self) -> None:
        """One step of the outbox: drop notices, a run of frames (coalesced), a control message or a replay."""
        kind, value, frames = self.outbox.take()
        if kind == DATA:
            await self._send_bytes(value, frames)
        elif kind == CONTROL:
            await self._send_text(value)
        elif kind == NOTICES:
            await self._send_drop_notices(value)
        else:
            await self._send_history(value.frames)

    async def _send_text(self, text: str) -> None:
        await self._timed_write(self.conn.send_text, text)

    async def _send_history(self, frames: list[tuple[int, weakref.ref[Frame]]]) -> None:
        parts: list[bytes] = []
        size = 0
        lost: dict[int, int] = {}
        for key, ref in frames:
            f = ref()
            if f is None:  # the hub's history moved past it first (see outbox.History)
                lost[key] = lost.get(key, 0) + 1
                self.stats.dropped_batches_total += 1
                continue
            w = ws_binary_frame(protocol.mark_replayed(f.payload))
            del f
            if lost:  # announced before the next frame, as for a full queue
                if parts:
                    await self._send_bytes(b"".join(parts), len(parts))
                    parts, size = [], 0
                await self._send_drop_notices(lost)
                lost = {}
            parts.append(w)
            size += len(w)
            if size >= MAX_WRITE:
                await self._send_bytes(b"".join(parts), len(parts))
                parts, size = [], 0
        if parts:
            await self._send_bytes(b"".join(parts), len(parts))
        if lost:
            await self._send_drop_notices(lost)

    async def _send_drop_notices(self, counts: dict[int, int]) -> None:
        for key, n in counts.items():
            await self._send_text(protocol.dropped(key, n))
