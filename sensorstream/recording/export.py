"""Exports: a recording (or any stream's arrays) as CSV, npz, Parquet or Foxglove MCAP.

The table writers take arrays, not a recording, so the server's `/export`
(history held in memory) writes exactly the same files as `sensorstream export`.

    CSV      one table per stream: time_iso, time_unix, then one column per channel
             named "name (unit)"; a first line starting with '#' says what it is.
             Values are written with 9 significant digits, which read back as the
             very same float32; time_unix with the shortest text that reads back as
             the same float64.
    npz      one file: <id>/t float64[N], <id>/values float32[C, N], <id>/channels,
             <id>/units (string arrays), and `streams` (the ids).
    parquet  like CSV (pip install 'sensorstream[parquet]'): float64 time_unix, a UTC
             timestamp column, float32 channels with their unit in the field metadata.
    foxglove an MCAP file with a JSON schema per stream and one JSON message per
             sample, which Foxglove's and Lichtblick's plot panels open directly.

`--align MS` resamples every selected stream onto one shared time axis (a grid of
multiples of MS milliseconds) and writes one table: `linear` interpolates between
neighbouring samples, `nearest` takes the closest one; a grid point inside a gap
(no sample within 5 sample intervals, or outside a stream's recorded span) is empty.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable

import numpy as np

from ..protocol import Channel
from .reader import Recording

FORMATS = ("csv", "npz", "parquet", "foxglove")
METHODS = ("linear", "nearest")
GAP_INTERVALS = 5  # a gap: neighbouring samples further apart than this many median intervals


class ExportError(Exception):
    """A request that cannot be exported (the message says why and what to do)."""


@dataclass
class Table:
    """One stream's samples (or an aligned stream's resampled values)."""

    id: str
    channels: tuple[Channel, ...]
    t: np.ndarray  # float64[N]
    v: np.ndarray  # float32[C, N]
    rate_hz: float | None = None


def safe_name(stream_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stream_id) or "stream"


def iso_times(t: np.ndarray) -> np.ndarray:
    """Unix seconds -> ISO 8601 UTC strings with microseconds, vectorised."""
    finite = np.isfinite(t)
    us = np.where(finite, np.round(np.where(finite, t, 0) * 1e6), 0).astype(np.int64)
    out = np.char.add(np.datetime_as_string(us.astype("datetime64[us]"), unit="us"), "Z")
    return np.where(finite, out, "")


def _column(c: Channel) -> str:
    return f"{c.name} ({c.unit})" if c.unit else c.name


def _fmt(x: float) -> str:
    return "" if x != x else "%.9g" % x


def write_csv(f: io.TextIOBase, tables: list[Table], comment: str) -> None:
    """One table; several tables must share `t` (aligned)."""
    f.write(f"# {comment}\n")
    cols = ["time_iso", "time_unix"] + [_column(c) if len(tables) == 1 else f"{tb.id}/{_column(c)}" for tb in tables for c in tb.channels]
    f.write(",".join(_quote(c) for c in cols) + "\n")
    t = tables[0].t
    iso = iso_times(t).tolist()
    rows = np.concatenate([tb.v for tb in tables], axis=0).T.tolist() if tables else []
    for when, unix, vals in zip(iso, t.tolist(), rows):
        f.write(f"{when},{unix!r},{','.join(map(_fmt, vals))}\n")


def _quote(s: str) -> str:
    return '"' + s.replace('"', '""') + '"' if any(ch in s for ch in ',"\n') else s


def write_npz(f: BinaryIO, tables: list[Table], aligned: bool, note: str) -> None:
    arrays: dict[str, np.ndarray] = {"streams": np.array([tb.id for tb in tables], dtype=str), "note": np.array(note)}
    if aligned and tables:
        arrays["t"] = tables[0].t
    for tb in tables:
        if not aligned:
            arrays[f"{tb.id}/t"] = tb.t
        arrays[f"{tb.id}/values"] = tb.v
        arrays[f"{tb.id}/channels"] = np.array([c.name for c in tb.channels], dtype=str)
        arrays[f"{tb.id}/units"] = np.array([c.unit for c in tb.channels], dtype=str)
    np.savez(f, **arrays)


def write_parquet(path: Path, tables: list[Table], note: str) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ExportError("Parquet needs pyarrow: pip install 'sensorstream[parquet]' (or pip install pyarrow)") from None
    t = tables[0].t
    fields = [pa.field("time_unix", pa.float64()), pa.field("time", pa.timestamp("us", tz="UTC"))]
    cols = [pa.array(t), pa.array(np.round(np.nan_to_num(t) * 1e6).astype("int64"), type=pa.timestamp("us", tz="UTC"))]
    for tb in tables:
        for i, c in enumerate(tb.channels):
            name = c.name if len(tables) == 1 else f"{tb.id}/{c.name}"
            fields.append(pa.field(name, pa.float32(), metadata={"unit": c.unit, "stream": tb.id}))
            cols.append(pa.array(tb.v[i]))
    schema = pa.schema(fields, metadata={"sensorstream": note})
    pq.write_table(pa.Table.from_arrays(cols, schema=schema), path)


# --------------------------------------------------------------------------- alignment


def grid(start: float, end: float, step: float) -> np.ndarray:
    """Multiples of `step` from the first at or after `start` to the last at or before `end`."""
    k0, k1 = math.ceil(start / step - 1e-9), math.floor(end / step + 1e-9)
    # k * (step in ms) is exact for whole-ms steps; one division then rounds once.
    return np.arange(k0, k1 + 1, dtype=np.float64) * (step * 1000) / 1000 if k1 >= k0 else np.empty(0)


def resample(t: np.ndarray, v: np.ndarray, at: np.ndarray, method: str) -> np.ndarray:
    """float32[C, len(at)]: `v` (sampled at `t`) at the times `at`; NaN in gaps and outside."""
    out = np.full((v.shape[0], len(at)), np.nan, np.float32)
    if len(t) == 0 or len(at) == 0:
        return out
    if np.any(np.diff(t) < 0):
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[:, order]
    dt = np.diff(t)
    typical = float(np.median(dt)) if len(dt) else 0.0
    gap = GAP_INTERVALS * typical if typical > 0 else 0.0
    if len(t) == 1:
        out[:, at == t[0]] = v[:, :1]
        return out
    inside = (at >= t[0]) & (at <= t[-1])
    hi = np.clip(np.searchsorted(t, at, side="left"), 1, len(t) - 1)
    lo = hi - 1
    span = t[hi] - t[lo]
    ok = inside & (span <= gap)
    if method == "nearest":
        pick = np.where(at - t[lo] <= t[hi] - at, lo, hi)
        out[:, ok] = v[:, pick[ok]]
        return out
    w = np.where(span > 0, (at - t[lo]) / np.where(span > 0, span, 1), 0.0)
    vals = v[:, lo] + (v[:, hi] - v[:, lo]) * w.astype(np.float32)
    out[:, ok] = vals[:, ok]
    return out


def align(tables: list[Table], step_s: float, method: str, start: float | None, end: float | None) -> list[Table]:
    if method not in METHODS:
        raise ExportError(f"unknown alignment {method!r}: use linear or nearest")
    spans = [(tb.t.min(), tb.t.max()) for tb in tables if len(tb.t)]
    if not spans:
        return [Table(tb.id, tb.channels, np.empty(0), np.empty((len(tb.channels), 0), np.float32), tb.rate_hz) for tb in tables]
    lo = start if start is not None else min(s for s, _ in spans)
    hi = end if end is not None else max(e for _, e in spans)
    axis = grid(lo, hi, step_s)
    if len(axis) > 50_000_000:
        raise ExportError(f"--align {step_s * 1000:g} ms over {hi - lo:.0f} s makes {len(axis)} rows: choose a larger step or a shorter range")
    return [Table(tb.id, tb.channels, axis, resample(tb.t, tb.v, axis, method), tb.rate_hz) for tb in tables]


# --------------------------------------------------------------------------- from a recording


def tables_of(rec: Recording, patterns: list[str] | None, start: float | None, end: float | None) -> list[Table]:
    streams = rec.select(patterns)
    if not streams:
        have = ", ".join(sorted({s.id for s in rec.streams})) or "none"
        raise ExportError(f"no stream matches {' '.join(patterns or ['*'])} in {rec.path} (it has: {have})")
    out = []
    for s in streams:
        t, v = s.read(start, end)
        out.append(Table(s.id, s.channels, t, v, s.rate_hz))
    return out


def export(rec: Recording, fmt: str, out: Path, *, patterns: list[str] | None = None, start: float | None = None,
           end: float | None = None, align_ms: float | None = None, method: str = "linear") -> list[Path]:
    """Write the export; returns the files written."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    if fmt == "foxglove":
        if align_ms is not None:
            raise ExportError("--align does not apply to --format foxglove (it keeps every sample at its own time)")
        return [write_foxglove(rec, out, patterns, start, end)]
    tables = tables_of(rec, patterns, start, end)
    note = f"sensorstream export of {rec.path.name}"
    if align_ms is not None:
        tables = align(tables, align_ms / 1000.0, method, start, end)
        note += f"; every stream resampled onto one time axis every {align_ms:g} ms ({method})"
    ext = {"csv": ".csv", "npz": ".npz", "parquet": ".parquet"}[fmt]
    if fmt == "npz":
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "wb") as f:
            write_npz(f, tables, align_ms is not None, note)
        return [out]
    # One file when aligned or when a single stream goes to a file named *.csv / *.parquet; else a directory.
    groups = [tables] if align_ms is not None or (len(tables) == 1 and out.suffix == ext) else [[tb] for tb in tables]
    if len(groups) == 1 and out.suffix == ext:
        paths = [out]
        out.parent.mkdir(parents=True, exist_ok=True)
    else:
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / (safe_name(g[0].id) + ext) for g in groups]
    for path, group in zip(paths, groups):
        what = note if align_ms is not None else f"{note}; stream {group[0].id}" + (f", {group[0].rate_hz:g} Hz" if group[0].rate_hz else "")
        if fmt == "csv":
            with open(path, "w", newline="") as f:
                write_csv(f, group, what + "; time_unix is Unix seconds (UTC)")
        else:
            write_parquet(path, group, what)
    return paths


