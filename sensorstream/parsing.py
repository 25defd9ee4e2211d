"""Serial data formats -> numpy columns, sans-I/O.

Nothing here reads a port. The serial source hands each chunk of bytes it read
to ``parser.feed(data, arrival_time)`` and gets back a :class:`Parsed` batch:
float64 Unix timestamps (N,) and float32 values (C, N), channel-major, the
layout ``protocol.encode_batch`` takes. ``feed`` never raises on bad input;
whatever it cannot use it counts in :class:`ParseCounters`.

Formats (docs/devices.md is the prose version of this module):

``csv``     ``1.0,2.5,-3`` -- numbers separated by comma, semicolon, tab or spaces.
``labels``  ``ax:0.1 ay=0.2, Temperature: 23.6`` -- label/value pairs (Arduino Serial Plotter).
``json``    ``{"t": 12.5, "imu": {"ax": 0.1}}`` -- one object per line, one nesting level.
``cobs``    fixed binary records described by a struct format, COBS-framed, 0x00-delimited
            (:class:`BinaryRecordParser`).

Line handling shared by the text formats (:class:`_Framer`):

* LF, CR and CRLF all end a line; a CRLF split across two feeds is still one ending.
* The first line after connecting is discarded (it is usually the tail of a line the
  device was half-way through); ``discard_first_partial=False`` keeps it.
* A line longer than ``max_line`` bytes is discarded as it arrives, never buffered whole.
* Every line ending is accounted for exactly once::

      lines_ok + lines_malformed + lines_oversize + lines_empty + lines_partial
          == number of line endings seen (CRLF counts once)

  and for COBS the same holds with "0x00 delimiters" for "line endings".

Timestamps: with ``timestamp_field`` set, the device's clock is mapped onto wall time
by :class:`ClockMapper`; otherwise every sample in a chunk gets the chunk's
``arrival_time`` (the time the bytes were read -- a chunk's samples share it, nothing
is invented). Either way the output never goes backwards.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Mapping, Sequence
from itertools import chain
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from . import cobs
from .protocol import MAX_STREAM_CHANNELS

__all__ = [
    "Parsed",
    "ParseCounters",
    "ClockMapper",
    "LineParser",
    "BinaryRecordParser",
    "make_parser",
    "profile_units",
    "record_dtype",
    "FORMATS",
    "TIME_UNITS",
]

FORMATS = ("auto", "csv", "labels", "json")
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}

#: Default longest line (bytes, without its ending).
MAX_LINE = 4096
#: Default most channels per stream; labels past it are counted in ``labels_rejected``.
MAX_CHANNELS = 64
#: CSV: this many consecutive lines with the same new column count change the layout.
CSV_RELAYOUT_AFTER = 8

_TS = -2  # index of the timestamp field in a layout
_REJECTED = -1  # index of a label that found no channel slot
# Rejected labels remembered (so lines with them stay on the fast paths) before
# they are forgotten at once: a device that sends ever-new labels (a counter or
# an ID in the key, a wrong baud rate) must not grow the parser without bound.
MAX_REJECTED_LABELS = 1024


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Parsed:
    """One feed's worth of samples.

    ``values`` has one row per entry of the parser's ``channel_names`` at the time
    ``feed`` returned (NaN where a sample lacks a channel). If ``channels_changed``,
    channel_names grew during this feed: announce the new list before publishing.
    """

    timestamps: np.ndarray  # float64 (N,), Unix seconds, non-decreasing
    values: np.ndarray  # float32 (C, N)
    channels_changed: bool = False

    def __len__(self) -> int:
        return self.timestamps.shape[0]


@dataclass(slots=True)
class ParseCounters:
    """What a parser saw. Every line (frame) ending lands in exactly one ``lines_*`` count."""

    lines_ok: int = 0  # produced a sample
    lines_malformed: int = 0  # not in the stream's format, or no usable field
    lines_oversize: int = 0  # longer than max_line (max_frame)
    lines_empty: int = 0  # blank line / empty frame: ignored, not an error
    lines_partial: int = 0  # the first line after connecting, discarded
    values_invalid: int = 0  # a field of a good line that was not a number: NaN in the output
    labels_rejected: int = 0  # values whose new label found no channel slot (max_channels)
    bytes_discarded: int = 0  # bytes of discarded lines (partial, oversize, malformed)

    @property
    def lines_seen(self) -> int:
        return self.lines_ok + self.lines_malformed + self.lines_oversize + self.lines_empty + self.lines_partial

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _empty(n_channels: int) -> Parsed:
    return Parsed(np.empty(0, np.float64), np.empty((n_channels, 0), np.float32))


# --------------------------------------------------------------------------- device clock


class ClockMapper:
    """Maps a device's clock (seconds since whatever) onto wall-clock Unix seconds.

    The offset (wall - device) starts as ``arrival - device`` of the newest sample of
    the first chunk. Afterwards it follows the lowest-latency samples: it drops to any
    lower ``arrival - device`` at once (a device clock running fast, or a better
    sample), and may creep up by ``drift_ppm`` of elapsed time (a device clock running
    slow). It is re-anchored to the current chunk when the device clock goes backwards
    (a reset, a counter wrap) or when the newest sample would land more than
    ``max_lag`` seconds before its arrival (a device clock that stalled or lost time).

    Output is non-decreasing and never later than the arrival time.
    """

    def __init__(self, *, max_lag: float = 1.0, drift_ppm: float = 200.0, reset_tolerance: float = 0.0):
        self.max_lag = float(max_lag)
        self.drift = float(drift_ppm) * 1e-6
        self.reset_tolerance = float(reset_tolerance)
        self.offset: float | None = None
        self.resyncs = 0  # times re-anchored after the first anchor
        self._last_device = -math.inf
        self._last_arrival = -math.inf
        self._last_out = -math.inf

    def reset(self) -> None:
        """Forget the anchor (the device may have restarted); keep the output monotonic."""
        self.offset = None
        self._last_device = -math.inf

    def map(self, device: np.ndarray, arrival: float) -> np.ndarray:
        """Wall-clock times for device times ``device`` (seconds, float64) read at ``arrival``.

        NaN device times (a sample without a usable timestamp) get the previous
        output time (or, with no previous one, the next one, or ``arrival``).
        """
        device = np.asarray(device, dtype=np.float64)
        out = np.empty_like(device)
        finite = np.isfinite(device)
        idx = np.flatnonzero(finite)
        if idx.size:
            d = device[idx]
            prev = np.empty_like(d)
            prev[0] = self._last_device
            prev[1:] = d[:-1]
            cuts = np.flatnonzero(d < prev - self.reset_tolerance).tolist()
            bounds = [0, *cuts, d.size] if not cuts or cuts[0] != 0 else [*cuts, d.size]
            mapped = np.empty_like(d)
            for start, stop in zip(bounds[:-1], bounds[1:]):
                seg = d[start:stop]
                newest = float(seg.max())
                best = arrival - newest
                if self.offset is None:
                    self.offset = best
                elif start in cuts:  # the device clock went backwards
                    self.offset = best
                    self.resyncs += 1
                else:
                    crept = self.offset + self.drift * max(0.0, arrival - self._last_arrival)
                    if best - crept > self.max_lag:  # newest sample lags its arrival too much
                        self.offset = best
                        self.resyncs += 1
                    else:
                        self.offset = min(crept, best)
                mapped[start:stop] = seg + self.offset
            self._last_device = float(d[-1])
            self._last_arrival = arrival
            out[idx] = mapped
        out[~finite] = -math.inf
        np.maximum.accumulate(out, out=out)
        np.maximum(out, self._last_out, out=out)
        if out.size:
            if out[0] == -math.inf:  # leading samples without a timestamp, and no history:
                k = int(np.count_nonzero(out == -math.inf))  # they take the first time after them
                out[:k] = out[k] if k < out.size else arrival
            self._last_out = float(out[-1])
        return out


# --------------------------------------------------------------------------- framing


class _Framer:
    """Splits a byte stream into frames: lines (``text=True``) or 0x00-delimited frames.

    Keeps at most ``max_len`` bytes of an unfinished frame; counts what it discards.
    """

    def __init__(self, *, text: bool, max_len: int, discard_first: bool):
        if max_len < 1:
            raise ValueError("max_len must be positive")
        self.text = text
        self.max_len = max_len
        self.discard_first = discard_first
        self.restart()

    def restart(self) -> None:
        self._buf = b""
        self._skipping = False  # inside an oversize frame: drop bytes up to its end
        self._after_cr = False  # last byte seen was CR: a leading LF completes a CRLF
        self._first = self.discard_first

    def split(self, data: bytes, c: ParseCounters) -> list[bytes]:
        if self.text:
            if self._after_cr and data[:1] == b"\n":
                data = data[1:]  # the LF of a CRLF whose CR ended the previous chunk
                self._after_cr = False
            if not data:
                return []
            self._after_cr = data[-1:] == b"\r"
            if b"\r" in data:
                data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            parts = data.split(b"\n")
        else:
            if not data:
                return []
            parts = data.split(b"\x00")
        rest = parts.pop()
        if parts:
            # The first complete frame finishes whatever was pending from earlier reads.
            head = parts[0] if self._skipping else self._buf + parts[0]
            self._buf = b""
            if self._first or self._skipping:
                if self._first:
                    c.lines_partial += 1
                else:
                    c.lines_oversize += 1
                c.bytes_discarded += len(head)
                self._first = self._skipping = False
                del parts[0]
            else:
                parts[0] = head
            if parts and max(map(len, parts)) > self.max_len:
                keep = []
                for p in parts:
                    if len(p) > self.max_len:
                        c.lines_oversize += 1
                        c.bytes_discarded += len(p)
                    else:
                        keep.append(p)
                parts = keep
        if rest:
            if self._skipping:
                c.bytes_discarded += len(rest)
            elif len(self._buf) + len(rest) > self.max_len:
                c.bytes_discarded += len(self._buf) + len(rest)
                self._buf = b""
                self._skipping = True
            else:
                self._buf += rest
        return parts


# --------------------------------------------------------------------------- numbers


_POW10 = 10.0 ** np.arange(23)
#: Below this many bytes, :func:`_numbers` converts token by token (see there).
SMALL_BYTES = 2048
#: Up to this many lines, a CSV block whose lines all fit the layout skips the bulk
#: path (see LineParser._csv_uniform). Measured crossover: ~300 lines of 6 columns.
CSV_UNIFORM_LINES = 256
_FAST_LEN = 15  # a token of <= 15 characters has a mantissa < 10**15 < 2**53: exact in float64
_U64 = np.uint64
_ONES = _U64(0x0101010101010101)
# Byte j of the last word holds 1 + the number of bytes after it (8 - j), of the word before
# that, 16 - j: masked by a one-byte dot flag and byte-summed, it gives 1 + digits after the dot.
_AFTER = np.array([sum((16 - j) << (8 * j) for j in range(8)), sum((8 - j) << (8 * j) for j in range(8))], dtype=_U64)


def _byte_sum(words: np.ndarray) -> np.ndarray:
    """Sum of the bytes of each row of uint64 words (every sum < 256)."""
    total = words[:, 0] if words.shape[1] == 1 else words[:, 0] + words[:, 1]
    return (total * _ONES) >> _U64(56)


def _eight_digits(x: np.ndarray) -> np.ndarray:
    """SWAR: 8 digit values (one per byte, 0..9) in little-endian uint64s -> their integer value."""
    x = (x * _U64(2561)) >> _U64(8)
    x = ((x & _U64(0x00FF00FF00FF00FF)) * _U64(6553601)) >> _U64(16)
    return ((x & _U64(0x0000FFFF0000FFFF)) * _U64(42949672960001)) >> _U64(32)


def _numbers(buf: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse every token of ``buf``, a sequence of lines (LF) of space-separated tokens.

    ``buf`` must hold no other ASCII whitespace (callers translate it to spaces).
    Returns ``(values, invalid, line_of)``: float64 values (NaN where a token is not a
    number), a bool mask of those, and the line each token is on.

    Below SMALL_TOKENS tokens, ``float()`` per token is cheaper than the fixed cost of
    the ~40 numpy calls of the bulk path; both give the same results.

    Plain decimals (``-12.345``, ``7``, ``.5``; at most 15 characters) are parsed in
    bulk, SWAR-style: each token's last 8 (or 16) bytes are loaded as little-endian
    uint64 words, the bytes before the token shifted out, sign and dot masked to 0,
    and the digits combined with three multiplies per word. That gives the decimal
    mantissa exactly (< 2**53); the dot's place is taken out and one division by a
    power of ten rounds correctly, so each value equals ``float(token)`` bit for bit.
    Anything else (exponents, nan/inf, long tokens, garbage) goes through ``float()``.
    """
    n = len(buf)
    if n < SMALL_BYTES:
        return _numbers_small(buf)
    u = np.frombuffer(buf, dtype=np.uint8)
    word = (u != 32) & (u != 10)
    edge = np.zeros(n + 1, dtype=bool)
    if n:
        edge[0] = word[0]
        edge[n] = word[-1]
        np.not_equal(word[1:], word[:-1], out=edge[1:n])
    b = np.flatnonzero(edge)
    starts, ends = b[0::2], b[1::2]
    t = starts.size
    values = np.full(t, np.nan)
    invalid = np.zeros(t, dtype=bool)
    line_of = np.searchsorted(np.flatnonzero(u == 10), starts)
    if t == 0:
        return values, invalid, line_of
    lens = ends - starts
    nw = 1 if lens.max() <= 8 else 2
    w = 8 * nw
    # Unaligned uint64 loads: row i holds the w bytes ending at token i's end.
    pad = np.frombuffer(bytes(w) + buf, dtype=np.uint8)
    u64 = np.ndarray(shape=(pad.size - 7,), dtype="<u8", buffer=pad, strides=(1,))
    x = np.empty((t, nw), dtype=_U64)
    # Bytes before the token are the low-order ones: shift them out (to 0x00).
    if nw == 1:
        shift = (8 * (8 - lens)).astype(_U64)
        x[:, 0] = (u64[ends] >> shift) << shift
    else:
        short = lens <= 8
        shift = (8 * (16 - np.minimum(lens, 16))).astype(_U64)
        s0 = np.where(short, 0, shift).astype(_U64)
        s1 = np.where(short, shift - _U64(64), 0).astype(_U64)
        x[:, 0] = np.where(short, 0, (u64[ends] >> s0) << s0)
        x[:, 1] = (u64[ends + 8] >> s1) << s1
    xb = x.view(np.uint8).reshape(t, w)
    nondigit = ((xb - np.uint8(48)) > 9).view(_U64)  # 0/1 per byte: 0x00 padding, '.', '-', '+', ...
    dots = (xb == 46).view(_U64)
    n_nondigit = _byte_sum(nondigit).astype(np.intp) - (w - lens)
    n_dot = _byte_sum(dots).astype(np.intp)
    first = u[starts]
    signed = (first == 45) | (first == 43)
    ok = (n_nondigit == n_dot + signed) & (n_dot <= 1) & (lens > n_nondigit) & (lens <= _FAST_LEN)
    digits = _eight_digits(x & ~(nondigit * _U64(0xFF)) & _U64(0x0F0F0F0F0F0F0F0F))
    s1f = (digits[:, 0] if nw == 1 else digits[:, 0] * _U64(100_000_000) + digits[:, 1]).astype(np.float64)
    # A dot takes a digit's place (as a 0): with f digits after it, s1 = hi * 10**(f+1) + lo
    # and the mantissa is hi * 10**f + lo. Without a dot, q = 1 and the mantissa is s1.
    frac = (_byte_sum((dots * _U64(0xFF)) & _AFTER[-nw:]).astype(np.intp) - 1) * (n_dot == 1)
    q = _POW10[frac + (n_dot == 1)]
    hi = np.floor(s1f / q)
    p = _POW10[frac]
    v = (hi * p + (s1f - hi * q)) / p
    v *= np.where(first == 45, -1.0, 1.0)
    values[ok] = v[ok]
    for i in np.flatnonzero(~ok).tolist():
        try:
            values[i] = float(buf[starts[i] : ends[i]])
        except ValueError:
            invalid[i] = True
    return values, invalid, line_of


