"""The hub: where sources' batches meet the clients that want them.

    base.py   the `Hub` interface and the types both sides share
    local.py  `LocalHub`, everything in this process
    redis.py  `RedisHub`, streams shared by many processes through Redis
              (imported only by `open_hub` for a bus URL, so without --bus the
              Redis client is never loaded)
"""

from __future__ import annotations

from .base import (
    FRAME_OVERHEAD,
    Frame,
    Hub,
    HubError,
    HubLimits,
    Observer,
    Resumed,
    StreamStats,
    Subscriber,
    Subscription,
    glob_matcher,
    is_glob,
)
from .local import LocalHub, resume_from

__all__ = [
    "FRAME_OVERHEAD", "Frame", "Hub", "HubError", "HubLimits", "LocalHub", "Observer", "Resumed", "StreamStats", "Subscriber",
    "Subscription", "glob_matcher", "is_glob", "open_hub", "resume_from",
]


def open_hub(bus: str | None, limits: HubLimits = HubLimits(), **options) -> Hub:
    """The hub for a `--bus` URL (None: in-process). Raises ValueError on a bad URL."""
    if not bus:
        return LocalHub(limits)
    from .redis import RedisHub  # only now: coredis is not imported without a bus

    return RedisHub(bus, limits, **options)
