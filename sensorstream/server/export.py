"""`GET /export?stream=<id>&from=<unix s>&to=<unix s>&format=csv|npz`: a range of
a stream's history, at full rate, as a file.

The history the hub holds for live clients (`--history-s`, capped in bytes per
stream) is what can be exported; the files are written by the same code as
`sensorstream export` (recording/export.py), so both give the same table. The
table is built in a worker thread (a minute of a wide stream is a few hundred
thousand rows) and at most two at once, so an export costs neither the live
path nor unbounded memory.
"""

from __future__ import annotations

import io
import math
import time
import urllib.parse

import numpy as np
import trio

from .. import protocol
from ..hub import Hub
from ..recording.export import Table, safe_name, write_csv, write_npz

EXPORTS_AT_ONCE = trio.CapacityLimiter(2)


class ExportRequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _time(params: dict, name: str) -> float | None:
    v = params.get(name, [""])[-1]
    if v == "":
        return None
    try:
        t = float(v)
    except ValueError:
        raise ExportRequestError(400, f"'{name}' must be Unix seconds, e.g. {time.time():.3f}") from None
    if not math.isfinite(t):
        raise ExportRequestError(400, f"'{name}' must be a finite number")
    return t


def parse(query: str, hub: Hub):
    """(stream info, frames, start, end, format) for a request, or ExportRequestError."""
    try:
        params = urllib.parse.parse_qs(query, max_num_fields=16, strict_parsing=False)
    except ValueError:
        raise ExportRequestError(400, "too many query fields") from None
    sid = params.get("stream", [""])[-1]
    if not sid:
        raise ExportRequestError(400, "name a stream: /export?stream=<id>&from=<unix s>&to=<unix s>&format=csv|npz")
    fmt = params.get("format", ["csv"])[-1]
    if fmt not in ("csv", "npz"):
        raise ExportRequestError(400, "format must be csv or npz")
    start, end = _time(params, "from"), _time(params, "to")
    info = next((i for i in hub.catalog() if i.id == sid), None)
    if info is None:
        raise ExportRequestError(404, f"no stream {sid[:200]!r}")
    try:
        frames = hub.history_frames(info.key)
    except NotImplementedError:
        raise ExportRequestError(501, "this hub keeps no history to export") from None
    return info, frames, start, end, fmt


def build(info: protocol.StreamInfo, frames: list, start: float | None, end: float | None, fmt: str) -> tuple[bytes, str, str]:
    """(body, content type, file name). Runs in a worker thread: touches only its arguments."""
    ts, vs = [], []
    for f in frames:
        b = protocol.decode_batch(f.payload)
        t, v = b.timestamps, b.values
        if not len(t) or (start is not None and t[-1] < start) or (end is not None and t[0] > end):
            continue
        keep = np.ones(len(t), bool)
        if start is not None:
            keep &= t >= start
        if end is not None:
            keep &= t <= end
        ts.append(t[keep])
        vs.append(v[:, keep])
    c = len(info.channels)
    t = np.concatenate(ts) if ts else np.empty(0)
    v = np.concatenate(vs, axis=1) if vs else np.empty((c, 0), np.float32)
    table = Table(info.id, info.channels, t, v, info.rate_hz)
    name = f"sensorstream-{safe_name(info.id)}-{int(start if start is not None else (t[0] if len(t) else 0))}"
    note = f"sensorstream /export of stream {info.id}" + (f", {info.rate_hz:g} Hz" if info.rate_hz else "")
    if fmt == "npz":
        buf = io.BytesIO()
        write_npz(buf, [table], False, note)
        return buf.getvalue(), "application/octet-stream", name + ".npz"
    text = io.StringIO()
    write_csv(text, [table], note + "; time_unix is Unix seconds (UTC)")
    return text.getvalue().encode("utf-8"), "text/csv; charset=utf-8", name + ".csv"


async def respond(hub: Hub, query: str) -> tuple[int, bytes, str, list[tuple[bytes, bytes]]]:
    """(status, body, content type, extra headers) for one /export request."""
    try:
        info, frames, start, end, fmt = parse(query, hub)
    except ExportRequestError as e:
        return e.status, (e.message + "\n").encode(), "text/plain; charset=utf-8", []
    async with EXPORTS_AT_ONCE:
        body, ctype, name = await trio.to_thread.run_sync(build, info, frames, start, end, fmt)
    return 200, body, ctype, [(b"content-disposition", f'attachment; filename="{name}"'.encode())]
