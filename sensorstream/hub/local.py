"""The in-process hub: stream catalog, bounded history, subscriptions and fan-out.

One process, no I/O: `publish` encodes a batch once and hands the same `Frame`
to every subscriber. Keys are derived from stream ids (the same profile gives
the same keys on every start, so logs and recordings agree across restarts);
epochs are drawn afresh for every stream this process creates, because its
history dies with the process.

`RedisHub` (hub/redis.py) reuses everything here for its own clients: the
streams it mirrors from Redis live in the same tables and fan out the same way.
"""

from __future__ import annotations

import collections
import heapq
import logging
import secrets
import time
import zlib
from dataclasses import replace
from typing import Callable, Iterable, Mapping

import numpy as np

from .. import protocol
from ..protocol import Channel, StreamInfo
from .base import (
    FRAME_OVERHEAD,
    Frame,
    Hub,
    HubError,
    HubLimits,
    Resumed,
    StreamStats,
    Subscriber,
    Subscription,
    glob_matcher,
    is_glob,
)

log = logging.getLogger("sensorstream.hub")

class _Stream:
    # next_seq: the seq the next batch will carry (one past the last one fanned out).
    __slots__ = ("info", "stats", "history", "history_bytes", "subs", "_fanout", "next_seq")

    def __init__(self, info: StreamInfo):
        self.info = info
        self.stats = StreamStats()
        self.history: collections.deque[Frame] = collections.deque()
        self.history_bytes = 0
        self.subs: set[Subscriber] = set()
        self._fanout: tuple[Subscriber, ...] | None = ()
        self.next_seq = 0

    @property
    def fanout(self) -> tuple[Subscriber, ...]:
        """A tuple snapshot of subs, so the per-batch loop iterates a tuple and never a
        set that could change under it. Rebuilt when first needed after subs change
        (`subs_changed`), not on every subscribe: in a storm of N clients subscribing
        that would copy the set N times, O(N^2)."""
        f = self._fanout
        if f is None:
            f = self._fanout = tuple(self.subs)
        return f

    def subs_changed(self) -> None:
        self._fanout = None

    def forget_history(self) -> None:
        self.history.clear()
        self.history_bytes = 0


def _t_last(frame: Frame) -> float:
    return frame.t_last


def resume_from(st: _Stream, epoch: str, seq: int) -> tuple[list[Frame], Resumed]:
    """The frames after `seq` of a client that saw (epoch, seq), or why there are none.

    Recovered only when history still holds the batch right after `seq`: a
    partial replay would hide a hole, so an older point continues live from now
    and says how many batches the client lost."""
    if epoch != st.info.epoch:
        return [], Resumed(False, reason="epoch_changed")
    if seq + 1 >= st.next_seq:
        return [], Resumed(True, 0)
    hist = st.history
    if not hist or hist[0].seq > seq + 1:
        return [], Resumed(False, reason="too_old", lost=st.next_seq - seq - 1)
    # Resume points sit near the end of history: walk back from there.
    frames = []
    for f in reversed(hist):
        if f.seq <= seq:
            break
        frames.append(f)
    frames.reverse()
    return frames, Resumed(True, len(frames))


