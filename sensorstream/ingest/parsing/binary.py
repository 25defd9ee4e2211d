"""``cobs``: fixed binary records described by a struct format, COBS-framed, 0x00-delimited."""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import cobs
from ...protocol import MAX_STREAM_CHANNELS
from .channels import Affine, ChannelTable
from .clock import TIME_UNITS, ClockMapper
from .framing import Framer
from .results import ParseCounters, Parsed, empty

_STRUCT_TO_NUMPY = {
    "b": "i1", "B": "u1", "?": "u1", "h": "i2", "H": "u2", "i": "i4", "I": "u4", "l": "i4", "L": "u4",
    "q": "i8", "Q": "u8", "n": "i8", "N": "u8", "e": "f2", "f": "f4", "d": "f8",
}  # fmt: skip
_STRUCT_ITEM = re.compile(r"\s*(\d*)([a-zA-Z?])")


def record_dtype(fmt: str, names: Sequence[str] | None = None) -> np.dtype:
    """A numpy structured dtype with exactly the layout ``struct.Struct(fmt)`` packs.

    Offsets come from ``struct.calcsize`` of each prefix, so native alignment
    (``@``, the default) matches too. Pad bytes (``x``) get no field; ``s``/``p``
    (byte strings) are not supported. Fields are named by ``names`` (``f<i>`` if
    missing).
    """
    order = fmt[0] if fmt[:1] in ("@", "=", "<", ">", "!") else "@"
    body = fmt[1:] if fmt[:1] in ("@", "=", "<", ">", "!") else fmt
    endian = {"<": "<", ">": ">", "!": ">"}.get(order, "=")
    pos = 0
    items: list[str] = []
    for m in _STRUCT_ITEM.finditer(body):
        if m.start() != pos:
            break
        pos = m.end()
        count = int(m.group(1) or 1)
        code = m.group(2)
        if code == "x":
            items.append(f"{count}x")
        elif code in _STRUCT_TO_NUMPY:
            items.extend([code] * count)
        else:
            raise ValueError(f"struct code {code!r} is not supported in a record (use numbers and x)")
    if body[pos:].strip():
        raise ValueError(f"cannot parse struct format {fmt!r}")
    size = struct.calcsize(fmt)
    n_fields = sum(1 for it in items if not it.endswith("x"))
    names = list(names or [])
    if len(names) > n_fields:
        raise ValueError(f"{len(names)} names for {n_fields} fields in {fmt!r}")
    names += [f"f{i}" for i in range(len(names), n_fields)]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate field names {names}")
    spec: dict[str, list[Any]] = {"names": [], "formats": [], "offsets": []}
    prefix = order
    for it in items:
        if it.endswith("x"):
            prefix += it
            continue
        offset = struct.calcsize(prefix + it) - struct.calcsize(it)
        spec["names"].append(names[len(spec["names"])])
        spec["formats"].append(endian + _STRUCT_TO_NUMPY[it])
        spec["offsets"].append(offset)
        prefix += it
    return np.dtype({**spec, "itemsize": size})


class BinaryRecordParser:
    """COBS-framed, 0x00-delimited fixed binary records -> :class:`Parsed` batches.

    ``struct_format`` describes one record (``struct`` syntax, e.g. ``"<Iffffff"``);
    ``fields`` names its fields in order. ``timestamp_field`` (e.g. a ``I``
    microsecond counter) becomes the timestamps; every other field is a channel, in
    order, except fields whose name starts with ``_`` (ignored). A frame that does not
    decode to exactly one record is counted in ``lines_malformed``.
    """

    def __init__(
        self,
        struct_format: str,
        fields: Sequence[str] | None = None,
        *,
        timestamp_field: str | None = None,
        timestamp_unit: str = "us",
        max_frame: int | None = None,
        discard_first_partial: bool = True,
        scale: Affine = None,
        offset: Affine = None,
        clock: ClockMapper | None = None,
    ):
        if timestamp_unit not in TIME_UNITS:
            raise ValueError(f"unknown timestamp_unit {timestamp_unit!r}; expected one of {tuple(TIME_UNITS)}")
        self.dtype = record_dtype(struct_format, fields)
        self.record_size = self.dtype.itemsize
        names = list(self.dtype.names or ())
        if timestamp_field is not None and timestamp_field not in names:
            raise ValueError(f"timestamp_field {timestamp_field!r} is not one of the fields {names}")
        self.format = "cobs"
        self.struct_format = struct_format
        self.timestamp_field = timestamp_field
        self.counters = ParseCounters()
        self._ts_scale = TIME_UNITS[timestamp_unit]
        channels = [n for n in names if n != timestamp_field and not n.startswith("_")]
        if len(channels) > MAX_STREAM_CHANNELS:
            raise ValueError(f"{len(channels)} channel fields; a stream has at most {MAX_STREAM_CHANNELS}")
        self._channels = ChannelTable(max_channels=MAX_STREAM_CHANNELS, scale=scale, offset=offset)
        for name in channels:
            self._channels.add(name)
        # Frames longer than the longest valid encoding are dropped while they arrive.
        longest = self.record_size + 1 + self.record_size // 254
        max_frame = longest if max_frame is None else max(int(max_frame), longest)
        self._framer = Framer(text=False, max_len=max_frame, discard_first=discard_first_partial)
        self._clock = clock if clock is not None else ClockMapper()
        self._last_t = -math.inf

    @property
    def channel_names(self) -> list[str]:
        return list(self._channels.names)

    def reconnect(self) -> None:
        """See :meth:`LineParser.reconnect`."""
        self._framer.restart()
        self._clock.reset()

    def feed(self, data: bytes, arrival_time: float) -> Parsed:
        """Parse the bytes read at ``arrival_time`` (Unix seconds). Never raises on bad input."""
        c = self.counters
        frames = self._framer.split(bytes(data), c)
        if not frames:
            return empty(len(self._channels))
        if not all(frames):
            n_all = len(frames)
            frames = [f for f in frames if f]
            c.lines_empty += n_all - len(frames)
        if self.record_size < 254:
            raw, ok = cobs.decode_fixed(frames, self.record_size)
            bad = [f for f, g in zip(frames, ok.tolist()) if not g] if not ok.all() else []
        else:
            decoded, bad = [], []
            for f in frames:
                try:
                    r = cobs.decode(f)
                except ValueError:
                    r = b""
                if len(r) == self.record_size:
                    decoded.append(r)
                else:
                    bad.append(f)
            raw = np.frombuffer(b"".join(decoded), np.uint8).reshape(len(decoded), self.record_size)
        c.lines_malformed += len(bad)
        c.bytes_discarded += sum(map(len, bad))
        n = raw.shape[0]
        c.lines_ok += n
        recs = raw.reshape(-1).view(self.dtype) if n else np.empty(0, self.dtype)
        t = self._channels
        values = np.empty((len(t), n), dtype=np.float64 if t.affine else np.float32)
        for i, name in enumerate(t.names):
            values[i] = recs[name]
        if t.affine and n:
            values = (values * t.scale[:, None] + t.offset[:, None]).astype(np.float32)
        if self.timestamp_field is not None:
            ts = self._clock.map(recs[self.timestamp_field].astype(np.float64) * self._ts_scale, arrival_time)
        else:
            ts = np.full(n, max(arrival_time, self._last_t))
        if n:
            self._last_t = float(ts[-1])
        return Parsed(ts, values, False)

