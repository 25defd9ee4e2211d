"""The serial data parsers: framing, formats, counters, timestamps, binary records."""

from __future__ import annotations

import math
import random
import struct
import tomllib
from pathlib import Path

import numpy as np
import pytest

from sensorstream.ingest import cobs
from sensorstream.ingest.parsing import (
    CSV_RELAYOUT_AFTER,
    CSV_UNIFORM_LINES,
    SMALL_BYTES,
    BinaryRecordParser,
    ClockMapper,
    MAX_REJECTED_LABELS,
    LineParser,
    ParseCounters,
    scan_numbers,
    make_parser,
    profile_units,
    record_dtype,
)

DEVICES = Path(__file__).resolve().parent.parent / "devices"
NAN = math.nan


def feed_all(parser, chunks, t0=1000.0):
    """Feed chunks at increasing arrival times; concatenate what comes out."""
    ts, cols = [], []
    for k, chunk in enumerate(chunks):
        p = parser.feed(chunk, t0 + k)
        ts.append(p.timestamps)
        cols.append(p.values)
    width = len(parser.channel_names)
    values = np.concatenate([np.pad(v, ((0, width - v.shape[0]), (0, 0)), constant_values=NAN) for v in cols], axis=1)
    return np.concatenate(ts), values


def rows(parser, data: bytes) -> list[list[float]]:
    """Samples as rows (NaN kept), from one feed."""
    p = parser.feed(data, 1.0)
    assert p.values.shape == (len(parser.channel_names), len(p.timestamps))
    return p.values.T.astype(np.float64).tolist()


def same(a, b, dtype=np.float32) -> bool:
    """Equal, NaN included, compared at the output's precision (float32) unless told."""
    return np.array_equal(np.asarray(a, dtype=dtype), np.asarray(b, dtype=dtype), equal_nan=True)


def assert_accounted(counters: ParseCounters, endings: int) -> None:
    assert counters.lines_seen == endings, counters


# --------------------------------------------------------------------------- line endings and framing


@pytest.mark.parametrize("ending", [b"\n", b"\r", b"\r\n"])
def test_every_line_ending_gives_the_same_samples(ending):
    p = LineParser("csv", discard_first_partial=False)
    data = ending.join([b"1,2", b"3,4", b"5,6"]) + ending
    assert rows(p, data) == [[1, 2], [3, 4], [5, 6]]
    assert p.counters.lines_ok == 3 and p.counters.lines_empty == 0
    assert_accounted(p.counters, 3)


def test_crlf_split_across_feeds_is_one_ending():
    p = LineParser("csv", discard_first_partial=False)
    assert rows(p, b"1,2\r") == [[1, 2]]
    assert rows(p, b"\n3,4\r") == [[3, 4]]
    assert rows(p, b"\n") == []
    assert rows(p, b"\n") == []  # a real empty line: not the LF of a CRLF any more
    assert p.counters.lines_ok == 2 and p.counters.lines_empty == 1
    assert_accounted(p.counters, 3)


SAMPLE = (
    b"\xff\xfegarbage tail\r\n"
    b"ax:1.5 ay=-2, Temperature: 23.64\r\n"
    b"ax:2.5\tay:3e2\n"
    b"\r"
    b"ax:x ay:4 gz:0.125\r"
    b"\x00\x01\x02 not labels at all\n"
    b"ay:5,gz:6,\r\n"
)
EXPECTED_NAMES = ["ax", "ay", "Temperature", "gz"]
EXPECTED_ROWS = [
    [1.5, -2, 23.64, NAN],
    [2.5, 300, NAN, NAN],
    [NAN, 4, NAN, 0.125],
    [NAN, 5, NAN, 6],
]
SAMPLE_ENDINGS = 7


def _expected():
    return np.array(EXPECTED_ROWS, dtype=np.float32).T


def test_sample_in_one_feed():
    p = LineParser()
    ts, values = feed_all(p, [SAMPLE])
    assert p.format == "labels"
    assert p.channel_names == EXPECTED_NAMES
    assert same(values, _expected())
    c = p.counters
    assert (c.lines_ok, c.lines_partial, c.lines_empty, c.lines_malformed, c.values_invalid) == (4, 1, 1, 1, 1)
    assert_accounted(c, SAMPLE_ENDINGS)


@pytest.mark.parametrize("cut", range(1, len(SAMPLE)))
def test_sample_split_at_every_byte_boundary(cut):
    p = LineParser()
    _, values = feed_all(p, [SAMPLE[:cut], SAMPLE[cut:]])
    assert p.channel_names == EXPECTED_NAMES
    assert same(values, _expected())
    assert_accounted(p.counters, SAMPLE_ENDINGS)


def test_sample_one_byte_at_a_time():
    p = LineParser()
    _, values = feed_all(p, [SAMPLE[i : i + 1] for i in range(len(SAMPLE))])
    assert same(values, _expected())
    assert p.counters.as_dict() == _one_feed_counters()


