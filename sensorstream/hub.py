"""The hub: stream catalog, bounded history, subscriptions and fan-out.

Sources talk to the hub through `add_stream` / `update_stream` / `publish`;
the transport talks to it through `attach` / `subscribe` / `unsubscribe`.
`Hub` is that interface; `LocalHub` is the in-process implementation. A
Redis backplane implements the same methods and nothing on either side changes.

Everything here is synchronous and never blocks: `publish` encodes the batch
once and hands the same `Frame` object to every subscriber's `deliver`, which
must only enqueue. Whatever waits on a slow client waits in that client's
own task, never here.
"""

from __future__ import annotations

import abc
import collections
import fnmatch
import logging
import re
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Protocol as TypingProtocol

import numpy as np

from . import protocol
from .protocol import Channel, StreamInfo

log = logging.getLogger(__name__)


# What a frame in history costs beyond its payload, for the byte cap: the Frame
# object and the buffer's header. Without it a stream of one-sample batches
# would hold many times its cap.
FRAME_OVERHEAD = 320


class Frame:
    """One encoded batch, shared by every subscriber (never copied per client).

    Transport-neutral: how a transport frames it (once per batch, for all its
    clients) is the transport's business (see server/ws/frames.py).
    """

    # __weakref__: a replay holds history frames weakly (see server.ws.outbox.History).
    __slots__ = ("key", "seq", "t_last", "n_samples", "payload", "__weakref__")

    def __init__(self, key: int, seq: int, t_last: float, n_samples: int, payload: bytes):
        self.key = key
        self.seq = seq
        self.t_last = t_last
        self.n_samples = n_samples
        self.payload = payload


class Subscriber(TypingProtocol):
    """What the hub needs from a client session. Both calls must return at once."""

    def deliver(self, frame: Frame) -> None: ...

    def notify(self, text: str) -> None: ...


class Observer(TypingProtocol):
    """Something that watches every stream without subscribing (alerts). Called
    synchronously like a subscriber: must return at once."""

    def on_stream(self, info: StreamInfo) -> None: ...

    def on_removed(self, key: int) -> None: ...

    def on_batch(self, info: StreamInfo, timestamps: np.ndarray, values: np.ndarray) -> None: ...


class HubError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class StreamStats:
    batches: int = 0
    samples: int = 0
    last_batch_wall: float | None = None  # time.time() of the last publish
    status_since: float = field(default_factory=time.time)
    # Fan-out: frames (and their samples and payload bytes) queued to subscribers,
    # counted once per batch (batch x subscribers), not per client.
    frames_out: int = 0
    samples_out: int = 0
    bytes_out: int = 0
    # Counters a source wants visible in /healthz and /metrics (parse errors, reconnects...).
    source: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HubLimits:
    history_s: float = 60.0
    history_bytes: int = 32 * 1024 * 1024  # per stream
    max_streams: int = 1024
    max_channels: int = protocol.MAX_STREAM_CHANNELS  # per stream


class Hub(abc.ABC):
    """The interface sources and the transport depend on."""

    # --- source side
    @abc.abstractmethod
    def add_stream(self, id: str, channels: Iterable[Channel], rate_hz: float | None = None, device: str = "") -> StreamInfo: ...

    @abc.abstractmethod
    def update_stream(self, key: int, *, channels: Iterable[Channel] | None = None, status: str | None = None) -> StreamInfo: ...

    @abc.abstractmethod
    def remove_stream(self, key: int) -> None: ...

    @abc.abstractmethod
    def publish(self, key: int, seq: int, timestamps: np.ndarray, values: np.ndarray) -> None: ...

    @abc.abstractmethod
    def next_seq(self, key: int) -> int:
        """The seq a (re)starting source should use next, so seq keeps increasing across replugs."""

    # Observers see every stream's changes and batches (after the fan-out).
    observers: tuple[Observer, ...] = ()

    def add_observer(self, obs: Observer) -> None:
        self.observers = (*self.observers, obs)

    def notify_subscribers(self, key: int, text: str) -> None:
        """Send a control message to the subscribers of one stream (alerts)."""
        raise NotImplementedError

    # --- transport side
    @abc.abstractmethod
    def catalog(self) -> list[StreamInfo]: ...

    @abc.abstractmethod
    def attach(self, sub: Subscriber) -> None: ...

    @abc.abstractmethod
    def detach(self, sub: Subscriber) -> None: ...

    @abc.abstractmethod
    def subscribe(self, sub: Subscriber, patterns: Iterable[str], history_s: float = 0.0) -> tuple[list[int], list[Frame]]:
        """Add patterns; return the matched keys and the history frames to send first.

        Atomic with respect to publish: every frame published after this call
        is delivered, every frame before it is in the returned history (if
        asked), so history and live meet with no gap and no duplicate."""

    @abc.abstractmethod
    def unsubscribe(self, sub: Subscriber, patterns: Iterable[str]) -> list[int]: ...

    @abc.abstractmethod
    def stats(self, key: int) -> StreamStats: ...

    @abc.abstractmethod
    def subscriber_count_of(self, key: int) -> int: ...


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _glob(pattern: str) -> Callable[[str], object]:
    """A matcher for one glob pattern (fnmatch syntax, whole id, case-sensitive).

    Not `fnmatch.fnmatchcase`: it caches every pattern it has compiled, up to
    32,768 of them, for the life of the process, and clients choose patterns.
    A matcher lives as long as the subscription that holds it (re's own cache
    shares the common ones and keeps at most a few hundred)."""
    return re.compile(fnmatch.translate(pattern)).match


