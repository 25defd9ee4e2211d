"""One stream's batches, out of decompressed MCAP chunks, into two arrays (pure: bytes in, numpy out).

A recorded stream is usually a long run of batches of the same size, one MCAP
message each, back to back in chunks that hold nothing else (the recorder gives
every stream chunks of its own). Such a run is a strided array over the chunk's
bytes: `chunk_runs` finds the runs (it reads the first message of a run with
`protocol.decode_batch`, which validates it, then checks every other header of
the run at once with one numpy view), and `assemble` copies each run into
preallocated output arrays with two numpy assignments. So a read costs one copy
of the samples and a few Python steps per chunk, not per batch; messages that do
not line up (other channels, a batch of another size, a cut record) fall back
to runs of one batch each.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from mcap.opcode import Opcode

from .. import protocol

_REC_HEAD = 9  # opcode u8 + record length u64
_MSG_HEAD = 22  # channel id u16, sequence u32, log time u64, publish time u64
_PAYLOAD = _REC_HEAD + _MSG_HEAD  # where a message's data (our batch frame) starts in its record
_FRAME_HEAD = protocol.HEADER_SIZE

# The headers of one message record holding a batch, up to the batch's sample count
# (record, MCAP message, then protocol.HEADER: kind, flags, channels, key, samples).
_HEADS = np.dtype([("op", "u1"), ("len", "<u8"), ("cid", "<u2"), ("seq", "<u4"), ("log", "<u8"), ("pub", "<u8"),
                   ("kind", "u1"), ("flags", "u1"), ("c", "<u2"), ("key", "<u4"), ("n", "<u4")])
assert _HEADS.itemsize == _PAYLOAD + 12

_F64 = np.dtype("<f8")
_F32 = np.dtype("<f4")


class LayoutError(ValueError):
    """A batch whose channel count is not its stream's."""


@dataclass(frozen=True, slots=True)
class Run:
    """`m` batches of `n` samples each, `stride` bytes apart in `buf`; `at` is
    where the first batch's timestamps start."""

    buf: memoryview | bytes
    at: int
    stride: int
    m: int
    n: int

    @property
    def samples(self) -> int:
        return self.m * self.n


def chunk_runs(buf: memoryview, ids: set[int], c: int, start_ns: float, end: float | None) -> tuple[list[Run], bool]:
    """The runs of batches of channels `ids` (with `c` channels each) in one
    decompressed chunk, in order; and True if a batch starting after `end` was met
    (the caller stops there, as a sequential read would).

    Batches whose last timestamp (the MCAP log time) is before `start_ns` and
    empty batches are skipped. A malformed batch raises protocol.FrameError; a
    batch with another channel count raises LayoutError."""
    ids_arr = np.fromiter(ids, np.uint16, len(ids))
    buf = memoryview(buf)
    size = len(buf)
    runs: list[Run] = []
    pos = 0
    message = Opcode.MESSAGE
    while pos + _REC_HEAD <= size:
        op = buf[pos]
        length = int.from_bytes(buf[pos + 1: pos + 9], "little")
        nxt = pos + _REC_HEAD + length
        if nxt > size:
            break
        if op != message or length < _MSG_HEAD:
            pos = nxt
            continue
        cid = int.from_bytes(buf[pos + 9: pos + 11], "little")
        log_ns = int.from_bytes(buf[pos + 15: pos + 23], "little")
        if cid not in ids or log_ns < start_ns:
            pos = nxt
            continue
        batch = protocol.decode_batch(buf[pos + _PAYLOAD: nxt])
        n = len(batch.timestamps)
        if n == 0:
            pos = nxt
            continue
        if batch.values.shape[0] != c:
            raise LayoutError(f"a batch with {batch.values.shape[0]} channels in a stream of {c}")
        stride = nxt - pos
        m = (size - pos) // stride
        if m > 1:
            h = np.ndarray((m,), _HEADS, buf, pos, (stride,))
            same = ((h["op"] == message) & (h["len"] == length) & (h["kind"] == protocol.KIND_BATCH) & (h["c"] == c)
                    & (h["n"] == n) & (h["log"] >= start_ns) & np.isin(h["cid"], ids_arr))
            m = m if same.all() else int(same.argmin())  # same[0] holds: the first batch was checked above
        at = pos + _PAYLOAD + _FRAME_HEAD
        stop = False
        if end is not None:
            late = np.flatnonzero(np.ndarray((m,), _F64, buf, at, (stride,)) > end)
            if len(late):
                m, stop = int(late[0]), True
        if m:
            runs.append(Run(buf, at, stride, m, n))
        if stop:
            return runs, True
        pos += m * stride
    return runs, False


def assemble(runs: Sequence[Run], c: int, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """float64[N] timestamps and float32[c, N] values of the runs, in order.

    One allocation each, then one copy per run; with threads > 1 the runs are
    split between threads (numpy copies without holding the GIL)."""
    total = sum(r.samples for r in runs)
    t = np.empty(total, _F64)
    v = np.empty((c, total), _F32)
    if not total:
        return t, v
    offsets = np.cumsum([0] + [r.samples for r in runs])
    row = v.strides[0]

    def copy(lo: int, hi: int) -> None:
        for r, off in zip(runs[lo:hi], offsets[lo:hi].tolist()):
            m, n = r.m, r.n
            t[off: off + m * n].reshape(m, n)[...] = np.ndarray((m, n), _F64, r.buf, r.at, (r.stride, 8))
            src = np.ndarray((m, c, n), _F32, r.buf, r.at + 8 * n, (r.stride, 4 * n, 4))
            np.ndarray((c, m, n), _F32, v, 4 * off, (row, 4 * n, 4))[...] = src.transpose(1, 0, 2)

    parts = max(1, min(threads, len(runs)))
    if parts == 1:
        copy(0, len(runs))
        return t, v
    # Split where the samples split evenly (runs are never cut).
    cuts = [0] + [min(len(runs), int(np.searchsorted(offsets, total * k / parts))) for k in range(1, parts)] + [len(runs)]
    pairs = [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]
    with ThreadPoolExecutor(len(pairs)) as pool:
        done = [pool.submit(copy, a, b) for a, b in pairs]
        for f in done:
            f.result()
    return t, v