def _one_feed_counters():
    p = LineParser()
    p.feed(SAMPLE, 0.0)
    return p.counters.as_dict()


def test_partial_first_line_is_discarded_by_default_and_kept_on_request():
    p = LineParser("csv")
    assert rows(p, b"5,6\n1,2\n") == [[1, 2]]
    assert p.counters.lines_partial == 1 and p.counters.bytes_discarded == 3
    q = LineParser("csv", discard_first_partial=False)
    assert rows(q, b"5,6\n1,2\n") == [[5, 6], [1, 2]]
    assert q.counters.lines_partial == 0


def test_reconnect_discards_the_first_line_again_and_drops_the_unfinished_one():
    p = LineParser("csv")
    assert rows(p, b"x\n1,2\n3,") == [[1, 2]]
    p.reconnect()
    assert rows(p, b"9,9\n4,5\n") == [[4, 5]]
    assert p.counters.lines_partial == 2


def test_oversize_line_across_many_feeds_is_discarded_without_buffering_it():
    p = LineParser("csv", max_line=16, discard_first_partial=False)
    assert rows(p, b"1,2\n" + b"9" * 10) == [[1, 2]]
    for _ in range(50):
        assert rows(p, b"9" * 10) == []
        assert len(p._framer._buf) <= 16
    assert rows(p, b"99\n3,4\n") == [[3, 4]]
    c = p.counters
    assert c.lines_oversize == 1 and c.lines_ok == 2
    assert c.bytes_discarded == 10 + 500 + 2
    assert_accounted(c, 3)


def test_line_of_exactly_max_line_bytes_is_kept_and_one_more_is_not():
    p = LineParser("csv", max_line=7, discard_first_partial=False)
    assert rows(p, b"1234567\n12345678\n1\n") == [[1234567], [1]]
    assert p.counters.lines_oversize == 1


def test_oversize_lines_inside_one_chunk():
    p = LineParser("csv", max_line=8, discard_first_partial=False)
    assert rows(p, b"1,2\n" + b"7," * 20 + b"\n3,4\n") == [[1, 2], [3, 4]]
    assert p.counters.lines_oversize == 1


def test_empty_and_blank_lines_are_counted_not_errors():
    p = LineParser("csv", discard_first_partial=False)
    assert rows(p, b"\n  \n1 2\n\t\n") == [[1, 2]]
    assert p.counters.lines_empty == 3 and p.counters.lines_malformed == 0


# --------------------------------------------------------------------------- csv


@pytest.mark.parametrize("sep", [b",", b";", b"\t", b" ", b"  ", b", ", b" ;\t"])
def test_csv_separators(sep):
    p = LineParser("csv", discard_first_partial=False)
    assert rows(p, sep.join([b"1", b"-2.5", b"25e-2"]) + b"\n") == [[1, -2.5, 0.25]]
    assert p.channel_names == ["ch0", "ch1", "ch2"]


def test_csv_named_columns_scale_and_offset():
    p = LineParser(
        "csv", channel_names=["x", "y"], discard_first_partial=False, scale={"y": 2.0}, offset=[10.0, 0.0]
    )
    assert rows(p, b"1,2\n3,4\n") == [[11, 4], [13, 8]]
    assert p.channel_names == ["x", "y"]


def test_csv_more_columns_than_names_get_positional_names():
    p = LineParser("csv", channel_names=["x"], discard_first_partial=False)
    rows(p, b"1,2,3\n" * CSV_RELAYOUT_AFTER + b"4,5,6\n")
    assert p.channel_names == ["x", "ch1", "ch2"]


def test_csv_bad_values_become_nan_and_are_counted():
    p = LineParser("csv", discard_first_partial=False)
    out = rows(p, b"1,2,3\n4,abc,6\n7,,9\n1.2.3,8,nan\n")
    assert same(out, [[1, 2, 3], [4, NAN, 6], [7, NAN, 9], [NAN, 8, NAN]])
    assert p.counters.values_invalid == 3  # "nan" is a number
    assert p.counters.lines_ok == 4


def test_csv_wrong_column_count_is_malformed_until_it_persists():
    p = LineParser("csv", discard_first_partial=False)
    assert rows(p, b"1,2\n1,2,3\n3,4\n") == [[1, 2], [3, 4]]
    assert p.counters.lines_malformed == 1
    # A device now sending three columns: after CSV_RELAYOUT_AFTER lines in a row, adopted.
    data = b"".join(b"%d,%d,%d\n" % (i, i, i) for i in range(CSV_RELAYOUT_AFTER + 2))
    pa = p.feed(data, 2.0)
    assert pa.channels_changed and p.channel_names == ["ch0", "ch1", "ch2"]
    k = CSV_RELAYOUT_AFTER
    assert same(pa.values.T, [[k, k, k], [k + 1, k + 1, k + 1]])
    # ...and back to two: the third channel is NaN once the layout changes back.
    pb = p.feed(b"5,6\n" * (k + 1), 3.0)
    assert same(pb.values.T, [[5, 6, NAN]])
    assert_accounted(p.counters, 3 + (k + 2) + (k + 1))


