"""RedisHub: the same Hub, shared by many processes through Redis (coredis, on trio via anyio).

A process is a publisher (it has sources), a gateway (it has clients), or both;
the roles never call each other directly, only through Redis:

    source -> publish -> outbox (bounded, drop-oldest) -> writer task
                 XADD ss:{K}:x <seq>-1 b=<batch>  MAXLEN N     (history, capped)
                 PUBLISH ss:{K}:live <batch>                   (the same bytes, live)
    gateway: SUBSCRIBE ss:{K}:live only for streams its clients want, XRANGE to
             fill a local mirror, then the in-process fan-out (LocalHub) to clients.

Keys in Redis (all of a stream's under one hash tag, so a cluster keeps its
history and its channel on one shard; the catalog under `{ss}`):

    {ss}:ids      HASH   stream id -> key          (allocated atomically by a script)
    {ss}:keys     HASH   key -> stream id
    {ss}:keyseq   STRING the last key handed out
    {ss}:catalog  HASH   key -> JSON entry (StreamInfo fields, epoch, owner, continues)
    {ss}:events   channel: a catalog entry changed (the JSON entry, or {"removed": key})
    {ss}:alive:<owner>  a publisher process's heartbeat, expires after the TTL
    ss:{K}:x      STREAM one entry per batch, id "<seq>-1", field b = the encoded batch
    ss:{K}:live   channel: the same bytes, as they are written

History and live cannot disagree: the writer XADDs a batch before it publishes
it, on one connection, and a gateway delivers seqs strictly in order: a seq that
skips ahead makes it read the missing ones from the stream first; those the
stream does not have are announced as `dropped`. A stream's entry ids are its
seqs, so XADD refuses a duplicate and a range read is a seq range.

Epoch: kept in the catalog entry. A publisher that finds its entry gone (a flush,
a failover that lost data) draws a new one, and records the epoch it continues
and the seq this one starts at, so a client resuming from the old epoch learns
how many batches it lost.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import secrets
import ssl
import time
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

import coredis
import numpy as np
import trio
from coredis.tokens import PureToken

from .. import protocol
from ..excgroups import leaves
from ..protocol import Channel, StreamInfo
from .busurl import BusURL, parse_bus_url  # noqa: F401 (re-exported)
from .base import FRAME_OVERHEAD, Frame, HubError, HubLimits, Resumed, StreamStats, Subscriber, Subscription
from .local import LocalHub, _Stream

log = logging.getLogger("sensorstream.hub.redis")

IDS, KEYS, KEYSEQ, CATALOG, EVENTS = "{ss}:ids", "{ss}:keys", "{ss}:keyseq", "{ss}:catalog", "{ss}:events"
_EVENTS_B = EVENTS.encode()
#: Live batches a mirror holds while it reads history (then delivered in seq order).
MAX_PENDING = 10_000


def alive_key(owner: str) -> str:
    return f"{{ss}}:alive:{owner}"


def history_key(key: int) -> str:
    return f"ss:{{{key}}}:x"


def live_channel(key: int) -> str:
    return f"ss:{{{key}}}:live"


# One atomic step: the key of an id, reclaiming the one it had before a flush when
# nobody took it since, else the next free one. KEYS: ids, keys, keyseq.
ALLOCATE = """
local k = redis.call('HGET', KEYS[1], ARGV[1])
if k then return tonumber(k) end
local want = tonumber(ARGV[2])
if want > 0 and redis.call('HSETNX', KEYS[2], want, ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], want)
  if tonumber(redis.call('GET', KEYS[3]) or '0') < want then redis.call('SET', KEYS[3], want) end
  return want
end
while true do
  local n = redis.call('INCR', KEYS[3])
  if redis.call('HSETNX', KEYS[2], n, ARGV[1]) == 1 then
    redis.call('HSET', KEYS[1], ARGV[1], n)
    return n
  end