class LocalHub(Hub):
    def __init__(self, limits: HubLimits = HubLimits()):
        self.limits = limits
        self._streams: dict[int, _Stream] = {}
        self._by_id: dict[str, int] = {}
        self._attached: set[Subscriber] = set()
        # Each subscriber's patterns; globs with their matcher (None for plain ids).
        self._patterns: dict[Subscriber, dict[str, Callable[[str], object] | None]] = {}
        # Totals for /metrics.
        self.frames_published = 0
        self.bytes_published = 0

    # ------------------------------------------------------------------ source side

    def add_stream(self, id: str, channels: Iterable[Channel], rate_hz: float | None = None, device: str = "",
                   commands: bool = False, actions: tuple[dict, ...] = ()) -> StreamInfo:
        channels = tuple(channels)
        if id in self._by_id:
            # A source restarting under the same id (e.g. a device replugged)
            # continues its stream: same key, seq carries on.
            key = self._by_id[id]
            return self.update_stream(key, channels=channels, status=protocol.LIVE)
        if len(self._streams) >= self.limits.max_streams:
            raise HubError("too_many_streams", f"the hub holds at most {self.limits.max_streams} streams")
        self._check_channels(channels)
        info = StreamInfo(key=self._key_for(id), id=id, channels=channels, rate_hz=rate_hz, status=protocol.LIVE, device=device,
                          epoch=secrets.token_hex(6), commands=commands, actions=tuple(actions))
        self._install(info)
        return info

    def _table_observers(self) -> tuple:
        """Who hears about changes to these tables: the hub's observers. (A bus hub's
        tables are mirrors; its observers watch the streams it publishes instead.)"""
        return self.observers

    def _key_for(self, id: str) -> int:
        """The same key for the same id on every start, whatever order sources come up
        in (they start concurrently). 31 bits, so a collision (which only then makes
        the order matter) is a one-in-millions event among a thousand streams."""
        key = (zlib.crc32(id.encode()) & 0x7FFFFFFF) or 1
        while key in self._streams:
            key = key % 0x7FFFFFFF + 1
        return key

    def _install(self, info: StreamInfo) -> _Stream:
        """Add a stream to the tables, pick it up in matching glob subscriptions, announce it."""
        st = _Stream(info)
        self._streams[info.key] = st
        self._by_id[info.id] = info.key
        # Existing glob subscriptions pick up a new stream that matches them.
        for sub, pats in self._patterns.items():
            if any(m(info.id) if m is not None else p == info.id for p, m in pats.items()):
                st.subs.add(sub)
        st.subs_changed()
        self._announce(protocol.stream_msg(info))
        for obs in self._table_observers():
            obs.on_stream(info)
        log.info("stream added: %s (key %d, %d channels)", info.id, info.key, len(info.channels))
        return st

    def update_stream(self, key: int, *, channels: Iterable[Channel] | None = None, status: str | None = None,
                      error: str | None = None) -> StreamInfo:
        st = self._streams[key]
        info = self._changed(st.info, st.stats, channels, status, error)
        if info != st.info:
            st.info = info
            self._announce(protocol.stream_msg(info))
            for obs in self._table_observers():
                obs.on_stream(info)
        return info

    def _changed(self, info: StreamInfo, stats: StreamStats, channels: Iterable[Channel] | None, status: str | None,
                 error: str | None = None) -> StreamInfo:
        """`info` with new channels (checked against the limit) and/or status (timed;
        `error` kept only with FAILED)."""
        if channels is not None:
            channels = tuple(channels)
            self._check_channels(channels)
            info = replace(info, channels=channels)
        if status is not None:
            error = error if status == protocol.FAILED else None
            if status != info.status:
                stats.status_since = time.time()
                log.info("stream %s is %s%s", info.id, status, f" ({error})" if error else "")
            if status != info.status or error != info.error:
                info = replace(info, status=status, error=error)
        return info

    def remove_stream(self, key: int) -> None:
        st = self._streams.pop(key, None)
        if st is None:
            return
        del self._by_id[st.info.id]
        self._announce(protocol.stream_removed(key))
        for obs in self._table_observers():
            obs.on_removed(key)

    def publish(self, key: int, seq: int, timestamps: np.ndarray, values: np.ndarray) -> None:
        st = self._streams[key]
        payload = protocol.encode_batch(key, seq, timestamps, values)
        n = len(timestamps)
        self._fan_out(st, Frame(key, seq, float(timestamps[-1]) if n else 0.0, n, payload))
        for obs in self._table_observers():
            obs.on_batch(st.info, timestamps, values)

    def notify_subscribers(self, key: int, text: str) -> None:
        st = self._streams.get(key)
        for sub in st.fanout if st is not None else ():
            sub.notify(text)

    def _fan_out(self, st: _Stream, frame: Frame) -> None:
        """Keep a frame in history and hand it to every subscriber: once per batch."""
        st.next_seq = frame.seq + 1
        stats = st.stats
        stats.batches += 1
        stats.samples += frame.n_samples
        stats.last_batch_wall = time.time()
        size = len(frame.payload)
        self.frames_published += 1
        self.bytes_published += size
        self._remember(st, frame)
        fanout = st.fanout
        fan = len(fanout)
        stats.frames_out += fan
        stats.samples_out += frame.n_samples * fan
        stats.bytes_out += size * fan
        for sub in fanout:
            sub.deliver(frame)

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
                st.subs_changed()

    def _match(self, patterns: Iterable[str]) -> tuple[list[_Stream], dict[str, Callable[[str], object] | None]]:
        """The streams the patterns cover, and the patterns with their matchers."""
        matched: dict[int, _Stream] = {}
        matchers: dict[str, Callable[[str], object] | None] = {}
        for p in patterns:
            if is_glob(p):
                m = matchers[p] = glob_matcher(p)
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

    def subscribe(self, sub: Subscriber, patterns: Iterable[str], history_s: float = 0.0,
                  resume: Mapping[str, tuple[str, int]] | None = None) -> Subscription:
        streams, matchers = self._match(patterns)  # raises before anything changes
        self._patterns.setdefault(sub, {}).update(matchers)
        out = Subscription([st.info.key for st in streams], [])
        history_s = min(history_s, self.limits.history_s)
        per_stream: list[list[Frame]] = []
        for st in streams:
            point = resume.get(st.info.id) if resume else None
            if sub in st.subs:
                if point is not None:  # already live here: nothing to catch up on
                    out.resumed[st.info.id] = Resumed(True, 0)
                continue
            st.subs.add(sub)
            st.subs_changed()
            if point is not None:
                frames, out.resumed[st.info.id] = resume_from(st, *point)
                per_stream.append(list(frames))
            elif history_s > 0 and st.history:
                horizon = st.history[-1].t_last - history_s
                per_stream.append([f for f in st.history if f.t_last >= horizon])
        per_stream = [h for h in per_stream if h]
        if len(per_stream) == 1:
            out.history.extend(per_stream[0])
        elif per_stream:
            # Oldest first across the streams too (docs/protocol.md), by each batch's
            # last timestamp; merged, not sorted, so each stream keeps its seq order
            # even if its device's clock stepped back.
            out.history.extend(heapq.merge(*per_stream, key=_t_last))
        return out

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
                st.subs_changed()
                keys.append(st.info.key)
        return keys

    def stats(self, key: int) -> StreamStats:
        return self._streams[key].stats

    def subscriber_count(self) -> int:
        return sum(len(st.subs) for st in self._streams.values())

    def subscriber_count_of(self, key: int) -> int:
        return len(self._streams[key].subs)

    def history_frames(self, key: int) -> list[Frame]:
        return list(self._streams[key].history)

    def subscribers_of(self, key: int) -> tuple[Subscriber, ...]:
        st = self._streams.get(key)
        return () if st is None else st.fanout