# --------------------------------------------------------------------------- foxglove


def foxglove_schema(stream_id: str, channels: Iterable[Channel]) -> dict:
    props: dict = {
        "timestamp": {"type": "object", "title": "time", "properties": {
            "sec": {"type": "integer", "minimum": 0}, "nsec": {"type": "integer", "minimum": 0, "maximum": 999_999_999}},
            "required": ["sec", "nsec"]},
    }
    for c in channels:
        props[c.name] = {"type": ["number", "null"], **({"description": f"unit: {c.unit}"} if c.unit else {})}
    return {"$schema": "http://json-schema.org/draft-07/schema#", "title": stream_id, "type": "object",
            "properties": props, "required": list(props)}


def write_foxglove(rec: Recording, out: Path, patterns: list[str] | None, start: float | None, end: float | None) -> Path:
    from mcap.writer import CompressionType, Writer

    from .format import to_ns

    tables = tables_of(rec, patterns, start, end)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        w = Writer(f, compression=CompressionType.ZSTD)
        w.start(profile="", library="sensorstream export")
        for tb in tables:
            schema = foxglove_schema(tb.id, tb.channels)
            sid = w.register_schema(name=tb.id, encoding="jsonschema", data=json.dumps(schema).encode())
            cid = w.register_channel(topic=tb.id, message_encoding="json", schema_id=sid,
                                     metadata={"units": json.dumps([c.unit for c in tb.channels])})
            names = [c.name for c in tb.channels]
            for i, (t, vals) in enumerate(zip(tb.t.tolist(), tb.v.T.tolist())):
                ns = to_ns(t)
                msg = {"timestamp": {"sec": ns // 1_000_000_000, "nsec": ns % 1_000_000_000}}
                msg.update({n: (None if x != x or x in (math.inf, -math.inf) else x) for n, x in zip(names, vals)})
                w.add_message(cid, log_time=ns, data=json.dumps(msg, separators=(",", ":")).encode(), publish_time=ns, sequence=i & 0xFFFFFFFF)
        w.finish()
    return out