class _Stream:
    __slots__ = ("info", "stats", "history", "history_bytes", "subs", "fanout", "next_seq")

    def __init__(self, info: StreamInfo):
        self.info = info
        self.stats = StreamStats()
        self.history: collections.deque[Frame] = collections.deque()
        self.history_bytes = 0
        self.subs: set[Subscriber] = set()
        # A tuple snapshot of subs, rebuilt only when subscriptions change, so the
        # per-batch loop iterates a tuple and never a set that could change under it.
        self.fanout: tuple[Subscriber, ...] = ()
        self.next_seq = 0


class LocalHub(Hub):
    def __init__(self, limits: HubLimits = HubLimits()):
        self.limits = limits
        self._streams: dict[int, _Stream] = {}
        self._by_id: dict[str, int] = {}
        self._next_key = 1
        self._attached: set[Subscriber] = set()
        # Each subscriber's patterns; globs with their matcher (None for plain ids).
        self._patterns: dict[Subscriber, dict[str, Callable[[str], object] | None]] = {}
        # Totals for /metrics.
        self.frames_published = 0
        self.bytes_published = 0

    # ------------------------------------------------------------------ source side

    def add_stream(self, id: str, channels: Iterable[Channel], rate_hz: float | None = None, device: str = "") -> StreamInfo:
        channels = tuple(channels)
        if id in self._by_id:
            # A source restarting under the same id (e.g. a device replugged)
            # continues its stream: same key, seq carries on.
            key = self._by_id[id]
            return self.update_stream(key, channels=channels, status="live")
        if len(self._streams) >= self.limits.max_streams:
            raise HubError("too_many_streams", f"the hub holds at most {self.limits.max_streams} streams")
        self._check_channels(channels)
        key = self._next_key
        self._next_key += 1
        st = _Stream(StreamInfo(key=key, id=id, channels=channels, rate_hz=rate_hz, status="live", device=device))
        self._streams[key] = st
        self._by_id[id] = key
        # Existing glob subscriptions pick up a new stream that matches them.
        for sub, pats in self._patterns.items():
            if any(m(id) if m is not None else p == id for p, m in pats.items()):
                st.subs.add(sub)
        st.fanout = tuple(st.subs)
        self._announce(protocol.stream_msg(st.info))
        for obs in self.observers:
            obs.on_stream(st.info)
        log.info("stream added: %s (key %d, %d channels)", id, key, len(channels))
        return st.info

    def update_stream(self, key: int, *, channels: Iterable[Channel] | None = None, status: str | None = None) -> StreamInfo:
        st = self._streams[key]
        info = st.info
        if channels is not None:
            channels = tuple(channels)
            self._check_channels(channels)
            info = replace(info, channels=channels)
        if status is not None and status != info.status:
            info = replace(info, status=status)
            st.stats.status_since = time.time()
            log.info("stream %s is %s", info.id, status)
        if info != st.info:
            st.info = info
            self._announce(protocol.stream_msg(info))
            for obs in self.observers:
                obs.on_stream(info)
        return info

    def remove_stream(self, key: int) -> None:
        st = self._streams.pop(key, None)
        if st is None:
            return
        del self._by_id[st.info.id]
        self._announce(protocol.stream_removed(key))
        for obs in self.observers:
            obs.on_removed(key)

    def publish(self, key: int, seq: int, timestamps: np.ndarray, values: np.ndarray) -> None:
        st = self._streams[key]
        payload = protocol.encode_batch(key, seq, timestamps, values)
        n = len(timestamps)
        frame = Frame(key, seq, float(timestamps[-1]) if n else 0.0, n, payload)
        st.next_seq = seq + 1
        stats = st.stats
        stats.batches += 1
        stats.samples += n
        stats.last_batch_wall = time.time()
        self.frames_published += 1
        self.bytes_published += len(payload)
        self._remember(st, frame)
        fan = len(st.fanout)
        stats.frames_out += fan
        stats.samples_out += n * fan
        stats.bytes_out += len(payload) * fan
        for sub in st.fanout:
            sub.deliver(frame)
        for obs in self.observers:
            obs.on_batch(st.info, timestamps, values)

    def notify_subscribers(self, key: int, text: str) -> None:
        st = self._streams.get(key)
        for sub in st.fanout if st is not None else ():
            sub.notify(text)

    def next_seq(self, key: int) -> int:
        return self._streams[key].next_seq

    def _remember(self, st: _Stream, frame: Frame) -> None:
        hist = st.history
        hist.append(frame)
        st.history_bytes += len(frame.payload) + FRAME_OVERHEAD
        horizon = frame.t_last - self.limits.history_s
        cap = self.limits.history_bytes
        while hist and (hist[0].t_last < horizon or st.history_bytes > cap):
            st.history_bytes -= len(hist.popleft().payload) + FRAME_OVERHEAD

    def _check_channels(self, channels: tuple[Channel, ...]) -> None:
        if len(channels) > self.limits.max_channels:
            raise HubError("too_many_channels", f"a stream has at most {self.limits.max_channels} channels")

    def _announce(self, text: str) -> None:
        for sub in tuple(self._attached):
            sub.notify(text)

    # ------------------------------------------------------------------ transport side

    def catalog(self) -> list[StreamInfo]:
        return [st.info for st in self._streams.values()]

    def stream_by_id(self, id: str) -> StreamInfo | None:
        key = self._by_id.get(id)
        return None if key is None else self._streams[key].info

    def attach(self, sub: Subscriber) -> None:
        self._attached.add(sub)
        self._patterns.setdefault(sub, {})

    def detach(self, sub: Subscriber) -> None:
        self._attached.discard(sub)
        self._patterns.pop(sub, None)
        for st in self._streams.values():
            if sub in st.subs:
                st.subs.discard(sub)
                st.fanout = tuple(st.subs)

    def _match(self, patterns: Iterable[str]) -> tuple[list[_Stream], dict[str, Callable[[str], object] | None]]:
        """The streams the patterns cover, and the patterns with their matchers."""
        matched: dict[int, _Stream] = {}
        matchers: dict[str, Callable[[str], object] | None] = {}
        for p in patterns:
            if is_glob(p):
                m = matchers[p] = _glob(p)
                for st in self._streams.values():
                    if m(st.info.id):
                        matched[st.info.key] = st
            else:
                key = self._by_id.get(p)
                if key is None:
                    raise HubError("unknown_stream", f"no stream with id {p!r}")
                matched[key] = self._streams[key]
                matchers[p] = None
        return list(matched.values()), matchers

    def subscribe(self, sub: Subscriber, patterns: Iterable[str], history_s: float = 0.0) -> tuple[list[int], list[Frame]]:
        streams, matchers = self._match(patterns)  # raises before anything changes
        self._patterns.setdefault(sub, {}).update(matchers)
        history: list[Frame] = []
        history_s = min(history_s, self.limits.history_s)
        for st in streams:
            if sub not in st.subs:
                st.subs.add(sub)
                st.fanout = tuple(st.subs)
                if history_s > 0 and st.history:
                    horizon = st.history[-1].t_last - history_s
                    history.extend(f for f in st.history if f.t_last >= horizon)
        return [st.info.key for st in streams], history

    def unsubscribe(self, sub: Subscriber, patterns: Iterable[str]) -> list[int]:
        streams, matchers = self._match(patterns)
        pats = self._patterns.get(sub)
        if pats is not None:
            for p in matchers:
                pats.pop(p, None)
        keys = []
        for st in streams:
            if sub in st.subs:
                st.subs.discard(sub)
                st.fanout = tuple(st.subs)
                keys.append(st.info.key)
        return keys

    def stats(self, key: int) -> StreamStats:
        return self._streams[key].stats

    def subscriber_count(self) -> int:
        return sum(len(st.subs) for st in self._streams.values())

    def subscriber_count_of(self, key: int) -> int:
        return len(self._streams[key].subs)
