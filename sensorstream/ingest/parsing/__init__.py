"""Serial data formats -> numpy columns, sans-I/O.

Nothing here reads a port. The serial source hands each chunk of bytes it read
to ``parser.feed(data, arrival_time)`` and gets back a :class:`Parsed` batch:
float64 Unix timestamps (N,) and float32 values (C, N), channel-major, the
layout ``protocol.encode_batch`` takes. ``feed`` never raises on bad input;
whatever it cannot use it counts in :class:`ParseCounters`.

One module per job, read in this order (docs/devices.md is the prose version):

``results``   what a parser returns (:class:`Parsed`) and counts (:class:`ParseCounters`).
``framing``   bytes -> lines or 0x00-delimited frames; every ending accounted for once.
``numbers``   tokens -> float64 in bulk (SWAR), bit-exact with ``float()``.
``channels``  the channel table: names, scale/offset, label -> channel, max_channels.
``clock``     the device's clock mapped onto wall time (:class:`ClockMapper`).
``csv``       ``1.0,2.5,-3`` -- numbers separated by comma, semicolon, tab or spaces.
``labels``    ``ax:0.1 ay=0.2, Temperature: 23.6`` -- label/value pairs (Arduino Serial Plotter).
``jsonl``     ``{"t": 12.5, "imu": {"ax": 0.1}}`` -- one object per line, one nesting level.
``lines``     :class:`LineParser`: the text formats above, or auto-detected.
``binary``    ``cobs``: fixed binary records described by a struct format, COBS-framed
              (:class:`BinaryRecordParser`).
``profiles``  a device profile (TOML) -> its parser.

Timestamps: with ``timestamp_field`` set, the device's clock is mapped onto wall time
by :class:`ClockMapper`; otherwise every sample in a chunk gets the chunk's
``arrival_time`` (the time the bytes were read -- a chunk's samples share it, nothing
is invented). Either way the output never goes backwards.
"""

from __future__ import annotations

from .binary import BinaryRecordParser, record_dtype
from .channels import MAX_CHANNELS, MAX_REJECTED_LABELS, ChannelTable
from .clock import TIME_UNITS, ClockMapper
from .csv import CSV_RELAYOUT_AFTER, CSV_UNIFORM_LINES
from .framing import Framer
from .lines import FORMATS, MAX_LINE, LineParser
from .numbers import SMALL_BYTES, scan_numbers
from .profiles import make_parser, profile_units
from .results import ParseCounters, Parsed

__all__ = [
    "Parsed",
    "ParseCounters",
    "ClockMapper",
    "ChannelTable",
    "Framer",
    "LineParser",
    "BinaryRecordParser",
    "make_parser",
    "profile_units",
    "record_dtype",
    "scan_numbers",
    "FORMATS",
    "TIME_UNITS",
    "MAX_LINE",
    "MAX_CHANNELS",
    "MAX_REJECTED_LABELS",
    "CSV_RELAYOUT_AFTER",
    "CSV_UNIFORM_LINES",
    "SMALL_BYTES",
]