end
"""


# --------------------------------------------------------------------------- publisher side


class _Pub:
    """One stream this process publishes. `handle` is what its source holds (the
    bus key is only known once Redis has answered); bus seq = base + local seq."""

    __slots__ = ("handle", "info", "key", "epoch", "base", "dirty", "stats", "sent", "sent_bytes", "t_first", "removed")

    def __init__(self, handle: int, info: StreamInfo):
        self.handle = handle
        self.info = info  # key = handle
        self.key: int | None = None
        self.epoch: str | None = None
        self.base: int | None = None
        self.dirty = True  # the catalog entry needs writing
        self.stats = StreamStats()
        self.sent = 0
        self.sent_bytes = 0
        self.t_first: float | None = None
        self.removed = False

    def maxlen(self, limits: HubLimits) -> int:
        """Entries that hold `history_s` seconds and `history_bytes` bytes, from what was sent."""
        if not self.sent:
            return 1024
        avg = self.sent_bytes / self.sent + FRAME_OVERHEAD
        rate = self.sent / max(1.0, time.monotonic() - self.t_first)
        return int(max(16, min(limits.history_bytes / avg, limits.history_s * rate * 1.2 + 16, 1_000_000)))


@dataclass
class BusCounters:
    up: bool = False
    since: float = field(default_factory=time.time)
    reconnects: int = 0
    outbox_dropped: int = 0  # batches a publisher dropped while Redis was unreachable
    lost: int = 0  # seqs a gateway found missing from history (announced as dropped)
    history_reads: int = 0  # XRANGE calls (merged: one per stream and catch-up)
    written: int = 0


class _Mirror:
    """A stream this gateway follows in Redis because a client wants it."""

    __slots__ = ("ready", "filling", "pending", "expect", "idle_since", "active")

    def __init__(self):
        self.ready = trio.Event()
        self.filling = True  # live messages wait in `pending` while history is read
        self.pending: list[bytes] = []
        self.expect: int | None = None  # the next seq to deliver (None: any)
        self.idle_since: float | None = None
        self.active = True


def _seq_and_t(payload: bytes) -> tuple[int, int, float, int]:
    """(key, seq, t_last, n) from a batch's header: a gateway reads no more of it."""
    _kind, _flags, _c, key, n, _r, seq = protocol.HEADER.unpack_from(payload, 0)
    t = float(np.frombuffer(payload, "<f8", 1, protocol.HEADER_SIZE + 8 * (n - 1))[0]) if n else 0.0
    return key, seq, t, n


