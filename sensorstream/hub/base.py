"""The Hub interface: what sources and the transport depend on, and nothing more.

Sources talk to a hub through `add_stream` / `update_stream` / `publish`; the
transport through `attach` / `ready` / `subscribe` / `unsubscribe`. `LocalHub`
(hub/local.py) keeps everything in this process; `RedisHub` (hub/redis.py)
shares streams between processes through Redis. Neither side knows which one
it has.

Everything except `run` and `ready` is synchronous and never blocks: `publish`
encodes the batch once, and every subscriber's `deliver` gets the same `Frame`
object and must only enqueue. Whatever waits on a slow client waits in that
client's own task, never here.

Resume. Every stream has an `epoch` (a string that changes when its history is
lost) and a `seq` that grows by one per batch. A client that saw (epoch, seq)
asks to resume from there; the hub answers with the batches it still holds
after that seq, or says why it cannot (`epoch_changed`, `too_old`) and how many
batches are lost when it knows.
"""

from __future__ import annotations

import abc
import fnmatch
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol as TypingProtocol

import numpy as np
import trio

from .. import protocol
from ..protocol import Channel, StreamInfo

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


@dataclass(frozen=True, slots=True)
class Resumed:
    """The answer to one stream's resume request (protocol.md, "Resume")."""

    recovered: bool
    batches: int = 0  # replayed, when recovered
    reason: str = ""  # "epoch_changed" | "too_old", when not
    lost: int | None = None  # batches the client will never get, when known

    def to_json(self) -> dict[str, Any]:
        if self.recovered:
            return {"recovered": True, "batches": self.batches}
        d: dict[str, Any] = {"recovered": False, "reason": self.reason}
        if self.lost is not None:
            d["lost"] = self.lost
        return d


@dataclass(slots=True)
class Subscription:
    """What `subscribe` returns: the matched keys, the frames to send before any
    live one (requested history and resumed batches, oldest first per stream),
    and one `Resumed` per stream id the client asked to resume."""

    keys: list[int]
    history: list[Frame]
    resumed: dict[str, Resumed] = field(default_factory=dict)


class Hub(abc.ABC):
    """The interface sources and the transport depend on."""

    # --- lifetime
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Background work the hub needs (a bus connection), in the server's nursery."""
        task_status.started()

    def bus_status(self) -> dict[str, Any] | None:
        """None without a bus; else {"up": bool, ...} for hello, /healthz and /metrics."""
        return None

    # --- source side
    @abc.abstractmethod
    def add_stream(self, id: str, channels: Iterable[Channel], rate_hz: float | None = None, device: str = "",
                   commands: bool = False, actions: tuple[dict, ...] = ()) -> StreamInfo:
        """Register a stream; the returned info's key is the handle for the calls below.
        `commands`/`actions`: its source takes commands (docs/protocol.md, "Commands")."""

    @abc.abstractmethod
    def update_stream(self, key: int, *, channels: Iterable[Channel] | None = None, status: str | None = None,
                      error: str | None = None) -> StreamInfo:
        """Change a stream's channels and/or status (protocol.STREAM_STATUSES). `error`
        is the reason of a FAILED status; any other status clears it."""

    @abc.abstractmethod
    def remove_stream(self, key: int) -> None: ...

    @abc.abstractmethod
    def publish(self, key: int, seq: int, timestamps: np.ndarray, values: np.ndarray) -> None: ...

    @abc.abstractmethod
    def next_seq(self, key: int) -> int:
        """The seq a (re)starting source should use next, so seq keeps increasing across replugs."""

    # Observers see every stream's changes and batches (after the fan-out). With a
    # bus they watch the streams this process publishes, where the samples are.
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

    #: True when `ready` has work to do (a bus hub): the transport awaits it before a subscribe.
    needs_ready = False

    async def ready(self, patterns: Iterable[str]) -> None:
        """Await this before `subscribe`: the hub then holds the history of every
        stream the patterns match (a bus hub fetches it, one read per stream however
        many clients wait for it). The in-process hub always does: nothing to wait for."""

    @abc.abstractmethod
    def subscribe(self, sub: Subscriber, patterns: Iterable[str], history_s: float = 0.0,
                  resume: Mapping[str, tuple[str, int]] | None = None) -> Subscription:
        """Add patterns; return the matched keys and the frames to send first.

        Atomic with respect to publish: every frame published after this call
        is delivered, every frame before it that the client should get (history
        asked for, or batches after its resume point) is in the returned list, so
        history and live meet with no gap and no duplicate. `resume` maps stream
        ids to the (epoch, last seq received) of a client that saw them before."""

    @abc.abstractmethod
    def unsubscribe(self, sub: Subscriber, patterns: Iterable[str]) -> list[int]: ...

    @abc.abstractmethod
    def stats(self, key: int) -> StreamStats: ...

    @abc.abstractmethod
    def subscriber_count_of(self, key: int) -> int: ...

    def history_frames(self, key: int) -> list[Frame]:
        """The frames of a stream's history, oldest first (GET /export). A hub that
        keeps none in this process raises NotImplementedError."""
        raise NotImplementedError

    def subscribers_of(self, key: int) -> tuple[Subscriber, ...]:
        """This process's subscribers of a stream (`replay --speed 0` paces itself by
        their backlogs: sources/pacing.py); () for a stream it does not hold."""
        return ()


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def glob_matcher(pattern: str) -> Callable[[str], object]:
    """A matcher for one glob pattern (fnmatch syntax, whole id, case-sensitive).

    Not `fnmatch.fnmatchcase`: it caches every pattern it has compiled, up to
    32,768 of them, for the life of the process, and clients choose patterns.
    A matcher lives as long as the subscription that holds it (re's own cache
    shares the common ones and keeps at most a few hundred)."""
    return re.compile(fnmatch.translate(pattern)).match
