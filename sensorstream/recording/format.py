"""How sensorstream lays out a recording inside MCAP (docs/recording.md).

One MCAP channel per stream (topic = the stream id); its metadata carries the
stream's description, so a recording is self-describing without our code. Each
MCAP message is one batch exactly as it went over the wire (protocol.py's
24-byte header, f64 timestamps, f32 channel-major values): recording costs no
re-encoding and reading decodes with `np.frombuffer`.

    log_time      = the batch's last timestamp, in ns (what time ranges and replay use)
    publish_time  = when the recorder received it (wall clock, ns)
    sequence      = the batch's seq, modulo 2**32 (the full seq is in the payload)

A channel whose layout changes mid-recording (a device re-profiled) gets a new
MCAP channel with the same topic.
"""

from __future__ import annotations

import json
from typing import Any

from ..protocol import Channel, StreamInfo

#: MCAP message encoding of our batches (no schema: the layout is protocol.py's v1 frame).
MESSAGE_ENCODING = "sensorstream.batch.v1"
#: MCAP header profile.
PROFILE = "sensorstream"
#: Name of the metadata record that holds the batches the recorder had to drop, per stream.
DROPS_METADATA = "sensorstream.drops"
#: Name of the metadata record written once at the start (who recorded, from where).
INFO_METADATA = "sensorstream.recording"


def to_ns(t: float) -> int:
    """Unix seconds -> MCAP's unsigned nanoseconds (clamped: MCAP times cannot be negative)."""
    if not t > 0:  # also NaN
        return 0
    return min(int(round(t * 1e9)), 2**64 - 1)


def channel_metadata(info: StreamInfo) -> dict[str, str]:
    return {
        "id": info.id,
        "key": str(info.key),
        "device": info.device,
        "channels": json.dumps([c.name for c in info.channels]),
        "units": json.dumps([c.unit for c in info.channels]),
        "rate_hz": "" if info.rate_hz is None else repr(float(info.rate_hz)),
    }


def info_from_metadata(topic: str, meta: dict[str, str]) -> StreamInfo:
    """The stream a channel's metadata describes (tolerant: a hand-made file may lack fields)."""
    names = _json_list(meta.get("channels"))
    units = _json_list(meta.get("units"))
    units += [""] * (len(names) - len(units))
    rate = meta.get("rate_hz") or ""
    try:
        rate_hz = float(rate) if rate else None
    except ValueError:
        rate_hz = None
    try:
        key = int(meta.get("key", "0"))
    except ValueError:
        key = 0
    return StreamInfo(key=key, id=meta.get("id") or topic, channels=tuple(Channel(str(n), str(u)) for n, u in zip(names, units)),
                      rate_hz=rate_hz, device=meta.get("device", ""))


def _json_list(text: Any) -> list:
    try:
        v = json.loads(text) if text else []
    except ValueError:
        return []
    return v if isinstance(v, list) else []