def _numbers_small(buf: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_numbers` for a few hundred tokens: ``float()`` each."""
    per_line = [line.split() for line in buf.split(b"\n")]
    toks = list(chain.from_iterable(per_line))
    line_of = np.repeat(np.arange(len(per_line)), list(map(len, per_line)))
    try:
        return np.array(list(map(float, toks)), dtype=np.float64), np.zeros(len(toks), bool), line_of
    except ValueError:
        values = np.empty(len(toks))
        invalid = np.zeros(len(toks), bool)
        for i, tok in enumerate(toks):
            try:
                values[i] = float(tok)
            except ValueError:
                values[i] = math.nan
                invalid[i] = True
        return values, invalid, line_of


def _to_float(tok: bytes | str) -> float | None:
    try:
        return float(tok)
    except ValueError:
        return None


# --------------------------------------------------------------------------- text formats

_LABEL = r"[^\s,;:=0-9+\-.][^\s,;:=]*"
_VALUE = r"[^\s,;:=]+"
_PAIR = rf"({_LABEL})\s*[:=]\s*({_VALUE})"
_PAIR_RE = re.compile(_PAIR)
_PAIR_NC = rf"{_LABEL}\s*[:=]\s*{_VALUE}"
_LABELS_LINE_RE = re.compile(rf"[\s,;]*{_PAIR_NC}(?:[\s,;]+{_PAIR_NC})*[\s,;]*")
_CSV_SEPARATORS = bytes.maketrans(b",;\t\v\f", b"     ")
_CSV_FIELD_SPLIT = re.compile(rb"[,;]")


@dataclass(frozen=True, slots=True)
class _Layout:
    """A labels line shape seen before: its labels in order, as a regex and channel indices."""

    regex: re.Pattern[bytes]  # MULTILINE, ^...$, one group per value; no \\s (it would cross lines)
    index: list[int]


def _good_label(label: str) -> bool:
    return label.isprintable() and "\ufffd" not in label


def _label_pairs(line: bytes) -> list[tuple[str, bytes]] | None:
    """The (label, value) pairs of a labels-format line, or None if it is not one."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not _LABELS_LINE_RE.fullmatch(text):
        return None
    pairs = _PAIR_RE.findall(text)
    if not all(_good_label(lab) for lab, _ in pairs):
        return None
    return [(lab, val.encode()) for lab, val in pairs]


def _json_fields(obj: dict[str, Any], c: ParseCounters) -> list[tuple[str, Any]]:
    """(name, raw value) of a JSON object, one nesting level flattened as ``outer.inner``."""
    out: list[tuple[str, Any]] = []
    for k, v in obj.items():
        if isinstance(v, (dict, list)):
            items = v.items() if isinstance(v, dict) else enumerate(v)
            for k2, v2 in items:
                if isinstance(v2, (dict, list)):
                    c.values_invalid += 1  # deeper than one level
                else:
                    out.append((f"{k}.{k2}", v2))
        else:
            out.append((k, v))
    return out


_JSON_DECODE = json.JSONDecoder().decode
_JSON_RAW = json.JSONDecoder().raw_decode  # no whitespace regexes: the common case
def _json_object_of(line: bytes) -> Any:
    """The JSON value of a UTF-8 line, or None if it is not valid JSON."""
    try:
        text = line.decode()
    except UnicodeDecodeError:
        return None
    try:
        obj, end = _JSON_RAW(text)
    except (ValueError, RecursionError):
        if not text[:1].isspace():
            return None
        try:  # raw_decode does not skip leading whitespace; decode does
            return _JSON_DECODE(text)
        except (ValueError, RecursionError):
            return None
    if end != len(text) and text[end:].strip():
        return None  # trailing garbage
    return obj


_JSON_PLAIN = frozenset((int, float))  # not bool: True is 1.0, but takes the careful path


def _json_number(v: Any) -> float | None:
    if isinstance(v, (bool, int, float)):
        try:
            return float(v)
        except OverflowError:
            return None
    if isinstance(v, str):
        return _to_float(v)
    return None


def _detect(line: bytes) -> str | None:
    """The format a line is in, if it is clearly one (see docs/devices.md, auto-detection)."""
    s = line.strip()
    if s[:1] == b"{":
        try:
            return "json" if isinstance(json.loads(s), dict) else None
        except (ValueError, RecursionError):
            return None
    pairs = _label_pairs(s)
    if pairs:
        return "labels" if any(_to_float(v) is not None for _, v in pairs) else None
    toks = s.translate(_CSV_SEPARATORS).split()
    if toks and all(_to_float(t) is not None for t in toks):
        return "csv"
    return None


def _as_lookup(spec: Mapping[str, float] | Sequence[float] | None) -> tuple[dict[str, float], list[float]]:
    if spec is None:
        return {}, []
    if isinstance(spec, Mapping):
        return {str(k): float(v) for k, v in spec.items()}, []
    return {}, [float(v) for v in spec]


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
        scale: Mapping[str, float] | Sequence[float] | None = None,
        offset: Mapping[str, float] | Sequence[float] | None = None,
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
        self.timestamp_field = timestamp_field
        self._ts_scale = TIME_UNITS[timestamp_unit]
        self._clock = clock if clock is not None else ClockMapper()
        self._framer = _Framer(text=True, max_len=max_line, discard_first=discard_first_partial)
        self._names_in = [str(n) for n in channel_names or ()]
        self._scale_by_name, self._scale_by_pos = _as_lookup(scale)
        self._offset_by_name, self._offset_by_pos = _as_lookup(offset)
        self._last_t = -math.inf
        # Output channels (all formats).
        self._names: list[str] = []
        self._scale = np.ones(0)
        self._offset = np.zeros(0)
        self._affine = False
        # labels/json: label -> channel index (or _TS / _REJECTED); cached labels layouts.
        self._index: dict[str, int] = {}
        self._rejected = 0  # entries of _index that are _REJECTED
        self._layouts: dict[tuple[str, ...], _Layout] = {}
        self._layout: _Layout | None = None
        self._json_layouts: dict[tuple[str, ...], list[int]] = {}
        # csv: column layout.
        self._ncols: int | None = None
        self._ts_col: int | None = None
        self._col_of_channel: list[int] = []
        self._relayout_cols = 0
        self._relayout_run = 0
        if fmt != "csv":
            self._declare_labels()

    # ----------------------------------------------------------------- public

    @property
    def channel_names(self) -> list[str]:
        return list(self._names)

    def reconnect(self) -> None:
        """The byte stream restarted (port reopened): drop the unfinished line, discard
        the next first line again, re-anchor the device clock. Channels, format and
        counters are kept."""
        self._framer.restart()
        self._clock.reset()

    def feed(self, data: bytes, arrival_time: float) -> Parsed:
        """Parse the bytes read at ``arrival_time`` (Unix seconds). Never raises on bad input."""
        lines = self._framer.split(bytes(data), self.counters)
        n_before = len(self._names)
        if not lines:
            return _empty(n_before)
        if self.format == "auto":
            lines = self._autodetect(lines)
        if not lines:
            values, device = np.empty((len(self._names), 0)), None
        elif self.format == "csv":
            values, device = self._parse_csv(lines)
        elif self.format == "labels":
            values, device = self._parse_labels(lines)
        else:
            values, device = self._parse_json(lines)
        return self._finish(values, device, arrival_time, len(self._names) != n_before)

    # ----------------------------------------------------------------- channels

    def _add_channel(self, name: str) -> int:
        i = len(self._names)
        self._names.append(name)
        s = self._scale_by_name.get(name, self._scale_by_pos[i] if i < len(self._scale_by_pos) else 1.0)
        o = self._offset_by_name.get(name, self._offset_by_pos[i] if i < len(self._offset_by_pos) else 0.0)
        self._scale = np.append(self._scale, s)
        self._offset = np.append(self._offset, o)
        self._affine = bool(np.any(self._scale != 1.0) or np.any(self._offset != 0.0))
        return i

    def _declare_labels(self) -> None:
        if self.timestamp_field is not None:
            self._index[self.timestamp_field] = _TS
        for name in self._names_in:
            if name not in self._index and len(self._names) < self.max_channels:
                self._index[name] = self._add_channel(name)

    def _label_index(self, label: str, value: float | None) -> int | None:
        """Channel index for a label; creates the channel on its first numeric value."""
        i = self._index.get(label)
        if i is not None:
            return i
        if value is None:
            return None
        if len(self._names) >= self.max_channels:
            if self._rejected >= MAX_REJECTED_LABELS:
                for k in [k for k, i in self._index.items() if i == _REJECTED]:
                    del self._index[k]
                self._rejected = 0
            self._index[label] = _REJECTED
            self._rejected += 1
            return _REJECTED
        i = self._index[label] = self._add_channel(label)
        return i

    # ----------------------------------------------------------------- dispatch

    def _autodetect(self, lines: list[bytes]) -> list[bytes]:
        c = self.counters
        for k, line in enumerate(lines):
            fmt = _detect(line)
            if fmt is not None:
                self.format = fmt
                if fmt == "csv":
                    self._index.clear()
                    self._rejected = 0
                    self._names.clear()
                    self._scale, self._offset = np.ones(0), np.zeros(0)
                return lines[k:]
            if line.strip():
                c.lines_malformed += 1
                c.bytes_discarded += len(line)
            else:
                c.lines_empty += 1
        return []

    def _finish(self, values: np.ndarray, device: np.ndarray | None, arrival: float, changed: bool) -> Parsed:
        n = values.shape[1]
        if self._affine and n:
            values = values * self._scale[:, None] + self._offset[:, None]
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

    def _scatter(self, counts: list[int], idx: list[int], vals: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Place per-line (index, value) pairs into a (C, N) array; pull out the timestamp."""
        n = len(counts)
        out = np.full((len(self._names), n), np.nan)
        sample = np.repeat(np.arange(n), counts)
        ix = np.asarray(idx, dtype=np.intp)
        ch = ix >= 0
        out[ix[ch], sample[ch]] = vals[ch]
        device = None
        if self.timestamp_field is not None:
            device = np.full(n, np.nan)
            ts = ix == _TS
            device[sample[ts]] = vals[ts]
        rejected = int(np.count_nonzero(ix == _REJECTED))
        if rejected:
            self.counters.labels_rejected += rejected
        return out, device

    # ----------------------------------------------------------------- labels

    def _layout_for(self, labels: tuple[str, ...], index: list[int]) -> _Layout:
        """The cached layout of a line with these labels, at these channel indices
        (passed in: a rejected label may already be forgotten by `_index`)."""
        lay = self._layouts.get(labels)
        if lay is None:
            value = rb"[ \t]*[:=][ \t]*([^\s,;:=]+)"
            body = rb"[ \t,;]+".join(re.escape(lab.encode()) + value for lab in labels)
            lay = _Layout(re.compile(rb"^[ \t,;]*" + body + rb"[ \t,;]*$", re.MULTILINE), list(index))
            if len(self._layouts) >= 64:
                self._layouts.clear()
            self._layouts[labels] = lay
        return lay

    def _parse_labels(self, lines: list[bytes]) -> tuple[np.ndarray, np.ndarray | None]:
        c = self.counters
        layout = self._layout
        if layout is not None:
            # Steady state: every line has the last layout. One findall over the chunk
            # (the pattern cannot cross a line) tells, and hands over all the values.
            found = layout.regex.findall(b"\n".join(lines))
            if len(found) == len(lines):
                c.lines_ok += len(lines)
                k = len(layout.index)
                toks = list(chain.from_iterable(found)) if k > 1 else found
                vals, invalid, _ = _numbers(b" ".join(toks))
                c.values_invalid += int(np.count_nonzero(invalid))
                return self._scatter([k] * len(lines), layout.index * len(lines), vals)
        counts: list[int] = []
        idx: list[int] = []
        toks = []
        for line in lines:
            if layout is not None:
                m = layout.regex.fullmatch(line)
                if m is not None:
                    toks.extend(m.groups())
                    idx.extend(layout.index)
                    counts.append(len(layout.index))
                    continue
            pairs = _label_pairs(line)
            if not pairs:
                if line.strip():
                    c.lines_malformed += 1
                    c.bytes_discarded += len(line)
                else:
                    c.lines_empty += 1
                continue
            line_idx = []
            line_toks = []
            for lab, val in pairs:
                i = self._label_index(lab, _to_float(val))
                if i is not None:
                    line_idx.append(i)
                    line_toks.append(val)
                else:
                    c.values_invalid += 1  # a new label whose first value is not a number
            if not any(i != _REJECTED for i in line_idx):
                c.lines_malformed += 1
                c.bytes_discarded += len(line)
                c.labels_rejected += len(line_idx)
                continue
            if len(line_idx) == len(pairs):  # every label known: cache the line's layout
                layout = self._layout = self._layout_for(tuple(lab for lab, _ in pairs), line_idx)
            toks.extend(line_toks)
            idx.extend(line_idx)
            counts.append(len(line_idx))
        c.lines_ok += len(counts)
        vals, invalid, _ = _numbers(b" ".join(toks))
        c.values_invalid += int(np.count_nonzero(invalid))
        return self._scatter(counts, idx, vals)

    # ----------------------------------------------------------------- json

    def _parse_json(self, lines: list[bytes]) -> tuple[np.ndarray, np.ndarray | None]:
        c = self.counters
        counts: list[int] = []
        idx: list[int] = []
        vals: list[Any] = []
        layouts = self._json_layouts
        for line in lines:
            obj = _json_object_of(line)
            if type(obj) is not dict:
                if line.strip():
                    c.lines_malformed += 1
                    c.bytes_discarded += len(line)
                else:
                    c.lines_empty += 1
                continue
            # Fast path: a flat object with a key order seen before, all values int/float.
            lay = layouts.get(tuple(obj))
            if lay is not None:
                vs = list(obj.values())
                if _JSON_PLAIN.issuperset(map(type, vs)):
                    idx.extend(lay)
                    vals.extend(vs)
                    counts.append(len(lay))
                    continue
            k = self._json_object(obj, idx, vals)
            if k is None:
                c.lines_malformed += 1
                c.bytes_discarded += len(line)
            else:
                counts.append(k)
        c.lines_ok += len(counts)
        try:
            arr = np.asarray(vals, dtype=np.float64)
        except OverflowError:  # an integer beyond float range (fast path): NaN, counted
            arr = np.empty(len(vals))
            for j, v in enumerate(vals):
                try:
                    arr[j] = v
                except OverflowError:
                    arr[j] = math.nan
                    c.values_invalid += 1
        return self._scatter(counts, idx, arr)

    def _json_object(self, obj: dict[str, Any], idx: list[int], vals: list[Any]) -> int | None:
        """Append one object's (index, value) pairs; the count, or None if none is usable."""
        c = self.counters
        items = _json_fields(obj, c)
        k = 0
        usable = False
        cacheable = len(items) == len(obj)  # flat
        for name, raw in items:
            v = _json_number(raw)
            cacheable = cacheable and type(raw) in _JSON_PLAIN
            i = self._label_index(name, v)
            if i is None:
                c.values_invalid += 1
                cacheable = False
                continue
            if i != _REJECTED:
                usable = True
            if v is None:
                c.values_invalid += 1
                v = math.nan
            idx.append(i)
            vals.append(v)
            k += 1
        if not usable:
            del idx[len(idx) - k :], vals[len(vals) - k :]
            c.labels_rejected += k
            return None
        if cacheable:
            if len(self._json_layouts) >= 64:
                self._json_layouts.clear()
            self._json_layouts[tuple(obj)] = idx[len(idx) - k :]
        return k

    # ----------------------------------------------------------------- csv

    def _csv_layout(self, ncols: int) -> None:
        """Set the column count; name any new columns; channels only ever grow."""
        self._ncols = ncols
        names = self._names_in + [f"ch{i}" for i in range(len(self._names_in), ncols)]
        if self.timestamp_field is not None and self.timestamp_field in names[:ncols]:
            self._ts_col = names.index(self.timestamp_field)
        for col in range(ncols):
            if col != self._ts_col and names[col] not in self._names and len(self._names) < self.max_channels:
                self._add_channel(names[col])
                self._col_of_channel.append(col)

    def _csv_slow(self, line: bytes) -> tuple[list[float], int] | None:
        """One line the bulk path could not take: fields (NaN if bad) and the bad count."""
        if b"," in line or b";" in line:
            raw = [f.strip() for f in _CSV_FIELD_SPLIT.split(line)]
            if raw and not raw[-1]:
                raw.pop()  # a trailing separator
        else:
            raw = line.split()
        vals = [_to_float(f) if f else None for f in raw]
        bad = sum(v is None for v in vals)
        if bad == len(vals):
            return None
        return [math.nan if v is None else v for v in vals], bad

    def _parse_csv(self, lines: list[bytes]) -> tuple[np.ndarray, np.ndarray | None]:
        if self._ncols is None and self._names_in:
            self._csv_layout(len(self._names_in))
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        while lines:
            block, lines = self._csv_block(lines)
            if block is not None:
                parts.append((self._csv_columns(block), block))
        width = len(self._names)
        n = sum(p.shape[0] for _, p in parts)
        out = np.full((width, n), np.nan)
        at = 0
        for v, p in parts:  # a layout change in the chunk may have added channels since
            out[: v.shape[0], at : at + v.shape[1]] = v
            at += v.shape[1]
        if self._ts_col is None:
            return out, None
        ts = self._ts_col
        device = [p[:, ts] if ts < p.shape[1] else np.full(p.shape[0], np.nan) for _, p in parts]
        return out, np.concatenate(device) if device else np.empty(0)

    def _csv_block(self, lines: list[bytes]) -> tuple[np.ndarray | None, list[bytes]]:
        """Parse lines until the column layout changes: ((N, ncols) rows, lines left over).

        Lines with the expected number of columns are parsed in bulk. The others go
        through :meth:`_csv_slow` in order; CSV_RELAYOUT_AFTER consecutive ones with the
        same new count change the layout, and the rest of the chunk is parsed again.
        """
        if self._ncols is not None and len(lines) <= CSV_UNIFORM_LINES:
            block = self._csv_uniform(lines, self._ncols)
            if block is not None:
                return block, []
        c = self.counters
        n = len(lines)
        buf = b"\n".join(lines).translate(_CSV_SEPARATORS)
        vals, invalid, line_of = _numbers(buf)
        counts = np.bincount(line_of, minlength=n)
        n_bad = np.bincount(line_of[invalid], minlength=n)
        usable = (counts > 0) & (n_bad < counts)
        if self._ncols is None:
            first = np.flatnonzero(usable)
            if first.size == 0:
                self._count_discarded(lines, counts)
                return None, []
            self._csv_layout(int(counts[first[0]]))
        ncols = self._ncols
        assert ncols is not None
        good = usable & (counts == ncols)
        good_upto = np.cumsum(good)  # good lines up to and including each line
        end = n
        slow_rows: dict[int, list[float]] = {}
        prev = -1
        relayout = False
        for i in np.flatnonzero(~good & (counts > 0)).tolist():
            if good_upto[i] > (good_upto[prev] if prev >= 0 else 0):
                self._relayout_run = 0  # a good line came between: not a new layout
            prev = i
            res = self._csv_slow(lines[i])
            if res is not None and len(res[0]) == ncols:  # e.g. an empty field: "1,,3"
                slow_rows[i] = res[0]
                c.values_invalid += res[1]
                self._relayout_run = 0
                continue
            c.lines_malformed += 1
            c.bytes_discarded += len(lines[i])
            if res is None:
                continue
            width = len(res[0])
            if width != self._relayout_cols:
                self._relayout_cols, self._relayout_run = width, 0
            self._relayout_run += 1
            if self._relayout_run >= CSV_RELAYOUT_AFTER:
                end, relayout = i + 1, True
                break
        if good_upto[end - 1] > (good_upto[prev] if prev >= 0 else 0):
            self._relayout_run = 0
        good[end:] = False
        c.lines_empty += int(np.count_nonzero(counts[:end] == 0))
        n_good = int(good_upto[end - 1])
        c.lines_ok += n_good + len(slow_rows)
        c.values_invalid += int(n_bad[good].sum())
        block = vals[good[line_of]].reshape(n_good, ncols)
        if slow_rows:
            order = np.argsort(np.concatenate([np.flatnonzero(good), list(slow_rows)]), kind="stable")
            block = np.concatenate([block, np.array(list(slow_rows.values()))])[order]
        if relayout:
            self._relayout_run = 0
            self._csv_layout(self._relayout_cols)
        return (block if len(block) else None), lines[end:]

    def _csv_uniform(self, lines: list[bytes], ncols: int) -> np.ndarray | None:
        """The steady state of a device, in a small read: every line has `ncols`
        numbers. Then `float()` per field and one array at the end cost a third of
        the bulk path's ~40 numpy calls, whose fixed cost dominates below a few
        hundred lines (a serial read every 10 ms at 921,600 baud is ~20 lines).
        None for anything else (a short or long line, an empty one, a field that is
        not a number): the general path then does the accounting. Same tokens and
        the same values as the general path, which splits on the same separators
        and equals `float()` bit for bit."""
        rows = [line.translate(_CSV_SEPARATORS).split() for line in lines]
        for r in rows:
            if len(r) != ncols:
                return None
        try:
            vals = list(map(float, chain.from_iterable(rows)))
        except ValueError:
            return None
        self.counters.lines_ok += len(rows)
        self._relayout_run = 0  # good lines: no layout change under way
        return np.array(vals, dtype=np.float64).reshape(len(rows), ncols)

    def _count_discarded(self, lines: list[bytes], counts: np.ndarray) -> None:
        c = self.counters
        for line, k in zip(lines, counts.tolist()):
            if k:
                c.lines_malformed += 1
                c.bytes_discarded += len(line)
            else:
                c.lines_empty += 1

    def _csv_columns(self, block: np.ndarray) -> np.ndarray:
        """(N, ncols) rows -> (C', N) channel values; C' = channels at the time, NaN past ncols."""
        n, ncols = block.shape
        cols = np.asarray(self._col_of_channel, dtype=np.intp)
        out = np.full((len(cols), n), np.nan)
        have = cols < ncols
        out[have] = block[:, cols[have]].T
        unmapped = ncols - int(np.count_nonzero(have)) - (self._ts_col is not None and self._ts_col < ncols)
        if unmapped > 0:  # columns past max_channels
            self.counters.labels_rejected += unmapped * n
        return out


# --------------------------------------------------------------------------- binary records

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
        scale: Mapping[str, float] | Sequence[float] | None = None,
        offset: Mapping[str, float] | Sequence[float] | None = None,
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
        self._names = [n for n in names if n != timestamp_field and not n.startswith("_")]
        if len(self._names) > MAX_STREAM_CHANNELS:
            raise ValueError(f"{len(self._names)} channel fields; a stream has at most {MAX_STREAM_CHANNELS}")
        sb, sp = _as_lookup(scale)
        ob, op = _as_lookup(offset)
        self._scale = np.array([sb.get(n, sp[i] if i < len(sp) else 1.0) for i, n in enumerate(self._names)])
        self._offset = np.array([ob.get(n, op[i] if i < len(op) else 0.0) for i, n in enumerate(self._names)])
        self._affine = bool(np.any(self._scale != 1.0) or np.any(self._offset != 0.0))
        # Frames longer than the longest valid encoding are dropped while they arrive.
        longest = self.record_size + 1 + self.record_size // 254
        max_frame = longest if max_frame is None else max(int(max_frame), longest)
        self._framer = _Framer(text=False, max_len=max_frame, discard_first=discard_first_partial)
        self._clock = clock if clock is not None else ClockMapper()
        self._last_t = -math.inf

    @property
    def channel_names(self) -> list[str]:
        return list(self._names)

    def reconnect(self) -> None:
        """See :meth:`LineParser.reconnect`."""
        self._framer.restart()
        self._clock.reset()

    def feed(self, data: bytes, arrival_time: float) -> Parsed:
        """Parse the bytes read at ``arrival_time`` (Unix seconds). Never raises on bad input."""
        c = self.counters
        frames = self._framer.split(bytes(data), c)
        if not frames:
            return _empty(len(self._names))
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
        values = np.empty((len(self._names), n), dtype=np.float64 if self._affine else np.float32)
        for i, name in enumerate(self._names):
            values[i] = recs[name]
        if self._affine and n:
            values = (values * self._scale[:, None] + self._offset[:, None]).astype(np.float32)
        if self.timestamp_field is not None:
            ts = self._clock.map(recs[self.timestamp_field].astype(np.float64) * self._ts_scale, arrival_time)
        else:
            ts = np.full(n, max(arrival_time, self._last_t))
        if n:
            self._last_t = float(ts[-1])
        return Parsed(ts, values, False)


# --------------------------------------------------------------------------- profiles

_FORMAT_KEYS = {
    "kind", "timestamp_field", "timestamp_unit", "struct", "fields", "columns",
    "max_line", "max_channels", "discard_first_partial",
}  # fmt: skip
_CHANNEL_KEYS = {"name", "unit", "scale", "offset"}


def make_parser(profile: Mapping[str, Any]) -> LineParser | BinaryRecordParser:
    """Build the parser a device profile (the parsed TOML, see docs/devices.md) describes.

    Raises ValueError for a profile it cannot honour (an unknown key, kind or unit).
    """
    fmt = dict(profile.get("format", {}))
    unknown = set(fmt) - _FORMAT_KEYS
    if unknown:
        raise ValueError(f"unknown [format] keys: {sorted(unknown)}")
    channels = list(profile.get("channels", []))
    for ch in channels:
        extra = set(ch) - _CHANNEL_KEYS
        if extra or "name" not in ch:
            raise ValueError(f"[[channels]] entries need a name and take only {sorted(_CHANNEL_KEYS)}: {ch}")
    scale = {str(ch["name"]): float(ch["scale"]) for ch in channels if "scale" in ch}
    offset = {str(ch["name"]): float(ch["offset"]) for ch in channels if "offset" in ch}
    kind = fmt.get("kind", "auto")
    common: dict[str, Any] = {
        "timestamp_field": fmt.get("timestamp_field"),
        "discard_first_partial": bool(fmt.get("discard_first_partial", True)),
        "scale": scale or None,
        "offset": offset or None,
    }
    if kind == "cobs":
        if "struct" not in fmt:
            raise ValueError("[format] kind = 'cobs' needs struct = '<...'")
        return BinaryRecordParser(
            fmt["struct"],
            fmt.get("fields"),
            timestamp_unit=fmt.get("timestamp_unit", "us"),
            max_frame=fmt.get("max_line"),
            **common,
        )
    for key in ("struct", "fields"):
        if key in fmt:
            raise ValueError(f"[format] {key} only applies to kind = 'cobs'")
    names = fmt.get("columns") if kind == "csv" or "columns" in fmt else None
    if names is None:
        names = [str(ch["name"]) for ch in channels]
    return LineParser(
        kind,
        channel_names=names,
        timestamp_unit=fmt.get("timestamp_unit", "s"),
        max_line=int(fmt.get("max_line", MAX_LINE)),
        max_channels=int(fmt.get("max_channels", MAX_CHANNELS)),
        **common,
    )


def profile_units(profile: Mapping[str, Any]) -> dict[str, str]:
    """Channel name -> unit, from a profile's ``[[channels]]`` (channels not listed have none)."""
    return {str(ch["name"]): str(ch.get("unit", "")) for ch in profile.get("channels", [])}

