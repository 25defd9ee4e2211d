"""One stream's batches, out of decompressed MCAP chunks, into two arrays (pure: bytes in, numpy out).

A recorded stream is usually a long run of batches of the same size, one MCAP
message each, back to back in chunks that hold nothing else (the recorder gives
every stream chunks of its own). Such a run is a strided array over the chunk's
bytes: `chunk_runs` finds the runs (it reads the first message of a run with
`protocol.decode_batch`, which validates it, then checks every other header of
the run at once with one numpy view), and `assemble` copies each run into
preallocated output arrays with two numpy assignments (`copy_runs`). So a read
costs one copy of the samples and a few Python steps per chunk, not per batch;
messages that do not line up (other channels, a batch of another size, a cut
record) fall back to runs of one batch each. `planned_samples` says how many
samples a chunk holds from its message index alone, so that the output can be
allocated before any chunk is decompressed.
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

# One entry of an MCAP message index record: a message's log time and its offset in the uncompressed chunk.
_INDEX_ENTRY = np.dtype([("log", "<u8"), ("off", "<u8")])

_MESSAGE = int(Opcode.MESSAGE)
_MESSAGE_INDEX = int(Opcode.MESSAGE_INDEX)

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
    # (np.isin costs more than everything else here together: one id is the usual case.)
    one_id = next(iter(ids)) if len(ids) == 1 else None
    ids_arr = np.fromiter(ids, np.uint16, len(ids)) if one_id is None else None
    buf = memoryview(buf)
    size = len(buf)
    runs: list[Run] = []
    pos = 0
    message = _MESSAGE
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
                    & (h["n"] == n) & (h["cid"] == one_id if one_id is not None else np.isin(h["cid"], ids_arr)))
            if start_ns >= 0:
                same &= h["log"] >= start_ns
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


def planned_samples(index: bytes | memoryview, ids: set[int], c: int, usize: int, start_ns: float) -> int | None:
    """How many samples the batches of channels `ids` (with `c` channels each)
    whose last timestamp is at or after `start_ns` hold in one chunk, from the
    chunk's MCAP message index records alone, without decompressing it.

    A message's record length is the distance to the next message of any
    channel (the last one ends the chunk's `usize` uncompressed bytes), and a
    batch of `n` samples has a known length, so the index gives each batch's
    size. None: the index cannot tell (missing, malformed, or a length that is
    not a whole batch). The answer is a prediction: the caller checks it
    against the decompressed chunk (`chunk_runs`) before relying on it."""
    buf = memoryview(index)
    size = len(buf)
    every: list[np.ndarray] = []
    mine: list[np.ndarray] = []
    pos = 0
    while pos + _REC_HEAD <= size:
        op = buf[pos]
        length = int.from_bytes(buf[pos + 1: pos + 9], "little")
        nxt = pos + _REC_HEAD + length
        if nxt > size or op != _MESSAGE_INDEX or length < 6:
            return None
        cid = int.from_bytes(buf[pos + 9: pos + 11], "little")
        entries = int.from_bytes(buf[pos + 11: pos + 15], "little")
        if 6 + entries > length or entries % _INDEX_ENTRY.itemsize:
            return None
        e = np.frombuffer(buf, _INDEX_ENTRY, entries // _INDEX_ENTRY.itemsize, pos + 15)
        every.append(e["off"])
        if cid in ids:
            mine.append(e)
        pos = nxt
    if not every:
        return None
    if not mine:
        return 0
    if len(every) == 1:  # (the usual chunk: one stream, its messages in the order written)
        offsets = every[0].astype(np.int64)
        m = mine[0]
        in_order = len(offsets) < 2 or bool((offsets[1:] > offsets[:-1]).all())
        if not in_order:
            offsets = np.sort(offsets)
    else:
        offsets = np.sort(np.concatenate(every)).astype(np.int64)
        m = np.concatenate(mine)
        in_order = False
    if not len(offsets) or offsets[-1] >= usize:
        return None
    # Each record's length: up to the next one, the last one up to the chunk's end.
    lengths = np.empty_like(offsets)
    lengths[:-1] = offsets[1:] - offsets[:-1]
    lengths[-1] = usize - offsets[-1]
    if not in_order:
        lengths = lengths[np.searchsorted(offsets, m["off"].astype(np.int64))]
    if start_ns >= 0:
        lengths = lengths[m["log"] >= start_ns]
    payload = lengths - (_PAYLOAD + _FRAME_HEAD)
    per_sample = 8 + 4 * c
    if (payload < 0).any() or (payload % per_sample).any():
        return None
    return int(payload.sum()) // per_sample


def allocate(total: int, c: int) -> tuple[np.ndarray, np.ndarray]:
    """The output arrays of a read: float64[total] and float32[c, total]."""
    return np.empty(total, _F64), np.empty((c, total), _F32)


def copy_runs(runs: Sequence[Run], t: np.ndarray, v: np.ndarray, at: int) -> int:
    """Copy the runs, in order, into `t` and `v` (from `allocate`) from sample `at` on; the samples copied."""
    c, row = v.shape[0], v.strides[0]
    off = at
    for r in runs:
        m, n = r.m, r.n
        t[off: off + m * n].reshape(m, n)[...] = np.ndarray((m, n), _F64, r.buf, r.at, (r.stride, 8))
        src = np.ndarray((m, c, n), _F32, r.buf, r.at + 8 * n, (r.stride, 4 * n, 4))
        np.ndarray((c, m, n), _F32, v, 4 * off, (row, 4 * n, 4))[...] = src.transpose(1, 0, 2)
        off += m * n
    return off - at


def assemble(runs: Sequence[Run], c: int, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """float64[N] timestamps and float32[c, N] values of the runs, in order.

    One allocation each, then one copy per run; with threads > 1 the runs are
    split between threads (numpy copies without holding the GIL)."""
    total = sum(r.samples for r in runs)
    t, v = allocate(total, c)
    if not total:
        return t, v
    offsets = np.cumsum([0] + [r.samples for r in runs])
    parts = max(1, min(threads, len(runs)))
    if parts == 1:
        copy_runs(runs, t, v, 0)
        return t, v
    # Split where the samples split evenly (runs are never cut).
    cuts = [0] + [min(len(runs), int(np.searchsorted(offsets, total * k / parts))) for k in range(1, parts)] + [len(runs)]
    pairs = [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]
    with ThreadPoolExecutor(len(pairs)) as pool:
        done = [pool.submit(copy_runs, runs[a:b], t, v, int(offsets[a])) for a, b in pairs]
        for f in done:
            f.result()
    return t, v