class RedisHub(LocalHub):
    """Streams shared through Redis. The transport side is LocalHub's, over mirrors."""

    needs_ready = True

    def _table_observers(self) -> tuple:
        # Observers (alerts, staleness) watch the streams this process publishes, by
        # handle, where the samples are; the mirrors of the same streams would be a
        # second copy of each, never fed a batch.
        return ()

    def __init__(self, url: str, limits: HubLimits = HubLimits(), *, ttl_s: float = 5.0, op_timeout: float = 2.0,
                 outbox_batches: int = 10_000, outbox_bytes: int = 64 * 1024 * 1024, backoff_max: float = 1.0,
                 ready_timeout: float = 3.0, linger_s: float = 10.0, cafile: str | None = None):
        super().__init__(limits)
        self.url = parse_bus_url(url)
        self.cafile = cafile or self.url.ca_certs  # None: the system's trust store
        self._ssl = self._ssl_context() if self.url.tls else None  # once: every reconnect reuses it
        self._failing: str | None = None  # why the last connection attempt failed, as logged
        self.ttl_s = ttl_s
        self.op_timeout = op_timeout
        self.outbox_batches, self.outbox_bytes = outbox_batches, outbox_bytes
        self.backoff_max = backoff_max
        self.ready_timeout = ready_timeout
        self.linger_s = linger_s
        self.owner = secrets.token_hex(8)  # this process, as a publisher
        self.bus = BusCounters()
        self._pubs: dict[int, _Pub] = {}
        self._pub_by_id: dict[str, _Pub] = {}
        self._pub_by_key: dict[int, _Pub] = {}
        self._outbox: collections.deque[list] = collections.deque()  # [pub, local seq, ts, values, payload, its key]
        self._outbox_size = 0
        self._work = trio.Event()
        self._up_event = trio.Event()
        self._entries: dict[int, dict[str, Any]] = {}  # the catalog as Redis has it
        self._alive: set[str] = set()  # publisher owners whose heartbeat is current
        self._mirrors: dict[int, _Mirror] = {}
        self._client: Any = None
        self._pubsub: Any = None
        self._nursery: trio.Nursery | None = None

    # ------------------------------------------------------------------ status

    def bus_status(self) -> dict[str, Any]:
        b = self.bus
        return {"up": b.up, "url": self.url.shown, "since": b.since, "reconnects": b.reconnects,
                "outbox": len(self._outbox), "outbox_dropped": b.outbox_dropped, "lost": b.lost}

    def _set_up(self, up: bool) -> None:
        if up == self.bus.up:
            return
        self.bus.up, self.bus.since = up, time.time()
        if up:
            self._failing = None
            self._up_event.set()
            log.info("bus %s: connected", self.url.shown, extra={"event": "bus_up"})
        else:
            self._up_event = trio.Event()
            log.warning("bus %s: unreachable; remote streams are disconnected until it is back", self.url.shown,
                        extra={"event": "bus_down"})
        self._announce(protocol.bus(up))
        for key in list(self._streams):
            self._refresh(key)

    # ------------------------------------------------------------------ source side

    def add_stream(self, id: str, channels: Iterable[Channel], rate_hz: float | None = None, device: str = "",
                   commands: bool = False, actions: tuple[dict, ...] = ()) -> StreamInfo:
        # Commands are not carried over the bus: a gateway's clients cannot reach the
        # process that owns the device, so its streams do not say they take them.
        channels = tuple(channels)
        self._check_channels(channels)
        p = self._pub_by_id.get(id)
        if p is None:
            if len(self._pubs) >= self.limits.max_streams:
                raise HubError("too_many_streams", f"the hub holds at most {self.limits.max_streams} streams")
            handle = -(len(self._pubs) + 1)  # negative: never a bus key
            p = _Pub(handle, StreamInfo(key=handle, id=id, channels=channels, rate_hz=rate_hz, status=protocol.LIVE, device=device))
            self._pubs[handle] = p
            self._pub_by_id[id] = p
        p.removed = False
        p.info = replace(p.info, channels=channels, status=protocol.LIVE)
        self._mark(p)
        for obs in self.observers:
            obs.on_stream(p.info)
        return p.info

    def update_stream(self, key: int, *, channels: Iterable[Channel] | None = None, status: str | None = None,
                      error: str | None = None) -> StreamInfo:
        p = self._pubs.get(key)
        if p is None:  # a bus key: the gateway's own view (tests, or a local status change)
            return super().update_stream(key, channels=channels, status=status, error=error)
        info = self._changed(p.info, p.stats, channels, status, error)
        if info != p.info:
            p.info = info
            self._mark(p)
            for obs in self.observers:
                obs.on_stream(info)
        return info

    def remove_stream(self, key: int) -> None:
        p = self._pubs.get(key)
        if p is None:
            return super().remove_stream(key)
        p.removed = True
        self._mark(p)
        for obs in self.observers:
            obs.on_removed(key)

    def publish(self, key: int, seq: int, timestamps: np.ndarray, values: np.ndarray) -> None:
        """Never blocks (a serial read must not wait on Redis): the batch joins a
        bounded outbox; beyond its bounds the oldest batches go, and are counted."""
        p = self._pubs[key]
        n = len(timestamps)
        st = p.stats
        st.batches += 1
        st.samples += n
        st.last_batch_wall = time.time()
        self._outbox.append([p, seq, timestamps, values, None, None])
        self._outbox_size += timestamps.nbytes + values.nbytes
        while len(self._outbox) > self.outbox_batches or (self._outbox_size > self.outbox_bytes and len(self._outbox) > 1):
            old = self._outbox.popleft()
            self._outbox_size -= old[2].nbytes + old[3].nbytes
            self.bus.outbox_dropped += 1
        self._work.set()
        # Observers (alerts) watch where the samples are: on the publisher, by handle.
        for obs in self.observers:
            obs.on_batch(p.info, timestamps, values)

    def notify_subscribers(self, key: int, text: str) -> None:
        p = self._pubs.get(key)
        if p is not None:
            if p.key is None:
                return
            key = p.key
        super().notify_subscribers(key, text)

    def next_seq(self, key: int) -> int:
        p = self._pubs.get(key)
        if p is None:
            return super().next_seq(key)
        # Local seqs continue across a replug; the bus offset (base) continues them in Redis.
        return p.stats.batches

    def stats(self, key: int) -> StreamStats:
        p = self._pubs.get(key) or self._pub_by_key.get(key)
        if p is not None:
            return p.stats  # the publisher's counts, with its source's counters
        return super().stats(key)

    def _mark(self, p: _Pub) -> None:
        p.dirty = True
        self._work.set()

    # ------------------------------------------------------------------ transport side

    async def ready(self, patterns: Iterable[str]) -> None:
        """Wait (bounded) until every stream the patterns match is mirrored: one
        history read per stream, shared by every client waiting for it."""
        with trio.move_on_after(self.ready_timeout):
            if not self.bus.up:
                await self._up_event.wait()
            try:
                streams, _ = self._match(patterns)
            except HubError:
                return  # subscribe reports it
            for st in streams:
                m = self._want(st.info.key)
                await m.ready.wait()

    def subscribe(self, sub: Subscriber, patterns: Iterable[str], history_s: float = 0.0,
                  resume: Mapping[str, tuple[str, int]] | None = None) -> Subscription:
        points: dict[str, tuple[str, int]] = {}
        unavailable = []
        for sid, (epoch, seq) in (resume or {}).items():
            key = self._by_id.get(sid)
            m = self._mirrors.get(key) if key is not None else None
            if key is not None and (m is None or m.filling or not m.active):
                # History this gateway does not hold (Redis unreachable): say so rather than guess.
                unavailable.append(sid)
                continue
            cont = (self._entries.get(key) or {}).get("continues") if key is not None else None
            if cont and cont.get("epoch") == epoch and seq + 1 >= int(cont.get("seq", 0)):
                # The epoch changed (Redis lost its data) but nothing of the old one is
                # missing: this epoch's history, which continues its seqs, serves the rest.
                epoch = self._streams[key].info.epoch
            points[sid] = (epoch, seq)
        got = super().subscribe(sub, patterns, history_s, points)
        for sid in unavailable:
            if self._by_id[sid] in got.keys:
                got.resumed[sid] = Resumed(False, reason="unavailable")
        for sid, (epoch, seq) in points.items():
            r = got.resumed.get(sid)
            if r is not None and r.reason == "epoch_changed":
                got.resumed[sid] = self._lost_across_epochs(sid, epoch, seq) or r
        for key in got.keys:
            self._want(key)
        return got

    def history_frames(self, key: int) -> list[Frame]:
        """History of a stream this gateway mirrors (its clients watch it: the usual
        case for an export). Any other stream starts being mirrored, and until then
        there is none here to give (GET /export answers 501; a retry finds it)."""
        m = self._mirrors.get(key)
        if m is None or not m.active or m.filling:
            if key in self._streams:
                self._want(key)
            raise NotImplementedError("not mirrored yet")
        return super().history_frames(key)

    def _lost_across_epochs(self, sid: str, epoch: str, seq: int) -> Resumed | None:
        """A client of the epoch this one continues (same publisher, history lost in
        Redis) is told exactly how much it lost: everything up to now."""
        key = self._by_id.get(sid)
        cont = (self._entries.get(key) or {}).get("continues") if key is not None else None
        if not cont or cont.get("epoch") != epoch:
            return None
        return Resumed(False, reason="epoch_changed", lost=max(0, self._streams[key].next_seq - seq - 1))

    def _install(self, info: StreamInfo) -> _Stream:
        st = super()._install(info)
        if st.subs:  # a glob subscription wants this new stream
            self._want(info.key)
        return st

    def _want(self, key: int) -> _Mirror:
        """The mirror of a stream, started if needed (history read, live subscription)."""
        m = self._mirrors.get(key)
        if m is None or not m.active:
            m = self._mirrors[key] = _Mirror()
            if self._nursery is not None and self.bus.up:
                self._nursery.start_soon(self._follow, key, m)
        m.idle_since = None
        return m

    # ---- live path (the pub/sub connection's task calls this for every message)

    def _on_message(self, msg: Mapping[str, Any]) -> None:
        # Runs in coredis' reader task: an exception here would end the pub/sub
        # connection for every stream, so one bad message is logged and skipped.
        try:
            self._dispatch(msg)
        except Exception:
            log.exception("bus: a message on %r could not be handled; skipped", msg.get("channel"))

    def _dispatch(self, msg: Mapping[str, Any]) -> None:
        data = msg["data"]
        if msg["channel"] == _EVENTS_B:
            try:
                self._on_event(json.loads(data))
            except (ValueError, KeyError, TypeError):
                log.warning("bus: an unreadable catalog event was ignored")
            return
        try:
            key, seq, t_last, n = _seq_and_t(data)
        except Exception:  # not ours, or damaged: never let it into a client's stream
            log.warning("bus: a message that is not a batch was ignored on %r", msg["channel"])
            return
        m = self._mirrors.get(key)
        if m is None or not m.active:
            return
        if m.filling:
            m.pending.append(data)
            if len(m.pending) > MAX_PENDING:
                # Bounded: what is dropped here is still in history, read by the catch-up.
                del m.pending[: len(m.pending) - MAX_PENDING]
            return
        if m.expect is not None and seq > m.expect:
            # A seq we have not seen: history has it, or it is lost. Read first.
            m.filling = True
            m.pending.append(data)
            if self._nursery is not None:
                self._nursery.start_soon(self._catch_up_task, key, m)
            return
        self._take(key, m, data, seq, t_last, n, deliver=True)

    def _take(self, key: int, m: _Mirror, data: bytes, seq: int, t_last: float, n: int, deliver: bool) -> None:
        if m.expect is not None and seq < m.expect:
            return  # a duplicate (history and live overlap while catching up)
        st = self._streams.get(key)
        if st is None:
            return
        if deliver and m.expect is not None and seq > m.expect:
            lost = seq - m.expect
            self.bus.lost += lost
            text = protocol.dropped(key, lost)
            for sub in st.fanout:
                sub.notify(text)
        m.expect = seq + 1
        frame = Frame(key, seq, t_last, n, data)
        if deliver:
            self._fan_out(st, frame)
        else:
            st.next_seq = seq + 1
            self._remember(st, frame)

    async def _follow(self, key: int, m: _Mirror) -> None:
        """Start following a stream: live subscription first, then history, so nothing
        published in between is missed (the overlap is dropped by seq)."""
        try:
            with trio.fail_after(self.op_timeout):
                await self._pubsub.subscribe(**{live_channel(key): self._on_message})
            await self._catch_up(key, m)
        except Exception as e:  # the session notices the bus is gone and starts again
            log.info("bus: could not follow stream key %d yet (%s)", key, type(e).__name__)

    async def _catch_up_task(self, key: int, m: _Mirror) -> None:
        try:
            await self._catch_up(key, m)
        except Exception as e:
            log.info("bus: catching up stream key %d failed (%s); retried on reconnect", key, type(e).__name__)

    async def _catch_up(self, key: int, m: _Mirror) -> None:
        """Read what history holds from the next expected seq, deliver it with what
        arrived live meanwhile, in seq order; gaps left are announced as dropped."""
        start = f"{m.expect}-1" if m.expect is not None else "-"
        with trio.fail_after(self.op_timeout * 2):
            entries = await self._client.xrange(history_key(key), start, "+")
        self.bus.history_reads += 1
        if not m.active or self._mirrors.get(key) is not m:
            return
        first = m.expect is None  # a new mirror: history fills it, live goes to clients
        for e in entries:
            data = e.field_values.get(b"b")
            if data is not None:
                _k, seq, t, n = _seq_and_t(data)
                self._take(key, m, data, seq, t, n, deliver=not first)
        pending, m.pending = m.pending, []
        # Each header parsed once (up to MAX_PENDING of them), then taken in seq order.
        for (_k, seq, t, n), data in sorted(((_seq_and_t(d), d) for d in pending), key=lambda h: h[0][1]):
            self._take(key, m, data, seq, t, n, deliver=True)
        m.filling = False
        m.ready.set()

    # ---- catalog

    def _on_event(self, ev: dict[str, Any]) -> None:
        if "removed" in ev:
            key = int(ev["removed"])
            self._entries.pop(key, None)
            self._drop_stream(key)
            return
        key = int(ev["key"])
        self._entries[key] = ev
        owner = ev.get("owner")
        if owner and ev.get("status") == protocol.LIVE:
            self._alive.add(owner)  # it just wrote: it is alive
        self._refresh(key)

    def _refresh(self, key: int) -> None:
        """Make the local stream `key` match the catalog entry, the bus and its owner's heartbeat."""
        e = self._entries.get(key)
        if e is None:
            return
        status = e.get("status", protocol.LIVE)
        if not self.bus.up or e.get("owner") not in self._alive:
            status = protocol.DISCONNECTED
        info = StreamInfo.from_json({**e, "status": status})
        other = self._by_id.get(info.id)
        if other is not None and other != key:
            self._drop_stream(other)  # the id moved to another key (Redis lost its catalog)
        st = self._streams.get(key)
        if st is None:
            if len(self._streams) >= self.limits.max_streams:
                log.warning("bus: stream %s not shown: this gateway holds at most %d streams", info.id, self.limits.max_streams)
                return
            self._install(info)
            return
        if st.info.epoch != info.epoch:
            # History lost in Redis: what this mirror holds belongs to the old epoch.
            st.forget_history()
        if info != st.info:
            if info.status != st.info.status:
                st.stats.status_since = time.time()
            st.info = info
            self._announce(protocol.stream_msg(info))

    def _drop_stream(self, key: int) -> None:
        m = self._mirrors.pop(key, None)
        if m is not None:
            m.active = False
            m.ready.set()
        if key in self._streams:
            LocalHub.remove_stream(self, key)

    # ------------------------------------------------------------------ background

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._writer)
            task_status.started()
            delay = 0.1
            while True:
                try:
                    await self._session()
                except* Exception as group:  # anything from Redis or the network: start again
                    # (When we are cancelled, coredis' teardown can add its own errors
                    # to the Cancelled; except* lets the Cancelled through regardless.)
                    await trio.lowlevel.checkpoint_if_cancelled()  # shutting down: nothing to report
                    e = next(leaves(group))  # the first real error, for one readable line
                    if self.bus.up:
                        log.warning("bus %s: lost (%s: %s)", self.url.shown, type(e).__name__, _short(e))
                    else:
                        self._report_failure(e)
                self._client = self._pubsub = None
                for m in self._mirrors.values():
                    m.filling = True  # live resumes only once history has caught up again
                self._set_up(False)
                await trio.sleep(delay)
                delay = min(delay * 2, self.backoff_max)
                self.bus.reconnects += 1

    def _report_failure(self, e: BaseException) -> None:
        """One log line per distinct reason the bus cannot be reached, not one per retry.
        Retrying goes on regardless (a certificate or password can be fixed on the
        Redis side); the line says why and what fixes it."""
        why, fatal = _why(e, self.cafile)
        if why == self._failing:
            return
        self._failing = why
        # A certificate, TLS or password problem will not go away by waiting: an error.
        log.log(logging.ERROR if fatal else logging.WARNING, "bus %s: %s", self.url.shown, why, extra={"event": "bus_error"})

    def _ssl_context(self) -> ssl.SSLContext:
        try:
            ctx = ssl.create_default_context(cafile=self.cafile)
        except (ssl.SSLError, OSError) as e:
            raise ValueError(f"cannot use {self.cafile} as the CA of the bus ({_short(e)}): it must be a PEM "
                             "certificate (the CA that signed the Redis server's certificate)") from None
        if not self.url.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _make_client(self) -> Any:
        u = self.url
        opts: dict[str, Any] = dict(username=u.username, password=u.password, stream_timeout=self.op_timeout,
                                    connect_timeout=self.op_timeout, decode_responses=False)
        if self._ssl is not None:
            opts.update(ssl_context=self._ssl)
        if u.cluster:
            return coredis.RedisCluster(startup_nodes=[{"host": h, "port": p} for h, p in u.nodes], **opts)
        host, port = u.nodes[0]
        return coredis.Redis(host=host, port=port, db=u.db, **opts)

    async def _session(self) -> None:
        # connect_timeout and stream_timeout bound the connection's own calls; every
        # call here also has a trio deadline.
        async with self._make_client() as client:
            pubsub = (client.sharded_pubsub if self.url.cluster else client.pubsub)(retry_policy=None, ignore_subscribe_messages=True)
            async with pubsub:
                with trio.fail_after(self.op_timeout):
                    await pubsub.subscribe(**{EVENTS: self._on_message})
                self._client, self._pubsub = client, pubsub
                await self._load_catalog(client)
                self._set_up(True)
                for p in self._pubs.values():
                    p.dirty = True
                self._work.set()
                for key, m in self._mirrors.items():
                    if m.active:
                        self._nursery.start_soon(self._follow, key, m)
                await self._watch(client)

    async def _load_catalog(self, client: Any) -> None:
        with trio.fail_after(self.op_timeout):
            raw = await client.hgetall(CATALOG)
        entries = {}
        for k, v in raw.items():
            try:
                e = json.loads(v)
                entries[int(k)] = e
            except (ValueError, TypeError):
                log.warning("bus: an unreadable catalog entry (key %r) was ignored", k)
        for key, e in self._entries.items():
            if key not in entries:
                # Redis lost it (a restart without persistence, a flush): its publisher
                # registers it again as soon as it reconnects. Until then, disconnected.
                entries[key] = {**e, "owner": None}
        await self._check_alive(client, entries)
        self._entries = entries
        for key in entries:
            self._refresh(key)

    async def _check_alive(self, client: Any, entries: Mapping[int, Mapping[str, Any]]) -> None:
        owners = sorted({e.get("owner") for e in entries.values() if e.get("owner")})
        alive = set()
        if owners:
            with trio.fail_after(self.op_timeout):
                got = await client.mget([alive_key(o) for o in owners])
            alive = {o for o, v in zip(owners, got) if v is not None}
        if self._pubs and self.bus.up:
            alive.add(self.owner)
        changed = alive ^ self._alive
        self._alive = alive
        if changed:
            for key, e in entries.items():
                if e.get("owner") in changed:
                    self._refresh(key)

    async def _watch(self, client: Any) -> None:
        """Heartbeats, publisher liveness and idle mirrors, a few times per TTL."""
        every = max(0.05, min(0.5, self.ttl_s / 4))
        while True:
            if self._pubs and not any(p.dirty for p in self._pubs.values()):
                with trio.fail_after(self.op_timeout):
                    kept = await client.set(alive_key(self.owner), b"1", px=int(self.ttl_s * 1000), condition=PureToken.XX)
                if not kept:
                    # Our heartbeat vanished while connected (FLUSHALL, a failover that
                    # lost data): the catalog entries went with it. Register again.
                    for p in self._pubs.values():
                        self._mark(p)
            await self._check_alive(client, self._entries)
            await self._sweep()
            await trio.sleep(every)

    async def _sweep(self) -> None:
        now = time.monotonic()
        for key, m in list(self._mirrors.items()):
            st = self._streams.get(key)
            if st is not None and st.subs:
                m.idle_since = None
                continue
            if m.idle_since is None:
                m.idle_since = now
            elif now - m.idle_since >= self.linger_s:
                # Nobody here wants it any more: stop receiving it, let its history go.
                m.active = False
                del self._mirrors[key]
                if st is not None:
                    st.forget_history()
                with trio.fail_after(self.op_timeout):
                    await self._pubsub.unsubscribe(live_channel(key))

    # ---- publisher

    async def _writer(self) -> None:
        """Register streams and write batches whenever Redis is reachable."""
        while True:
            await self._work.wait()
            self._work = trio.Event()
            while self.bus.up and self._client is not None and (self._outbox or any(p.dirty for p in self._pubs.values())):
                client = self._client
                taken: list[list] = []
                try:
                    for p in list(self._pubs.values()):
                        if p.dirty:
                            await self._register(client, p)
                    while self._outbox and len(taken) < 256:
                        item = self._outbox.popleft()
                        self._outbox_size -= item[2].nbytes + item[3].nbytes
                        taken.append(item)
                    if taken:
                        await self._write(client, taken)
                except Exception as e:
                    # Back in the outbox, oldest first (XADD refuses what did get written).
                    for item in reversed(taken):
                        self._outbox.appendleft(item)
                        self._outbox_size += item[2].nbytes + item[3].nbytes
                    e = next(leaves(e))
                    log.info("bus: writing failed (%s: %s); kept for when Redis is back", type(e).__name__, _short(e))
                    await self._up_event.wait()
                    await trio.sleep(0.05)  # the session re-registers first

    def _first_held(self, p: _Pub) -> int:
        """The local seq of p's oldest batch still waiting in the outbox (its next one
        if none): where p's history in Redis goes on. Streams interleave in the outbox,
        so its head may be another stream's."""
        return next((item[1] for item in self._outbox if item[0] is p), p.stats.batches)

    async def _register(self, client: Any, p: _Pub) -> None:
        with trio.fail_after(self.op_timeout):
            key = int(await client.eval(ALLOCATE, keys=[IDS, KEYS, KEYSEQ], args=[p.info.id, p.key or 0]))
            raw = await client.hget(CATALOG, str(key))
            old = json.loads(raw) if raw else None
            continues = None
            if old is not None and old.get("epoch"):
                epoch = old["epoch"]
                continues = old.get("continues")
            elif p.epoch is not None:
                # Our entry is gone (flush, failover): this history starts afresh, and
                # says which epoch and seq it continues.
                epoch = secrets.token_hex(6)
                first = p.base + self._first_held(p)
                continues = {"epoch": p.epoch, "seq": first}
            else:
                epoch = secrets.token_hex(6)
            if p.base is None:
                last = await client.xrevrange(history_key(key), "+", "-", count=1)
                nxt = int(last[0].identifier.split(b"-")[0]) + 1 if last else 0
                if old and old.get("next_seq"):
                    nxt = max(nxt, int(old["next_seq"]))
                p.base = nxt - self._first_held(p)
        if p.key is not None and p.key != key:
            self._pub_by_key.pop(p.key, None)
        p.key, p.epoch = key, epoch
        self._pub_by_key[key] = p
        if p.removed:
            entry_text = json.dumps({"removed": key})
            with trio.fail_after(self.op_timeout):
                await client.hdel(CATALOG, [str(key)])
                await self._publish_text(client, EVENTS, entry_text)
            p.dirty = False
            return
        info = replace(p.info, key=key, epoch=epoch)
        entry = {**info.to_json(), "owner": self.owner, "next_seq": p.base + p.stats.batches}
        if continues:
            entry["continues"] = continues
        text = json.dumps(entry, separators=(",", ":"))
        with trio.fail_after(self.op_timeout):
            await client.set(alive_key(self.owner), b"1", px=int(self.ttl_s * 1000))
            await client.hset(CATALOG, {str(key): text})
            await self._publish_text(client, EVENTS, text)
        p.dirty = False

    async def _publish_text(self, client: Any, channel: str, data: str | bytes) -> None:
        if self.url.cluster:
            await client.spublish(channel, data)
        else:
            await client.publish(channel, data)

    async def _write(self, client: Any, items: list[list]) -> None:
        """XADD then PUBLISH each batch, one pipelined round trip for all of them
        (per stream on a cluster, where a pipeline stays on one shard)."""
        if self.url.cluster:
            groups: dict[int, list[list]] = {}
            for item in items:
                groups.setdefault(item[0].handle, []).append(item)
            rounds = list(groups.values())
        else:
            rounds = [items]
        publish = "spublish" if self.url.cluster else "publish"
        for group in rounds:
            pipe = client.pipeline(transaction=False, raise_on_error=False, timeout=self.op_timeout)
            maxlen: dict[int, int] = {}  # per stream, once per round (not per batch)
            async with pipe:
                for item in group:
                    p = item[0]
                    key = p.key
                    seq = p.base + item[1]
                    if item[4] is None or item[5] != key:  # encoded once, even if written twice
                        item[4] = protocol.encode_batch(key, seq, item[2], item[3])
                        item[5] = key
                    if key not in maxlen:
                        maxlen[key] = p.maxlen(self.limits)
                    pipe.xadd(history_key(key), {b"b": item[4]}, identifier=f"{seq}-1",
                              trim_strategy=PureToken.MAXLEN, threshold=maxlen[key])
                    getattr(pipe, publish)(live_channel(key), item[4])
            for r in pipe.results or ():
                if isinstance(r, Exception) and "equal or smaller" not in str(r):
                    raise r
            now = time.monotonic()
            for item in group:
                p = item[0]
                if p.t_first is None:
                    p.t_first = now
                p.sent += 1
                p.sent_bytes += len(item[4])
            self.bus.written += len(group)


