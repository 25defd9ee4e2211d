"""Text lines in any of the text formats, or auto-detected (:class:`LineParser`).

The parser owns what the formats share: the framer, the channel table, the
counters and the device clock; each format (``csv``, ``labels``, ``jsonl``) keeps
only its own layout caches.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np

from ...protocol import MAX_STREAM_CHANNELS
from .channels import MAX_CHANNELS, Affine, ChannelTable
from .clock import TIME_UNITS, ClockMapper
from .csv import CsvFormat, looks_like_csv
from .framing import Framer
from .jsonl import JsonFormat
from .labels import LabelsFormat, label_pairs
from .numbers import to_float
from .results import ParseCounters, Parsed, empty

FORMATS = ("auto", "csv", "labels", "json")
#: Default longest line (bytes, without its ending).
MAX_LINE = 4096


def detect(line: bytes) -> str | None:
    """The format a line is in, if it is clearly one (see docs/devices.md, auto-detection)."""
    s = line.strip()
    if s[:1] == b"{":
        try:
            return "json" if isinstance(json.loads(s), dict) else None
        except (ValueError, RecursionError):
            return None
    pairs = label_pairs(s)
    if pairs:
        return "labels" if any(to_float(v) is not None for _, v in pairs) else None
    if looks_like_csv(s):
        return "csv"
    return None


class LineParser:
    """Text lines (csv, labels, json, or auto-detected) -> :class:`Parsed` batches.

    ``channel_names``: csv -- the column names in order (including the timestamp
    column, if any; missing ones are ``ch<i>``); labels/json -- channels declared up
    front, in output order (new labels are appended as they appear).
    ``scale``/``offset``: by channel name (mapping) or by output position (sequence);
    output = value * scale + offset.
    """

    def __init__(
        self,
        fmt: str = "auto",
        *,
        channel_names: Sequence[str] | None = None,
        timestamp_field: str | None = None,
        timestamp_unit: str = "s",
        max_line: int = MAX_LINE,
        max_channels: int = MAX_CHANNELS,
        discard_first_partial: bool = True,
        scale: Affine = None,
        offset: Affine = None,
        clock: ClockMapper | None = None,
    ):
        if fmt not in FORMATS:
            raise ValueError(f"unknown line format {fmt!r}; expected one of {FORMATS}")
        if timestamp_unit not in TIME_UNITS:
            raise ValueError(f"unknown timestamp_unit {timestamp_unit!r}; expected one of {tuple(TIME_UNITS)}")
        if not 1 <= max_channels <= MAX_STREAM_CHANNELS:
            # Above the hub's limit a device could add a channel the hub refuses.
            raise ValueError(f"max_channels must be between 1 and {MAX_STREAM_CHANNELS}")
        self.format = fmt
        self.counters = ParseCounters()
        self.max_channels = max_channels
        self._ts_scale = TIME_UNITS[timestamp_unit]
        self._clock = clock if clock is not None else ClockMapper()
        self._framer = Framer(text=True, max_len=max_line, discard_first=discard_first_partial)
        self._channels = ChannelTable(max_channels=max_channels, scale=scale, offset=offset,
                                      timestamp_field=timestamp_field)
        names_in = [str(n) for n in channel_names or ()]
        self._formats = {
            "csv": CsvFormat(self._channels, self.counters, names_in),
            "labels": LabelsFormat(self._channels, self.counters),
            "json": JsonFormat(self._channels, self.counters),
        }
        self._last_t = -math.inf
        if fmt != "csv":
            self._channels.declare(names_in)

    @property
    def channel_names(self) -> list[str]:
        return list(self._channels.names)

    def reconnect(self) -> None:
        """The byte stream restarted (port reopened): drop the unfinished line, discard
        the next first line again, re-anchor the device clock. Channels, format and
        counters are kept."""
        self._framer.restart()
        self._clock.reset()

    def feed(self, data: bytes, arrival_time: float) -> Parsed:
        """Parse the bytes read at ``arrival_time`` (Unix seconds). Never raises on bad input."""
        lines = self._framer.split(bytes(data), self.counters)
        n_before = len(self._channels)
        if not lines:
            return empty(n_before)
        if self.format == "auto":
            lines = self._autodetect(lines)
        if not lines:
            values, device = np.empty((len(self._channels), 0)), None
        else:
            values, device = self._formats[self.format].parse(lines)
        return self._finish(values, device, arrival_time, len(self._channels) != n_before)

    def _autodetect(self, lines: list[bytes]) -> list[bytes]:
        c = self.counters
        for k, line in enumerate(lines):
            fmt = detect(line)
            if fmt is not None:
                self.format = fmt
                if fmt == "csv":
                    self._channels.clear()
                return lines[k:]
            c.discard(line)
        return []

    def _finish(self, values: np.ndarray, device: np.ndarray | None, arrival: float, changed: bool) -> Parsed:
        n = values.shape[1]
        t = self._channels
        if t.affine and n:
            values = values * t.scale[:, None] + t.offset[:, None]
        if device is not None:
            ts = self._clock.map(device * self._ts_scale, arrival)
        else:
            ts = np.full(n, max(arrival, self._last_t))
        if n:
            self._last_t = float(ts[-1])
        # The wire carries float32: a reading beyond its range (~3.4e38) becomes ±inf,
        # which is what the value is at that precision, not an error to warn about.
        with np.errstate(over="ignore"):
            out = np.ascontiguousarray(values, dtype=np.float32)
        return Parsed(ts, out, changed)
