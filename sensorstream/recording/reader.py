"""Reading recordings into numpy: `recording.open(path)`.

    with recording.open("run.mcap") as rec:
        for s in rec.streams:                    # s.id, s.channels, s.rate_hz
            t, v = s.read(start=None, end=None)  # float64[N] Unix seconds, float32[C, N]

A finished file is read through its summary: the chunk indexes say which
chunks hold a stream and over which times, so reading one stream (or a time
range) reads only those chunks. A file without a summary (the process was
killed, the disk filled up, the copy was cut short) is scanned once, record by
record, and every complete chunk is used; whatever follows the last complete
chunk is ignored. Nothing here writes.

Each message is one wire-format batch: it decodes with `np.frombuffer`, with no
Python work per sample. `read()` goes further (columns.py): the chunks' message
indexes (stored uncompressed after each chunk) give every batch's size, so the
result arrays are allocated first; then a thread pool reads, decompresses and
copies one chunk at a time per thread straight into its place, each chunk's
batches found as runs (strided views). No Python work per batch, and no memory
beyond the result but a chunk or two per thread.
"""

from __future__ import annotations

import builtins
import fnmatch
import heapq
import itertools
import io
import os
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import zstandard
from mcap.data_stream import ReadDataStream
from mcap.exceptions import McapError
from mcap.opcode import Opcode
from mcap.reader import make_reader
from mcap.records import Channel as McapChannel, Metadata

from .. import protocol
from ..protocol import Batch, Channel, StreamInfo
from .columns import LayoutError, Run, allocate, assemble, chunk_runs, copy_runs, planned_samples
from .format import DROPS_METADATA, MESSAGE_ENCODING, info_from_metadata

MAGIC = b"\x89MCAP0\r\n"
_REC = struct.Struct("<BQ")  # opcode, record length
_CHUNK_HEAD = struct.Struct("<QQQI")  # message start/end time, uncompressed size, crc
_MSG_HEAD = struct.Struct("<HIQQ")  # channel id, sequence, log time, publish time
_MSG_HEAD_SIZE = _MSG_HEAD.size  # 22


PREFETCH_BYTES = 32 << 20  # how far ahead of the reading threads a read asks the disk for chunks


class _Unplanned(Exception):
    """A chunk held another number of samples than its message index said."""


class RecordingError(Exception):
    """A file that is not a recording this reader understands (the message says why)."""


@dataclass
class ChunkInfo:
    offset: int  # of the chunk record (its opcode byte)
    length: int  # of the whole record
    start_ns: int
    end_ns: int
    channel_ids: set[int] | None = None  # None: not known without decompressing
    compression: str | None = None  # None: not known without reading the chunk's header
    usize: int | None = None  # uncompressed size of its records
    # Where the chunk's message index records are (0 bytes: none known, or maybe
    # incomplete, as after the last chunk of a file cut short).
    index_at: int = 0
    index_length: int = 0