@pytest.mark.parametrize("bad", [None, b"1,2\n", b"1,x,3\n", b"\n", b"1,,3\n", b"1,2,3,4\n"])
def test_csv_small_reads_and_bulk_reads_agree(bad):
    """Small blocks of well-formed lines skip the bulk path (_csv_uniform). Fed in
    reads of a few lines or in one read of more than CSV_UNIFORM_LINES lines, the
    same bytes must give bit-identical values and the same counters, with odd but
    valid numbers and with one line the fast path must leave to the general one."""
    rng = random.Random(7)
    odd = [b"1e3", b"-0", b".5", b"+2.", b"nan", b"-inf", b"1_000", b"12345678901234567", b"-0.000001"]
    lines = []
    for i in range(3 * CSV_UNIFORM_LINES):
        lines.append(b",".join(rng.choice(odd) if rng.random() < 0.1 else b"%.4f" % rng.uniform(-1e4, 1e4) for _ in range(3)) + b"\n")
        if bad is not None and i % 97 == 50:
            lines.append(bad)
    data = b"".join(lines)
    bulk = LineParser("csv", discard_first_partial=False)
    small = LineParser("csv", discard_first_partial=False)
    _, v_bulk = feed_all(bulk, [data])
    _, v_small = feed_all(small, [b"".join(lines[i : i + 5]) for i in range(0, len(lines), 5)])
    assert np.array_equal(v_bulk, v_small, equal_nan=True)
    assert bulk.counters == small.counters
    assert small.counters.lines_ok >= 3 * CSV_UNIFORM_LINES - (0 if bad is None else 10)


def test_csv_relayout_needs_consecutive_lines():
    p = LineParser("csv", discard_first_partial=False)
    rows(p, b"1,2\n" + b"1,2,3\n1,2\n" * CSV_RELAYOUT_AFTER)
    assert p.channel_names == ["ch0", "ch1"]
    assert p.counters.lines_malformed == CSV_RELAYOUT_AFTER


def test_csv_relayout_run_continues_across_feeds():
    p = LineParser("csv", discard_first_partial=False)
    rows(p, b"1,2\n")
    for _ in range(CSV_RELAYOUT_AFTER - 1):
        assert rows(p, b"1,2,3\n") == []
    assert rows(p, b"1,2,3\n7,8,9\n") == [[7, 8, 9]]


def test_csv_timestamp_column_is_not_a_channel():
    p = LineParser("csv", channel_names=["t", "v"], timestamp_field="t", timestamp_unit="ms", discard_first_partial=False)
    out = p.feed(b"1000,1\n1010,2\n", 50.0)
    assert p.channel_names == ["v"]
    assert same(out.values, [[1, 2]])
    assert np.allclose(out.timestamps, [49.99, 50.0])


def test_csv_only_banner_lines_yield_nothing_and_no_channels():
    p = LineParser("csv", discard_first_partial=False)
    assert rows(p, b"hello world\nbooting...\n") == []
    assert p.channel_names == [] and p.counters.lines_malformed == 2


def test_csv_columns_past_max_channels_are_counted():
    p = LineParser("csv", max_channels=2, discard_first_partial=False)
    assert rows(p, b"1,2,3,4\n") == [[1, 2]]
    assert p.counters.labels_rejected == 2


