"""The backstop around every source task: a source that dies says so, and comes back.

Sources handle the failures they expect (a port that vanishes: `disconnected`;
bad bytes: counters). A failure nobody foresaw (a bug, a device that asks the
hub for more channels than it allows) ends the source's task. `supervise`
then marks the streams that source fed `failed`, with a short human reason in
the stream object (`"error": "..."`), logs it (the first time with its
traceback, then one line), counts it, and restarts the source with capped
exponential backoff (1 s doubling to 60 s; a source that ran 60 s before it
failed starts afresh). A restarted source re-adds its stream, which makes it
`live` again with the same key and a continuing seq.

Which streams a source fed is recorded as it adds them: `supervise` gives the
source's task (and every task it starts, which inherit it) a context variable
holding a set, and `SourceStreams`, a hub observer, adds each stream created or
changed from inside that context to it. So no source has to declare its
stream ids, and a source that fans out into several streams marks them all.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Awaitable, Callable

import numpy as np
import trio

from .. import protocol
from ..excgroups import single
from ..hub import Hub, HubError
from ..protocol import StreamInfo

log = logging.getLogger(__name__)

RESTART_MIN_S = 1.0
RESTART_MAX_S = 60.0
HEALTHY_RUN_S = 60.0
MAX_REASON = 200

_owned: contextvars.ContextVar[set[int] | None] = contextvars.ContextVar("sensorstream_source_streams", default=None)


class SourceStreams:
    """Hub observer: the streams the current source task adds or changes are its own."""

    def on_stream(self, info: StreamInfo) -> None:
        owned = _owned.get()
        if owned is not None:
            owned.add(info.key)

    def on_removed(self, key: int) -> None:
        owned = _owned.get()
        if owned is not None:
            owned.discard(key)

    def on_batch(self, info: StreamInfo, timestamps: np.ndarray, values: np.ndarray) -> None:
        pass


def reason(exc: BaseException) -> str:
    """One short line a user can read in the dashboard and /healthz."""
    exc = single(exc)  # the source's own nursery wraps what it raised
    text = exc.message if isinstance(exc, HubError) else str(exc)
    line = " ".join(f"{type(exc).__name__}: {text}".split()) if text else type(exc).__name__
    return line if len(line) <= MAX_REASON else line[: MAX_REASON - 1] + "…"


async def supervise(hub: Hub, source: Callable[[], Awaitable[None]], *, on_failure: Callable[[], None] = lambda: None,
                    restart: bool = True) -> None:
    """Run `source` until it returns; when it fails, mark its streams failed and
    (with `restart`) start it again after a backoff. Cancellation goes through."""
    owned: set[int] = set()
    _owned.set(owned)  # this task's own context: the source and the tasks it starts see it
    delay = RESTART_MIN_S
    failures = 0
    while True:
        started = trio.current_time()
        try:
            await source()
            return
        except Exception as e:  # Cancelled is a BaseException: shutdown still goes through
            on_failure()
            failures += 1
            why = reason(e)
            marked = []
            for key in sorted(owned):
                try:
                    hub.update_stream(key, status=protocol.FAILED, error=why)
                    marked.append(key)
                except KeyError:  # removed meanwhile
                    owned.discard(key)
            ids = ", ".join(i.id for i in hub.catalog() if i.key in marked) or "no stream yet"
            if trio.current_time() - started >= HEALTHY_RUN_S:
                delay = RESTART_MIN_S
            then = f"restarting it in {delay:g} s" if restart else "the server goes on without it"
            extra = {"event": "source_failed", "reason": why, "streams": ids}
            if failures == 1:
                log.exception("a source failed (%s: %s); %s", ids, why, then, extra=extra)
            else:
                log.warning("a source failed again (%s: %s, %d times); %s", ids, why, failures, then, extra=extra)
            if not restart:
                return
        await trio.sleep(delay)
        delay = min(delay * 2, RESTART_MAX_S)
