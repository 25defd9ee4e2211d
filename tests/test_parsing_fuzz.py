"""Property tests: parsers never raise, account for every line, and ignore how bytes are chunked.

The accounting invariant (docs/devices.md, "Counters"):

    lines_ok + lines_malformed + lines_oversize + lines_empty + lines_partial
        == line endings in the input (LF, CR, CRLF counting once) -- or 0x00 delimiters for COBS
"""

from __future__ import annotations

import json
import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensorstream.ingest import cobs
from sensorstream.ingest.parsing import BinaryRecordParser, LineParser

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def line_endings(data: bytes) -> int:
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").count(b"\n")


def cut(data: bytes, points: list[int]) -> list[bytes]:
    bounds = sorted({min(p, len(data)) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in zip(bounds[:-1], bounds[1:])] or [data]


def run(parser, chunks, arrival=lambda k: 100.0 + k):
    """Feed everything, check each Parsed, return the concatenated (timestamps, values)."""
    ts, vals = [], []
    last = -np.inf
    for k, chunk in enumerate(chunks):
        out = parser.feed(chunk, arrival(k))
        n = len(out.timestamps)
        assert out.timestamps.dtype == np.float64 and out.values.dtype == np.float32
        assert out.values.shape == (len(parser.channel_names), n)
        assert n == 0 or (out.timestamps[0] >= last and np.all(np.diff(out.timestamps) >= 0))
        last = out.timestamps[-1] if n else last
        ts.append(out.timestamps)
        vals.append(out.values)
    width = len(parser.channel_names)
    vals = [np.pad(v, ((0, width - v.shape[0]), (0, 0)), constant_values=np.nan) for v in vals]
    return np.concatenate(ts), np.concatenate(vals, axis=1)


FORMATS = st.sampled_from(["auto", "csv", "labels", "json"])
CUTS = st.lists(st.integers(0, 3000), max_size=12)


@FUZZ
@given(data=st.binary(max_size=3000), points=CUTS, fmt=FORMATS, max_line=st.sampled_from([8, 64, 4096]))
def test_random_bytes_never_raise_and_every_line_is_accounted_for(data, points, fmt, max_line):
    p = LineParser(fmt, max_line=max_line, max_channels=8)
    run(p, cut(data, points))
    assert p.counters.lines_seen == line_endings(data)
    assert len(p.channel_names) <= 8


number = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True, width=32).map(repr),
    st.floats(-1e4, 1e4).map(lambda x: f"{x:.3f}"),
    st.sampled_from(["", "x", "1e", "-", ".", "1.2.3", "\x00", "\ufffd", "0x1f"]),
)
label = st.sampled_from(["a", "b", "Temp", "imu.ax", "t", "very_long_label_name", "é"])
csv_line = st.lists(number, min_size=1, max_size=6).flatmap(
    lambda xs: st.sampled_from([",", ";", "\t", " ", ", "]).map(lambda sep: sep.join(xs))
)
labels_line = st.lists(st.tuples(label, st.sampled_from([":", "=", ": ", " = "]), number), min_size=1, max_size=5).map(
    lambda ps: " ".join(f"{k}{s}{v}" for k, s, v in ps)
)
json_line = st.dictionaries(
    label, st.one_of(st.floats(allow_nan=False), st.integers(-5, 5), st.text(max_size=3), st.none(),
                     st.dictionaries(label, st.floats(allow_nan=False), max_size=2)), max_size=4,
).map(json.dumps)  # fmt: skip
garbage = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"").decode("latin-1"))
any_line = st.one_of(csv_line, labels_line, json_line, garbage)


def stream(lines_strategy):
    return st.tuples(
        st.lists(st.tuples(lines_strategy, st.sampled_from(["\n", "\r", "\r\n"])), max_size=40),
        st.binary(max_size=20),
    ).map(lambda t: "".join(line + end for line, end in t[0]).encode("utf-8", "surrogatepass") + t[1])


@FUZZ
@given(data=stream(any_line), points=CUTS, fmt=FORMATS, first=st.booleans())
def test_chunking_does_not_change_the_result(data, points, fmt, first):
    """Same samples, channels and counters whether the bytes come in one piece or many."""
    whole = LineParser(fmt, discard_first_partial=first, max_channels=6)
    pieces = LineParser(fmt, discard_first_partial=first, max_channels=6)
    _, v1 = run(whole, [data])
    _, v2 = run(pieces, cut(data, points), arrival=lambda k: 100.0)
    assert whole.channel_names == pieces.channel_names
    assert whole.format == pieces.format
    assert whole.counters == pieces.counters
    assert np.array_equal(v1, v2, equal_nan=True)
    assert whole.counters.lines_seen == line_endings(data)


@FUZZ
@given(
    lines=st.lists(st.one_of(csv_line, st.just("1,2,3"), st.just("4;5")), max_size=60),
    points=CUTS,
)
def test_csv_layout_changes_are_chunking_independent(lines, points):
    data = "".join(line + "\n" for line in lines).encode("utf-8", "surrogatepass")
    a, b = LineParser("csv", discard_first_partial=False), LineParser("csv", discard_first_partial=False)
    _, v1 = run(a, [data])
    _, v2 = run(b, cut(data, points), arrival=lambda k: 100.0)
    assert a.counters == b.counters and a.channel_names == b.channel_names
    assert np.array_equal(v1, v2, equal_nan=True)


@FUZZ
@given(
    ts=st.lists(st.one_of(st.integers(0, 2**32 - 1), st.just(-1)), min_size=1, max_size=50),
    points=CUTS,
    arrivals=st.lists(st.floats(0, 1e6), min_size=1, max_size=13),
)
def test_device_timestamps_never_go_backwards(ts, points, arrivals):
    p = LineParser("labels", timestamp_field="t", timestamp_unit="us", discard_first_partial=False)
    data = "".join(f"t:{t if t >= 0 else 'x'} v:1\n" for t in ts).encode()
    out_ts, _ = run(p, cut(data, points), arrival=lambda k: arrivals[k % len(arrivals)])
    assert len(out_ts) == len(ts)
    assert np.all(np.isfinite(out_ts))


FMT = "<Ihf"
SIZE = struct.calcsize(FMT)
record = st.tuples(st.integers(0, 2**32 - 1), st.integers(-(2**15), 2**15 - 1), st.floats(width=32))


@FUZZ
@given(
    items=st.lists(st.one_of(record, st.binary(max_size=20)), max_size=40),
    prefix=st.binary(max_size=10),
    points=CUTS,
)
def test_binary_frames_are_accounted_for_and_records_survive_garbage(items, prefix, points):
    data = prefix
    good = []
    for it in items:
        if isinstance(it, tuple):
            rec = struct.pack(FMT, *it)
            good.append(rec)
            data += b"\x00" + cobs.encode(rec)
        else:
            data += it
    data += b"\x00"
    p = BinaryRecordParser(FMT, ["t", "n", "v"], timestamp_field="t")
    _, values = run(p, cut(data, points))
    assert p.counters.lines_seen == data.count(b"\x00")
    # Every intact record whose frame was not merged with garbage comes out, in order.
    assert p.counters.lines_ok == values.shape[1] <= len(good) + data.count(b"\x00")


@FUZZ
@given(data=st.binary(max_size=2000), points=CUTS)
def test_binary_random_bytes_never_raise(data, points):
    p = BinaryRecordParser("<Iffffff", ["t", "a", "b", "c", "d", "e", "f"], timestamp_field="t")
    run(p, cut(data, points))
    assert p.counters.lines_seen == data.count(b"\x00")