@pytest.mark.parametrize("n_tokens", [40, 4000])  # the small path and the bulk path
def test_numbers_match_float_exactly(n_tokens):
    rng = random.Random(7)
    toks = []
    for _ in range(n_tokens):
        kind = rng.random()
        if kind < 0.6:
            toks.append(f"{rng.uniform(-1e6, 1e6):.{rng.randint(0, 9)}f}")
        elif kind < 0.8:
            toks.append(str(rng.randint(-(10**14), 10**14)))
        else:
            toks.append(
                rng.choice(
                    ["1e5", "-2.5E-3", "nan", "-inf", "+7", ".5", "5.", "-.25", "0", "-0", "+0.0",
                     "12345678901234567890", "0.000000000000001234", "1_0", "99999999.9999999"]
                )
            )  # fmt: skip
    lines = [" ".join(toks[i : i + 7]) for i in range(0, len(toks), 7)]
    buf = "\n".join(lines).encode()
    assert (len(buf) < SMALL_BYTES) == (n_tokens == 40)
    values, invalid, line_of = scan_numbers(buf)
    assert not invalid.any()
    expected = [float(t) for t in toks]
    assert same(values, expected, np.float64)
    assert np.array_equal(np.signbit(values), np.signbit(expected))
    assert line_of.tolist() == [i // 7 for i in range(len(toks))]


@pytest.mark.parametrize("pad", [0, SMALL_BYTES])
@pytest.mark.parametrize("tok", ["-", "+", ".", "+-1", "1-", "1.2.3", "--1", "e5", "1e", "abc", "\x00", "1\x002", "١٢", "1.-2", "-1.2.", "."*9, "1"*16])
def test_numbers_reject_what_float_rejects(tok, pad):
    values, invalid, _ = scan_numbers(tok.encode() + b" 1" * (1 + pad // 2))
    assert not invalid[1:].any()
    try:
        ref = float(tok.encode())
    except ValueError:
        assert invalid[0] and math.isnan(values[0])
    else:
        assert not invalid[0] and values[0] == ref


# --------------------------------------------------------------------------- labels


@pytest.mark.parametrize(
    "line, expected",
    [
        (b"Temperature: 23.64", {"Temperature": 23.64}),
        (b"a:1 b:2", {"a": 1, "b": 2}),
        (b"a = 1, b = 2", {"a": 1, "b": 2}),
        (b"a:1,b:2", {"a": 1, "b": 2}),
        (b"a:1\tb:2\t", {"a": 1, "b": 2}),
        (b"  x_1:-3 y.2=4e1;z/3 : .5  ", {"x_1": -3, "y.2": 40, "z/3": 0.5}),
        ("température:21".encode(), {"température": 21}),
    ],
)
def test_labels_lines(line, expected):
    p = LineParser("labels", discard_first_partial=False)
    out = p.feed(line + b"\n", 1.0)
    assert p.channel_names == list(expected)
    assert same(out.values[:, 0], list(expected.values()))


def test_new_labels_mid_stream_add_channels_with_nan_backfill():
    p = LineParser("labels", discard_first_partial=False)
    a = p.feed(b"a:1\n", 1.0)
    assert a.channels_changed and p.channel_names == ["a"]
    b = p.feed(b"a:2\na:3 b:30\nb:40\n", 2.0)
    assert b.channels_changed and p.channel_names == ["a", "b"]
    assert same(b.values, [[2, 3, NAN], [NAN, 30, 40]])
    c = p.feed(b"a:4 b:50\n", 3.0)
    assert not c.channels_changed


def test_declared_channels_come_first_and_in_order():
    p = LineParser("labels", channel_names=["z", "a"], discard_first_partial=False)
    assert same(rows(p, b"a:1 q:2\n"), [[NAN, 1, 2]])
    assert p.channel_names == ["z", "a", "q"]


def test_labels_max_channels():
    p = LineParser("labels", max_channels=2, discard_first_partial=False)
    assert same(rows(p, b"a:1 b:2 c:3\nc:4\nd:1 a:5\n"), [[1, 2], [5, NAN]])
    c = p.counters
    assert c.labels_rejected == 3 and c.lines_malformed == 1 and c.lines_ok == 2
    assert p.channel_names == ["a", "b"]


@pytest.mark.parametrize("fmt", ["labels", "json"])
def test_ever_new_rejected_labels_do_not_grow_the_parser(fmt):
    """A device at the channel limit that keeps sending new labels (a counter in
    the key, an ID per reading, a wrong baud rate) is counted, not remembered
    forever; the known channels keep parsing, on their fast path too."""
    p = LineParser(fmt, max_channels=2, discard_first_partial=False)
    n = 3 * MAX_REJECTED_LABELS + 7
    if fmt == "labels":
        data = b"".join(b"a:%d b:%d id%d:5\n" % (i, -i, i) for i in range(n))
    else:
        data = b"".join(b'{"a": %d, "b": %d, "id%d": 5}\n' % (i, -i, i) for i in range(n))
    out = p.feed(data, 1.0)
    assert p.channel_names == ["a", "b"]
    np.testing.assert_array_equal(out.values, np.array([np.arange(n), -np.arange(n)], np.float32))
    assert p.counters.labels_rejected == n and p.counters.lines_ok == n
    assert len(p._channels.index) <= 2 + MAX_REJECTED_LABELS
    # A line of known labels that includes a label forgotten meanwhile still parses.
    out = p.feed(b"a:1 b:2 id0:3\n" if fmt == "labels" else b'{"a": 1, "b": 2, "id0": 3}\n', 2.0)
    np.testing.assert_array_equal(out.values[:, 0], [1, 2])
    assert p.counters.labels_rejected == n + 1


def test_channel_limits_above_the_hubs_are_refused_at_start():
    """A profile cannot let a device add more channels than a stream may have:
    the hub would refuse the new channel while the server runs."""
    with pytest.raises(ValueError, match="max_channels must be between 1 and 1024"):
        make_parser({"format": {"kind": "labels", "max_channels": 5000}})
    with pytest.raises(ValueError, match="max_channels"):
        LineParser("csv", max_channels=0)
    assert LineParser("csv", max_channels=1024).max_channels == 1024
    with pytest.raises(ValueError, match="at most 1024"):
        BinaryRecordParser("<" + "f" * 1025)
    assert len(BinaryRecordParser("<I" + "f" * 1024, timestamp_field="f0").channel_names) == 1024


def test_labels_many_channels_by_default():
    p = LineParser("labels", discard_first_partial=False)
    line = " ".join(f"c{i}:{i}" for i in range(70)).encode() + b"\n"
    out = p.feed(line, 1.0)
    assert len(p.channel_names) == 64 and out.values[:, 0].tolist() == list(range(64))
    assert p.counters.labels_rejected == 6


def test_labels_bad_values_and_non_labels_lines():
    p = LineParser("labels", discard_first_partial=False)
    out = rows(p, b"a:1\na:oops\nReady: yes\nhello\n1,2,3\na:\xff\xfe\n")
    assert same(out, [[1], [NAN], [NAN]])
    c = p.counters
    assert c.values_invalid == 3 and c.lines_malformed == 3  # "Ready: yes" makes no channel


def test_garbage_in_a_label_does_not_make_a_channel():
    p = LineParser("labels", discard_first_partial=False)
    rows(p, b"a:1\nT\xffemp:2\nb\x00c:3\n")
    assert p.channel_names == ["a"] and p.counters.lines_malformed == 2


def test_labels_timestamp_field():
    p = LineParser("labels", timestamp_field="t", timestamp_unit="ms", discard_first_partial=False)
    out = p.feed(b"t:1000 v:1\nt:1500 v:2\n", 100.0)
    assert p.channel_names == ["v"]
    assert np.allclose(out.timestamps, [99.5, 100.0])


# --------------------------------------------------------------------------- json


def test_json_lines_with_nesting_and_bad_values():
    p = LineParser("json", discard_first_partial=False)
    data = (
        b'{"t": 12.5, "imu": {"ax": 0.1, "ay": "0.2"}, "ok": true}\n'
        b'{"imu": {"ax": "broken", "deep": {"x": 1}}, "acc": [1, 2]}\n'
        b'{"status": "booting"}\n'
        b"[1, 2]\n"
        b'{"t": 1,\n'
        b'{"ax": NaN, "t": null}\n'
        b'{"t": 2, "imu.ax": 7}\n'
        b'\xff{"t": 3}\n'
        b'{"t": 3} x\n'
    )
    out = rows(p, data)
    assert p.channel_names == ["t", "imu.ax", "imu.ay", "ok", "acc.0", "acc.1", "ax"]
    assert same(out, [
        [12.5, 0.1, 0.2, 1, NAN, NAN, NAN],
        [NAN, NAN, NAN, NAN, 1, 2, NAN],
        [NAN, NAN, NAN, NAN, NAN, NAN, NAN],
        [2, 7, NAN, NAN, NAN, NAN, NAN],
    ])  # fmt: skip
    c = p.counters
    # "broken", the deep object, "booting", null t
    assert c.values_invalid == 4
    assert c.lines_malformed == 5 and c.lines_ok == 4


def test_json_deep_nesting_and_huge_numbers_do_not_raise():
    p = LineParser("json", discard_first_partial=False)
    rows(p, b"[" * 3000 + b"\n" + b'{"a": ' + b"9" * 400 + b"}\n" + b'{"b": 1e999}\n')
    assert p.channel_names == ["b"]
    assert p.counters.lines_malformed == 2


def test_json_known_layout_with_a_huge_integer():
    p = LineParser("json", discard_first_partial=False)
    out = rows(p, b'{"a": 1, "b": 2}\n  {"a": 3, "b": 4} \n{"a": ' + b"9" * 400 + b', "b": 5}\n{"b": 6, "a": true}\n')
    assert same(out, [[1, 2], [3, 4], [NAN, 5], [1, 6]])
    assert p.counters.values_invalid == 1


def test_json_timestamp_field_seconds():
    p = LineParser("json", timestamp_field="t", discard_first_partial=False)
    out = p.feed(b'{"t": 1.0, "v": 1}\n{"t": 1.25, "v": 2}\n', 500.0)
    assert p.channel_names == ["v"]
    assert np.allclose(out.timestamps, [499.75, 500.0])


# --------------------------------------------------------------------------- auto-detection


@pytest.mark.parametrize(
    "line, fmt",
    [(b"1,2,3", "csv"), (b"1 2", "csv"), (b"a:1", "labels"), (b"a = 1", "labels"), (b'{"a": 1}', "json")],
)
def test_autodetect(line, fmt):
    p = LineParser(discard_first_partial=False)
    out = p.feed(b"Booting v1.2\nReady: yes\n{bad json\n\n" + line + b"\n", 1.0)
    assert p.format == fmt and len(out) == 1
    assert p.counters.lines_malformed == 3 and p.counters.lines_empty == 1


def test_format_is_kept_once_detected():
    p = LineParser(discard_first_partial=False)
    rows(p, b"a:1\n")
    rows(p, b"1,2\n")
    assert p.format == "labels" and p.counters.lines_malformed == 1


def test_autodetect_with_declared_names_uses_them_as_csv_columns():
    p = LineParser(channel_names=["x", "y"], discard_first_partial=False)
    assert rows(p, b"1,2\n") == [[1, 2]]
    assert p.channel_names == ["x", "y"]


# --------------------------------------------------------------------------- timestamps


def test_arrival_time_is_shared_by_a_chunk_and_never_goes_back():
    p = LineParser("csv", discard_first_partial=False)
    assert p.feed(b"1\n2\n", 10.0).timestamps.tolist() == [10.0, 10.0]
    assert p.feed(b"3\n", 9.0).timestamps.tolist() == [10.0]  # the caller's clock stepped back
    assert p.feed(b"4\n", 11.0).timestamps.tolist() == [11.0]


def test_clock_mapper_anchors_on_the_newest_sample_of_the_first_chunk():
    m = ClockMapper()
    assert m.map(np.array([1.0, 1.1, 1.2]), 100.0).tolist() == pytest.approx([99.8, 99.9, 100.0])
    # A later, lower-latency sample pulls the offset down; output still never goes back.
    out = m.map(np.array([1.3, 1.4]), 100.15)
    assert out.tolist() == pytest.approx([100.05, 100.15])


def test_clock_mapper_device_reset_reanchors_and_stays_monotonic():
    m = ClockMapper()
    a = m.map(np.array([50.0, 50.5]), 1000.0)
    b = m.map(np.array([51.0, 0.1, 0.2]), 1000.6)  # device rebooted after 51.0
    assert a.tolist() == pytest.approx([999.5, 1000.0])
    assert b.tolist() == pytest.approx([1000.5, 1000.5, 1000.6])
    assert m.resyncs == 1
    c = m.map(np.array([0.3]), 1000.7)
    assert c.tolist() == pytest.approx([1000.7])


def test_clock_mapper_slow_device_clock_is_followed_then_reanchored():
    m = ClockMapper(max_lag=1.0, drift_ppm=0.0)
    m.map(np.array([0.0]), 0.0)
    # Device clock runs 1% slow: the lag grows until it passes max_lag, then re-anchors.
    outs = [m.map(np.array([k * 0.99]), float(k))[0] for k in range(1, 150)]
    assert np.all(np.diff(outs) >= 0)
    assert m.resyncs == 1
    assert all(o <= k + 1 for k, o in enumerate(outs))


def test_clock_mapper_drift_allowance_tracks_a_slightly_slow_clock_without_resync():
    m = ClockMapper(max_lag=0.5, drift_ppm=200.0)
    for k in range(0, 20000, 10):
        out = m.map(np.array([k * (1 - 100e-6)]), float(k))
        assert k - out[0] < 0.05
    assert m.resyncs == 0


def test_clock_mapper_nan_device_times_take_the_previous_output():
    m = ClockMapper()
    assert m.map(np.array([NAN]), 5.0).tolist() == [5.0]
    assert m.map(np.array([1.0, NAN, 2.0]), 10.0).tolist() == pytest.approx([9.0, 9.0, 10.0])


def test_device_timestamps_in_a_stream_with_a_reset():
    p = LineParser("labels", timestamp_field="t", timestamp_unit="ms", discard_first_partial=False)
    a = p.feed(b"t:5000 v:1\nt:5010 v:2\n", 100.0)
    b = p.feed(b"t:5020 v:3\nt:3 v:4\nt:13 v:5\n", 100.02)
    ts = np.concatenate([a.timestamps, b.timestamps])
    assert np.all(np.diff(ts) >= 0)
    assert ts[-1] == pytest.approx(100.02)


# --------------------------------------------------------------------------- COBS and binary records


def ref_cobs_encode(data: bytes) -> bytes:
    """Reference COBS encoder (the textbook one), independent of sensorstream.cobs."""
    out = bytearray([0])
    code_at, code = 0, 1
    for byte in data:
        if byte:
            out.append(byte)
            code += 1
        if not byte or code == 0xFF:
            out[code_at] = code
            code_at, code = len(out), 1
            out.append(0)
    out[code_at] = code
    return bytes(out)


@pytest.mark.parametrize("size", [0, 1, 2, 28, 253, 254, 255, 600])
def test_cobs_round_trip_against_reference(size):
    rng = random.Random(size)
    for _ in range(50):
        data = bytes(rng.choice([0, 0, 1, 255, rng.randrange(256)]) for _ in range(size))
        enc = ref_cobs_encode(data)
        assert cobs.encode(data) == enc
        assert b"\x00" not in enc
        assert cobs.decode(enc) == data
        if size < 254:
            dec, ok = cobs.decode_fixed([enc], size)
            assert ok.tolist() == [True] and dec.tobytes() == data


def test_cobs_decode_fixed_rejects_bad_frames():
    size = 8
    good = ref_cobs_encode(bytes([1, 0, 2, 0, 0, 3, 4, 0]))
    overshoot = bytes([10]) + good[1:]
    short_chain = bytes([1]) + good[1:]  # chain ends before the frame does... and re-enters mid data
    frames = [good, good[:-1], overshoot, good + b"\x01", good, short_chain]
    dec, ok = cobs.decode_fixed(frames, size)
    assert ok.tolist()[:5] == [True, False, False, False, True]
    assert dec.shape[0] == int(ok.sum())
    assert dec[0].tobytes() == bytes([1, 0, 2, 0, 0, 3, 4, 0])
    with pytest.raises(ValueError):
        cobs.decode(overshoot)


FMT = "<Iffffff"
FIELDS = ["t_us", "ax", "ay", "az", "gx", "gy", "gz"]


def imu_stream(n, rng, t0=1_000_000):
    recs = [
        struct.pack(FMT, t0 + 10_000 * i, *(rng.choice([0.0, -1.5, rng.uniform(-10, 10)]) for _ in range(6)))
        for i in range(n)
    ]
    return recs, b"".join(ref_cobs_encode(r) + b"\x00" for r in recs)


def test_binary_records_decode_in_bulk():
    rng = random.Random(1)
    recs, data = imu_stream(300, rng)
    p = BinaryRecordParser(FMT, FIELDS, timestamp_field="t_us", discard_first_partial=False)
    out = p.feed(data, 2000.0)
    assert p.channel_names == FIELDS[1:]
    ref = np.array([struct.unpack(FMT, r) for r in recs])
    assert np.array_equal(out.values, ref[:, 1:].T.astype(np.float32))
    assert out.values.dtype == np.float32 and out.timestamps.dtype == np.float64
    assert np.allclose(np.diff(out.timestamps), 0.01)
    assert out.timestamps[-1] == pytest.approx(2000.0)
    assert p.counters.lines_ok == 300


def test_binary_split_at_every_byte_boundary_with_bad_frames():
    rng = random.Random(2)
    recs, data = imu_stream(4, rng)
    enc = data.split(b"\x00")
    data = b"junk\x00" + enc[0] + b"\x00\x00" + enc[1][:-3] + b"\x00" + enc[2] + b"\x01\x00" + enc[3] + b"\x00"
    expected = np.array([struct.unpack(FMT, recs[i])[1:] for i in (0, 3)], dtype=np.float32).T
    for cut in range(1, len(data)):
        p = BinaryRecordParser(FMT, FIELDS, timestamp_field="t_us")
        _, values = feed_all(p, [data[:cut], data[cut:]])
        assert np.array_equal(values, expected)
        c = p.counters
        # enc[1][:-3] is too short (malformed); enc[2] + 1 byte is longer than any record's encoding
        assert (c.lines_partial, c.lines_ok, c.lines_empty, c.lines_malformed, c.lines_oversize) == (1, 2, 1, 1, 1)
        assert_accounted(c, data.count(b"\x00"))


def test_binary_oversize_frame_and_partial_first_frame():
    rng = random.Random(3)
    recs, data = imu_stream(2, rng)
    p = BinaryRecordParser(FMT, FIELDS)
    assert len(p.feed(b"\x05" * 10, 1.0)) == 0  # mid-frame on connect
    assert len(p.feed(b"\x00" + b"\x07" * 1000, 1.0)) == 0
    assert len(p._framer._buf) <= 29
    out = p.feed(b"\x00" + data, 1.0)
    assert len(out) == 2 and p.channel_names == FIELDS
    assert (p.counters.lines_partial, p.counters.lines_oversize) == (1, 1)


def test_binary_large_records_use_the_generic_decoder():
    fmt = "<I100f"
    rng = random.Random(4)
    recs = [struct.pack(fmt, i, *(rng.choice([0.0, 1.0]) for _ in range(100))) for i in range(5)]
    data = b"".join(ref_cobs_encode(r) + b"\x00" for r in recs) + b"\x01\x02\x00"
    p = BinaryRecordParser(fmt, ["n"], discard_first_partial=False)
    out = p.feed(data, 1.0)
    assert len(p.channel_names) == 101 and p.channel_names[:2] == ["n", "f1"]
    assert np.array_equal(out.values.T, np.array([struct.unpack(fmt, r) for r in recs], dtype=np.float32))
    assert p.counters.lines_malformed == 1


@pytest.mark.parametrize("fmt", ["<Iffffff", ">hHbBqQ?e", "@bdhi", "=b3fxxI", "!d2xI", "Bxd"])
def test_record_dtype_matches_struct(fmt):
    dt = record_dtype(fmt)
    assert dt.itemsize == struct.calcsize(fmt)
    rng = random.Random(fmt)
    n_fields = len(dt.names)
    vals = []
    for name in dt.names:
        kind = dt.fields[name][0].kind
        vals.append(rng.uniform(-100, 100) if kind == "f" else rng.randint(0, 1) if dt.fields[name][0].itemsize == 1 else rng.randint(0, 100))
    packed = struct.pack(fmt, *vals)
    rec = np.frombuffer(packed, dtype=dt)[0]
    assert len(vals) == n_fields
    for name, v in zip(dt.names, struct.unpack(fmt, packed)):
        assert float(rec[name]) == pytest.approx(float(v), rel=1e-3)


@pytest.mark.parametrize("fmt", ["<I10s", "<Ip", "<I?junk", "<P"])
def test_record_dtype_rejects_what_it_cannot_map(fmt):
    with pytest.raises(ValueError):
        record_dtype(fmt)


def test_binary_ignored_fields_and_scale():
    p = BinaryRecordParser("<hh", ["_pad", "raw"], scale={"raw": 0.5}, offset={"raw": 1.0}, discard_first_partial=False)
    out = p.feed(ref_cobs_encode(struct.pack("<hh", 7, 10)) + b"\x00", 1.0)
    assert p.channel_names == ["raw"] and out.values.tolist() == [[6.0]]


# --------------------------------------------------------------------------- profiles


def serial_profiles():
    return sorted(p for p in DEVICES.glob("*.toml") if not p.name.startswith("sim-"))


@pytest.mark.parametrize("path", serial_profiles(), ids=lambda p: p.name)
def test_shipped_serial_profiles_build_parsers(path):
    profile = tomllib.loads(path.read_text())
    parser = make_parser(profile)
    assert profile["stream"]["id"]
    assert "baud" in profile["port"] or "://" in profile["port"].get("path", "")
    assert set(profile_units(profile)) <= {ch["name"] for ch in profile.get("channels", [])}
    if isinstance(parser, BinaryRecordParser):
        assert parser.record_size == struct.calcsize(profile["format"]["struct"])


def test_make_parser_kinds_and_errors():
    lp = make_parser({"format": {"kind": "csv", "columns": ["t", "a"], "timestamp_field": "t"}, "channels": [{"name": "a", "scale": 2}]})
    assert rows(lp, b"1,2\n3,4\n") == [[8]]
    assert isinstance(make_parser({}), LineParser)
    bp = make_parser({"format": {"kind": "cobs", "struct": "<If", "fields": ["t", "v"], "timestamp_field": "t"}})
    assert isinstance(bp, BinaryRecordParser) and bp.channel_names == ["v"]
    for bad in (
        {"format": {"kind": "xml"}},
        {"format": {"kind": "csv", "struct": "<f"}},
        {"format": {"kind": "cobs"}},
        {"format": {"kind": "json", "timestamp_unit": "min"}},
        {"format": {"kidn": "csv"}},
        {"channels": [{"unit": "V"}]},
    ):
        with pytest.raises(ValueError):
            make_parser(bad)


def _profile(name):
    return tomllib.loads((DEVICES / name).read_text())


def test_profiles_parse_their_documented_lines():
    pico = make_parser(_profile("pico-csv.toml"))
    out = pico.feed(b"999,1,1\n1000,14000,32767\n", 10.0)
    assert pico.channel_names == ["temperature", "light"]
    assert out.values[:, 0].tolist() == pytest.approx([27.60, 0.5], abs=0.01)  # 27 - (0.70497 - 0.706) / 0.001721

    ard = make_parser(_profile("arduino-plotter.toml"))
    out = ard.feed(b"junk\nt:12345 a0:1.234 a1:0.567 a2:2.345 sine:0.707\r\n", 10.0)
    assert ard.channel_names == ["a0", "a1", "a2", "sine"] and len(out) == 1

    esp = make_parser(_profile("esp32-imu-json.toml"))
    line = b'{"t": 123456, "imu": {"ax": 0.12, "ay": -0.03, "az": 9.79, "gx": 0.001, "gy": 0.0, "gz": -0.002}, "temp": 31.5}\n'
    out = esp.feed(b"\n" + line, 10.0)
    assert esp.channel_names == ["imu.ax", "imu.ay", "imu.az", "imu.gx", "imu.gy", "imu.gz", "temp"]
    assert same(out.values[:, 0], [0.12, -0.03, 9.79, 0.001, 0.0, -0.002, 31.5])
    assert list(profile_units(_profile("esp32-imu-json.toml")).values())[0] == "m/s²"