def _why(e: BaseException, cafile: str | None) -> tuple[str, bool]:
    """A readable reason for a failed connection, with its fix when there is one, and
    whether it is one that waiting will not fix."""
    x: BaseException | None = e
    seen = 0
    while x is not None and seen < 10:  # coredis wraps the ssl error in its ConnectionError
        if isinstance(x, ssl.SSLCertVerificationError):
            reason = x.verify_message or _short(x)
            if "mismatch" in reason:
                return (f"the Redis server's TLS certificate does not name this host ({reason}); "
                        "use the host name the certificate was issued for in the bus URL; retrying"), True
            trusted = f"the CA in {cafile}" if cafile else "the system's trust store"
            return (f"the Redis server's TLS certificate is not trusted by {trusted} ({reason}); "
                    "pass --bus-cafile PATH (or ?ca=PATH in the URL) with the CA that signed it; retrying"), True
        if isinstance(x, ssl.SSLError):
            return (f"TLS with the Redis server failed ({_short(x)}); check that the port serves TLS "
                    "(tls-port), or use redis:// for a plain one; retrying"), True
        if isinstance(x, coredis.exceptions.AuthenticationError) or "WRONGPASS" in str(x) or "NOAUTH" in str(x):
            return f"Redis refused the password ({_short(x)}); check the password in the bus URL; retrying", True
        x = x.__cause__ or x.__context__
        seen += 1
    return f"unreachable ({type(e).__name__}: {_short(e)}); retrying with backoff", False


def _short(e: BaseException) -> str:
    return str(e).splitlines()[0][:200] if str(e) else ""