@dataclass
class RecordedStream:
    """One stream of a recording (one layout of it: a stream whose channels
    changed mid-recording appears once per layout, under the same id)."""

    info: StreamInfo
    channel_ids: list[int]
    _rec: "Recording" = field(repr=False)

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def channels(self) -> tuple[Channel, ...]:
        return self.info.channels

    @property
    def rate_hz(self) -> float | None:
        return self.info.rate_hz

    @property
    def device(self) -> str:
        return self.info.device

    def batches(self, start: float | None = None, end: float | None = None) -> Iterator[Batch]:
        """The recorded batches that have samples in [start, end] (whole, in file order)."""
        ids = set(self.channel_ids)
        for _, batch in self._rec._messages(ids, start, end):
            yield batch

    def read(self, start: float | None = None, end: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Samples with start <= t <= end (None: unbounded): float64[N] Unix seconds, float32[C, N]."""
        return self._rec._read(set(self.channel_ids), len(self.channels), start, end)


class Recording:
    """An open recording. Use as a context manager, or call close()."""

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None):
        self.path = Path(path)
        # Threads that read and decompress chunks for `RecordedStream.read` (None: one per usable core, at most 4).
        self.threads = max(1, threads) if threads is not None else min(4, _usable_cores())
        try:
            self._f = builtins.open(self.path, "rb")
        except OSError as e:
            raise RecordingError(f"cannot open {self.path}: {e.strerror}") from None
        self.size = os.fstat(self._f.fileno()).st_size
        self._local = threading.local()  # a zstd decompressor per thread (one must not be shared)
        self.channels: dict[int, McapChannel] = {}
        self.chunks: list[ChunkInfo] = []
        self.drops: dict[str, int] = {}
        self.complete = False  # True: read through a valid summary
        try:
            head = self._f.read(len(MAGIC))
            if head != MAGIC[: len(head)]:
                raise RecordingError(f"{self.path} is not an MCAP file")
            if len(head) == len(MAGIC) and not self._read_summary():
                self._scan()
        except BaseException:
            self._f.close()
            raise
        self.chunks.sort(key=lambda c: c.offset)
        self._chunk_starts = [c.offset for c in self.chunks]
        self.streams: list[RecordedStream] = self._group_streams()

    # ------------------------------------------------------------------ public

    def __enter__(self) -> "Recording":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._f.close()

    def stream(self, id: str) -> RecordedStream:
        """The (last layout of the) stream with this id; KeyError if there is none."""
        for s in reversed(self.streams):
            if s.id == id:
                return s
        raise KeyError(f"no stream {id!r} in {self.path} (it has {', '.join(sorted({s.id for s in self.streams})) or 'none'})")

    def select(self, patterns: list[str] | None) -> list[RecordedStream]:
        """Streams whose id matches any of the globs (all of them for None)."""
        if not patterns:
            return list(self.streams)
        return [s for s in self.streams if any(fnmatch.fnmatchcase(s.id, p) for p in patterns)]

    @property
    def start(self) -> float | None:
        """Time of the earliest batch end (Unix s), None when empty."""
        return min(c.start_ns for c in self.chunks) / 1e9 if self.chunks else None

    @property
    def end(self) -> float | None:
        return max(c.end_ns for c in self.chunks) / 1e9 if self.chunks else None

    def messages(self, start: float | None = None) -> Iterator[tuple[RecordedStream, Batch]]:
        """Every batch of every stream in time order (by each batch's last timestamp;
        batches of equal time in the order they were recorded), from `start` on.

        Each chunk holds one stream, so this merges the chunks that overlap in
        time; only those are decompressed at once."""
        by_cid = {cid: s for s in self.streams for cid in s.channel_ids}
        start_ns = -1 if start is None else start * 1e9 - 1e3  # (1 µs of slack: log times are whole ns)
        chunks = sorted((c for c in self.chunks if c.end_ns >= start_ns), key=lambda c: (c.start_ns, c.offset))
        heap: list = []
        order = itertools.count()

        def advance(it) -> None:
            for cid, _seq, log_ns, _pub, data in it:
                if log_ns >= start_ns and cid in by_cid:
                    heapq.heappush(heap, (log_ns, next(order), cid, data, it))
                    return

        i = 0
        while i < len(chunks) or heap:
            # Open every chunk that may hold something earlier than what is waiting.
            while i < len(chunks) and (not heap or chunks[i].start_ns <= heap[0][0]):
                advance(self.chunk_messages(chunks[i]))
                i += 1
            if not heap:
                continue
            _, _, cid, data, it = heapq.heappop(heap)
            yield by_cid[cid], protocol.decode_batch(data)
            advance(it)

    # ------------------------------------------------------------------ finding chunks and channels

    def _read_summary(self) -> bool:
        """Use the summary, if the file has a valid one. False: scan instead."""
        if self.size < 2 * len(MAGIC) + 29 or self._read_at(self.size - len(MAGIC), len(MAGIC)) != MAGIC:
            return False
        try:
            self._f.seek(0)
            summary = make_reader(self._f).get_summary()
        except (McapError, ValueError, struct.error, EOFError, OSError, UnicodeDecodeError):
            return False
        if summary is None:
            return False
        self.channels = dict(summary.channels)
        for ci in summary.chunk_indexes:
            self.chunks.append(ChunkInfo(ci.chunk_start_offset, ci.chunk_length, ci.message_start_time, ci.message_end_time,
                                         set(ci.message_index_offsets) or None, ci.compression, ci.uncompressed_size,
                                         min(ci.message_index_offsets.values(), default=0), ci.message_index_length))
        drops = [m for m in summary.metadata_indexes if m.name == DROPS_METADATA]
        if drops:
            self.drops = self._metadata_at(max(drops, key=lambda m: m.offset).offset)
        for c in self.chunks:
            if c.channel_ids is None:
                self._learn_chunk(c)
        self.complete = True
        return True

    def _scan(self) -> None:
        """Walk the records of a file without a summary; stop at the first incomplete one."""
        pos = len(MAGIC)
        last_chunk: ChunkInfo | None = None
        index_at = 0  # where last_chunk's message index records start (0: none seen yet, -1: all seen)
        while pos + _REC.size <= self.size:
            opcode, length = _REC.unpack(self._read_at(pos, _REC.size))
            end = pos + _REC.size + length
            if end > self.size:
                break  # cut off here
            if opcode != Opcode.MESSAGE_INDEX and last_chunk is not None and index_at > 0:
                # A complete record after a chunk's message indexes: they are all there.
                last_chunk.index_at, last_chunk.index_length = index_at, pos - index_at
                index_at = -1
            if opcode == Opcode.CHUNK:
                head = self._read_at(pos + 9, _CHUNK_HEAD.size + 4 + 16)
                start_ns, end_ns, usize, _crc = _CHUNK_HEAD.unpack_from(head)
                (clen,) = struct.unpack_from("<I", head, _CHUNK_HEAD.size)
                name = head[_CHUNK_HEAD.size + 4: _CHUNK_HEAD.size + 4 + clen]
                last_chunk = ChunkInfo(pos, end - pos, start_ns, end_ns,
                                       compression=name.decode(errors="replace") if clen == len(name) else None,
                                       usize=usize)
                index_at = 0
                self.chunks.append(last_chunk)
            elif opcode == Opcode.MESSAGE_INDEX and last_chunk is not None:
                (cid,) = struct.unpack("<H", self._read_at(pos + 9, 2))
                if last_chunk.channel_ids is None:
                    last_chunk.channel_ids = set()
                last_chunk.channel_ids.add(cid)
                if index_at == 0:
                    index_at = pos
            elif opcode == Opcode.CHANNEL:
                ch = McapChannel.read(ReadDataStream(io.BytesIO(self._read_at(pos + 9, length))))
                self.channels[ch.id] = ch
            elif opcode == Opcode.METADATA:
                meta = Metadata.read(ReadDataStream(io.BytesIO(self._read_at(pos + 9, length))))
                if meta.name == DROPS_METADATA:
                    self.drops = _counts(meta.metadata)
            elif opcode in (Opcode.DATA_END, Opcode.FOOTER):
                break
            else:
                last_chunk = last_chunk if opcode == Opcode.MESSAGE_INDEX else None
            pos = end
        # Channel records live inside chunks: read the chunks that introduce a
        # channel (or whose message indexes were cut off).
        for c in self.chunks:
            if c.channel_ids is None or not c.channel_ids <= self.channels.keys():
                self._learn_chunk(c)

    def _learn_chunk(self, chunk: ChunkInfo) -> None:
        """Decompress one chunk for its channel records and the channels of its messages."""
        ids: set[int] = set()
        buf = self._decompress(chunk)
        pos, n = 0, len(buf)
        while pos + 9 <= n:
            opcode, length = _REC.unpack_from(buf, pos)
            if pos + 9 + length > n:
                break
            if opcode == Opcode.MESSAGE:
                ids.add(struct.unpack_from("<H", buf, pos + 9)[0])
            elif opcode == Opcode.CHANNEL:
                ch = McapChannel.read(ReadDataStream(io.BytesIO(bytes(buf[pos + 9: pos + 9 + length]))))
                self.channels.setdefault(ch.id, ch)
            pos += 9 + length
        chunk.channel_ids = ids

    def _group_streams(self) -> list[RecordedStream]:
        groups: dict[tuple, RecordedStream] = {}
        for cid in sorted(self.channels):
            ch = self.channels[cid]
            if ch.message_encoding != MESSAGE_ENCODING:
                continue  # not ours (a foxglove export, or another tool's channel)
            info = info_from_metadata(ch.topic, ch.metadata)
            layout = (info.id, info.channels, info.rate_hz, info.device)
            if layout in groups:
                groups[layout].channel_ids.append(cid)
            else:
                groups[layout] = RecordedStream(info, [cid], self)
        return list(groups.values())

    # ------------------------------------------------------------------ reading chunks

    def _read_at(self, offset: int, n: int) -> bytes:
        return os.pread(self._f.fileno(), n, offset)

    def _metadata_at(self, offset: int) -> dict[str, int]:
        opcode, length = _REC.unpack(self._read_at(offset, 9))
        if opcode != Opcode.METADATA:
            return {}
        return _counts(Metadata.read(ReadDataStream(io.BytesIO(self._read_at(offset + 9, length)))).metadata)

    def _decompress(self, chunk: ChunkInfo, reuse: bool = False) -> memoryview:
        """The chunk's records, uncompressed.

        reuse=True: in buffers of the calling thread, valid until its next call
        (no fresh memory per chunk). Otherwise a buffer of the chunk's own:
        numpy asks the kernel for huge pages for big arrays, so keeping many
        faults in far fewer fresh pages."""
        local = self._local
        # (The compressed bytes go through one buffer per thread. Kept, an
        # uncompressed chunk is read straight into the buffer it is used from;
        # a small one, or one of unknown compression, goes through the thread's.)
        via_buffer = reuse or chunk.compression != "" or chunk.length < 4096
        if via_buffer:
            if getattr(local, "buf", None) is None or len(local.buf) < chunk.length:
                local.buf = np.empty(max(chunk.length, 1 << 20), np.uint8)
            raw = memoryview(local.buf)[: chunk.length]
        else:
            raw = memoryview(np.empty(chunk.length, np.uint8))
        if os.preadv(self._f.fileno(), [raw], chunk.offset) != chunk.length:
            raise RecordingError(f"{self.path} changed while being read (chunk at {chunk.offset} is cut short)")
        _start, _end, usize, _crc = _CHUNK_HEAD.unpack_from(raw, 9)
        p = 9 + _CHUNK_HEAD.size
        (clen,) = struct.unpack_from("<I", raw, p)
        compression = bytes(raw[p + 4: p + 4 + clen]).decode()
        p += 4 + clen
        (dlen,) = struct.unpack_from("<Q", raw, p)
        data = raw[p + 8: p + 8 + dlen]
        if compression == "":
            return data if reuse or not via_buffer else memoryview(bytes(data))
        if compression == "zstd":
            dctx = getattr(local, "dctx", None)
            if dctx is None:
                dctx = local.dctx = zstandard.ZstdDecompressor()
            if reuse:
                if getattr(local, "out", None) is None or len(local.out) < usize:
                    local.out = np.empty(max(usize, 1 << 20), np.uint8)
                out = memoryview(local.out)[:usize]
            else:
                out = memoryview(np.empty(usize, np.uint8))
            with dctx.stream_reader(data) as reader:
                got = 0
                while got < usize:
                    k = reader.readinto(out[got:])
                    if not k:
                        break
                    got += k
            if got != usize:
                raise RecordingError(f"{self.path}: chunk at {chunk.offset} holds {got} bytes, its header says {usize}")
            return out
        if compression == "lz4":
            try:
                import lz4.frame
            except ImportError:
                raise RecordingError(f"{self.path} uses lz4 chunks: pip install lz4") from None
            return memoryview(lz4.frame.decompress(data))
        raise RecordingError(f"{self.path}: unknown chunk compression {compression!r}")

    def chunk_messages(self, chunk: ChunkInfo, ids: set[int] | None = None) -> Iterator[tuple[int, int, int, int, memoryview]]:
        """(channel id, sequence, log time ns, publish time ns, payload) of each message in a chunk, in order."""
        return _records(self._decompress(chunk), ids)

    def _read(self, ids: set[int], c: int, start: float | None, end: float | None) -> tuple[np.ndarray, np.ndarray]:
        start_ns = -1.0 if start is None else start * 1e9 - 1e3
        chunks = self._select(ids, start_ns, end)
        try:
            t, v = self._read_planned(chunks, ids, c, start_ns, end)
        except _Unplanned:
            t, v = self._read_buffered(chunks, ids, c, start_ns, end)
        if (start is not None and len(t) and t.min() < start) or (end is not None and len(t) and t.max() > end):
            keep = np.ones(len(t), bool)
            if start is not None:
                keep &= t >= start
            if end is not None:
                keep &= t <= end
            t, v = t[keep], v.compress(keep, axis=1)  # (v[:, keep] would come out in Fortran order)
        return t, v

    def _runs_of(self, chunk: ChunkInfo, ids: set[int], c: int, start_ns: float, end: float | None,
                 reuse: bool = False) -> tuple[list[Run], bool]:
        try:
            return chunk_runs(self._decompress(chunk, reuse), ids, c, start_ns, end)
        except LayoutError as e:
            raise RecordingError(f"{self.path}: {e} (chunk at {chunk.offset})") from None

    def _read_planned(self, chunks: list[ChunkInfo], ids: set[int], c: int, start_ns: float,
                      end: float | None) -> tuple[np.ndarray, np.ndarray]:
        # Each chunk's message indexes (small, stored uncompressed after it) say how
        # many samples it holds, so the output arrays are allocated first and each
        # thread reads, decompresses and copies one chunk at a time into its place,
        # through buffers of its own: the disk, decompression and the copy overlap,
        # and memory beyond the result stays at a chunk or two per thread. Chunks
        # whose index cannot say (a file cut short, a batch that may end past `end`)
        # are decompressed here first, as _read_buffered does. A count the index got
        # wrong raises _Unplanned, and the read starts again the other way.
        end_ns = None if end is None else end * 1e9 - 1e3
        indexed = [chunk.index_length > 0 and chunk.usize is not None and (end_ns is None or chunk.end_ns < end_ns)
                   for chunk in chunks]
        # The indexes are small reads all over the file: ask for them all at once
        # first, so that a cold read waits for the disk once, not once per chunk.
        self._prefetch((chunk.index_at, chunk.index_length) for chunk, yes in zip(chunks, indexed) if yes)
        plan: list[tuple[ChunkInfo, int | list[Run], int]] = []  # (chunk, its sample count or its runs, where they go)
        total = 0
        for chunk, yes in zip(chunks, indexed):
            planned = None
            if yes:
                planned = planned_samples(self._read_at(chunk.index_at, chunk.index_length), ids, c, chunk.usize, start_ns)
            if planned is not None:
                plan.append((chunk, planned, total))
                total += planned
                continue
            runs, stop = self._runs_of(chunk, ids, c, start_ns, end)
            plan.append((chunk, runs, total))
            total += sum(r.samples for r in runs)
            if stop:
                break  # (a later chunk of a sequential read is never decompressed)
        t, v = allocate(total, c)
        # Chunks are asked of the disk a little ahead of the threads that use them.
        mean_length = sum(chunk.length for chunk, _, _ in plan) / len(plan) if plan else 1
        ahead = max(1, int(PREFETCH_BYTES / max(1.0, mean_length)))
        self._prefetch((chunk.offset, chunk.length) for chunk, _, _ in plan[:ahead])

        def fill(i: int) -> None:
            chunk, what, at = plan[i]
            if i + ahead < len(plan):
                nxt = plan[i + ahead][0]
                self._prefetch([(nxt.offset, nxt.length)])
            if isinstance(what, list):
                copy_runs(what, t, v, at)
                return
            runs, _ = self._runs_of(chunk, ids, c, start_ns, None, reuse=True)
            if sum(r.samples for r in runs) != what:
                raise _Unplanned
            copy_runs(runs, t, v, at)

        for _ in self._map(fill, range(len(plan))):
            pass
        return t, v

    def _map(self, fn, items):
        """fn over items, in order: in a pool of up to `self.threads` threads (every
        item done before this returns), or lazily in this thread (the caller may stop early)."""
        threads = min(self.threads, len(items))
        if threads <= 1:
            return map(fn, items)
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(fn, items))

    def _prefetch(self, ranges) -> None:
        """Ask the kernel to start reading these (offset, length) ranges: a hint, which
        does not wait for the data and whose errors are ignored."""
        if not hasattr(os, "posix_fadvise"):  # (not on macOS)
            return
        fd = self._f.fileno()
        for offset, length in ranges:
            try:
                os.posix_fadvise(fd, offset, length, os.POSIX_FADV_WILLNEED)
            except OSError:
                return

    def _read_buffered(self, chunks: list[ChunkInfo], ids: set[int], c: int, start_ns: float,
                       end: float | None) -> tuple[np.ndarray, np.ndarray]:
        # Every chunk is decompressed into a buffer of its own (a pool of threads
        # reads and decompresses them: pread, zstd and lz4 let go of the GIL), then
        # the samples are copied once into arrays of their final size (columns.py).
        def runs_of(chunk: ChunkInfo) -> tuple[list[Run], bool]:
            return self._runs_of(chunk, ids, c, start_ns, end)

        runs: list[Run] = []
        for found, stop in self._map(runs_of, chunks):
            runs += found
            if stop:
                break  # (a later chunk of a sequential read is never decompressed)
        return assemble(runs, c, self.threads)

    def _select(self, ids: set[int], start_ns: float, end: float | None) -> list[ChunkInfo]:
        """The chunks that may hold batches of these channels with samples in the range.

        log_time is a batch's *last* timestamp: a batch that starts inside
        [start, end] may end after `end`, so one more chunk of the stream is
        read past the range, and batches are checked by their first sample."""
        end_ns = None if end is None else end * 1e9
        past_end = False
        selected = []
        for chunk in self.chunks:
            if chunk.channel_ids is not None and not (chunk.channel_ids & ids):
                continue
            if chunk.end_ns < start_ns:
                continue
            if end_ns is not None and chunk.start_ns > end_ns:
                if past_end:
                    break
                past_end = True
            selected.append(chunk)
        return selected

    def _messages(self, ids: set[int], start: float | None, end: float | None) -> Iterator[tuple[int, Batch]]:
        # (1 µs of slack: log times are rounded to whole ns.)
        start_ns = -1 if start is None else start * 1e9 - 1e3
        selected = self._select(ids, start_ns, end)
        for chunk in selected:
            for cid, _seq, log_ns, _pub, data in self.chunk_messages(chunk, ids):
                if log_ns < start_ns:
                    continue
                batch = protocol.decode_batch(data)
                if not len(batch.timestamps):
                    continue
                if end is not None and batch.timestamps[0] > end:
                    return
                yield cid, batch


def _records(buf: memoryview, ids: set[int] | None) -> Iterator[tuple[int, int, int, int, memoryview]]:
    """The messages of a decompressed chunk: (channel id, sequence, log ns, publish ns, payload)."""
    pos, n = 0, len(buf)
    unpack_rec, unpack_msg = _REC.unpack_from, _MSG_HEAD.unpack_from
    while pos + 9 <= n:
        opcode, length = unpack_rec(buf, pos)
        body = pos + 9
        pos = body + length
        if opcode != Opcode.MESSAGE or pos > n:
            continue
        cid, seq, log_ns, pub_ns = unpack_msg(buf, body)
        if ids is None or cid in ids:
            yield cid, seq, log_ns, pub_ns, buf[body + _MSG_HEAD_SIZE: pos]


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):  # (not on macOS)
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _counts(meta: dict[str, str]) -> dict[str, int]:
    out = {}
    for k, v in meta.items():
        try:
            out[k] = int(v)
        except ValueError:
            pass
    return out


def open(path: str | os.PathLike, *, threads: int | None = None) -> Recording:  # noqa: A001 (the documented API name)
    """Open a recording (finished, or cut short by a crash) for reading.

    `threads`: how many threads `read()` uses to read, decompress and copy
    (default: one per usable core, at most 4; 1 reads in the calling thread)."""
    return Recording(path, threads=threads)
