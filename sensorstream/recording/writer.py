"""Writing recordings: a file writer (synchronous, no trio) and the recorder that
feeds it from the hub without ever making the live path wait.

    hub.publish ─ Recorder.deliver ─> pending list (bounded in bytes; beyond: counted drops)
                                          │  every `write_interval`, in a worker thread
                                          v
                                    RecordingWriter ─> mcap.Writer ─> file (zstd chunks)

The hub calls `deliver` synchronously for every batch, exactly as it calls a
client session's; `deliver` only appends a reference to the already-encoded
payload. All file I/O happens in a worker thread, so a disk that is full, slow
or frozen costs the recording (counted drops, reported once) and nothing else.

Crash safety comes from the chunk policy: a chunk is closed, written and
flushed to the OS once it holds `chunk_age_s` of data (default 1 s) or
`chunk_bytes`, so a SIGKILL loses at most the open chunk and what waits in the
pending list; every chunk before it reads back (recording.open, or mcap's
StreamReader). The summary and indexes are written on close.

Durability against power loss comes from fdatasync, in the worker thread: at
most once per `sync_interval` (1 s) while data arrives, and when a file is
closed (rotation, shutdown); a new file's directory is synced once, so the file
itself survives too. What the OS held and had not synced is what a power loss
can take: what a crash takes, plus closed chunks not synced yet (at most
`sync_interval` + one `write_interval`: ≈ 2.4 s of data in all by default).
"""

from __future__ import annotations

import datetime as dt
import errno
import io
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable

import trio
from mcap.writer import CompressionType, Writer

from .. import __version__
from ..protocol import StreamInfo
from .format import DROPS_METADATA, INFO_METADATA, MESSAGE_ENCODING, PROFILE, channel_metadata, to_ns

log = logging.getLogger(__name__)

DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024  # uncompressed payload bytes per chunk, at most
DEFAULT_CHUNK_AGE_S = 1.0  # data in the open chunk (what a crash can lose) is younger than this
DEFAULT_QUEUE_BYTES = 64 * 1024 * 1024  # batches waiting for the disk; beyond: counted drops
DEFAULT_WRITE_INTERVAL = 0.2
DEFAULT_SYNC_INTERVAL = 1.0  # fdatasync at most this often (a power loss loses at most this much more than a crash)
#: Chunk compression: zstd (the default: smallest files), lz4 (about 2x faster to read
#: back, files about as big as the batches), none. docs/recording.md#compression has figures.
COMPRESSIONS = {"zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4, "none": CompressionType.NONE}
DEFAULT_COMPRESSION = "zstd"
OPEN_BYTES_FACTOR = 4  # open chunks of all streams together hold at most this many chunk_bytes


def _layout(info: StreamInfo) -> tuple[str, ...]:
    """What decides a batch's MCAP channel: exactly what the channel's metadata
    records. A status, error or epoch change must not start a new MCAP channel."""
    return tuple(channel_metadata(info).values())


class _Open:
    """One stream's open chunk: its batches, not yet handed to mcap."""

    __slots__ = ("info", "layout", "messages", "bytes", "opened_at")

    def __init__(self, info: StreamInfo, now: float):
        self.info = info
        self.layout = _layout(info)
        self.messages: list[tuple[int, int, bytes | memoryview, int]] = []  # (log ns, publish ns, payload, seq)
        self.bytes = 0
        self.opened_at = now


class RecordingWriter:
    """One MCAP file. Not thread-safe; not async: the recorder runs it in a worker thread.

    Each stream has its own open chunk, so every chunk in the file holds one
    stream: reading one stream (the chunk indexes name each chunk's channels)
    never decompresses another's data. A chunk closes once it holds
    `chunk_bytes` or when the caller says it is old (`flush_older_than`).

    `f` is any binary file object; `close()` writes the summary (channels,
    statistics, chunk indexes) and closes it."""

    def __init__(self, f: BinaryIO, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES, info: dict[str, str] | None = None,
                 compression: str = DEFAULT_COMPRESSION):
        self._f = f
        self.chunk_bytes = chunk_bytes
        # chunk_size is out of reach: this class decides when a chunk closes (by age
        # and size), so that every closed chunk is also flushed to the OS at once.
        self._mcap = Writer(f, chunk_size=1 << 62, compression=COMPRESSIONS[compression])
        self._mcap.start(profile=PROFILE, library=f"sensorstream/{__version__}")
        self._mcap.add_metadata(INFO_METADATA, {"sensorstream": __version__, **(info or {})})
        f.flush()
        self._channels: dict[int, tuple[tuple[str, ...], int]] = {}  # stream key -> (layout, MCAP channel id)
        self._open: dict[int, _Open] = {}  # stream key -> its open chunk
        self._open_bytes = 0
        self.closed = False
        self.syncs = 0  # fdatasync calls that succeeded
        self.unsynced = True  # bytes handed to the OS since the last sync (the header, so far)
        self._can_sync = True  # False for targets that cannot be synced (a pipe)

    def _channel(self, o: _Open) -> int:
        known = self._channels.get(o.info.key)
        if known is not None and known[0] == o.layout:
            return known[1]
        cid = self._mcap.register_channel(topic=o.info.id, message_encoding=MESSAGE_ENCODING, schema_id=0,
                                          metadata=channel_metadata(o.info))
        self._channels[o.info.key] = (o.layout, cid)
        return cid

    def write(self, info: StreamInfo, seq: int, t_last: float, payload: bytes | memoryview, received: float, now: float = 0.0) -> None:
        o = self._open.get(info.key)
        if o is not None and o.info is not info and o.layout != _layout(info):
            self._flush_stream(info.key)  # a new layout starts a new chunk
            o = None
        if o is None:
            o = self._open[info.key] = _Open(info, now)
        o.messages.append((to_ns(t_last), to_ns(received), payload, seq & 0xFFFFFFFF))
        o.bytes += len(payload)
        self._open_bytes += len(payload)
        if o.bytes >= self.chunk_bytes:
            self._flush_stream(info.key)
        elif self._open_bytes > OPEN_BYTES_FACTOR * self.chunk_bytes:
            # Many streams at once: memory for open chunks stays bounded too.
            self._flush_stream(min(self._open, key=lambda k: self._open[k].opened_at))

    def _flush_stream(self, key: int) -> None:
        o = self._open.pop(key, None)
        if o is None or not o.messages:
            return
        self._open_bytes -= o.bytes
        # The channel record goes into this stream's own chunk, ahead of its
        # messages, so a reader of a truncated file finds it where it needs it.
        cid = self._channel(o)
        add = self._mcap.add_message
        for log_ns, pub_ns, payload, seq in o.messages:
            add(cid, log_time=log_ns, data=payload, publish_time=pub_ns, sequence=seq)
        self._mcap.flush()  # finalizes the chunk, writes it and its message indexes, flushes f
        self.unsynced = True

    def flush_older_than(self, opened_before: float) -> None:
        """Close the chunks opened before this time (the caller's clock)."""
        for key in [k for k, o in self._open.items() if o.opened_at <= opened_before]:
            self._flush_stream(key)

    def flush(self) -> None:
        """Close every open chunk and hand everything to the OS."""
        for key in list(self._open):
            self._flush_stream(key)

    def note_drops(self, drops: dict[str, int]) -> None:
        """Write the running drop counts (a metadata record between chunks; the newest one counts)."""
        self.flush()
        self._mcap.add_metadata(DROPS_METADATA, {k: str(v) for k, v in drops.items()})
        self._f.flush()
        self.unsynced = True

    def sync(self) -> None:
        """fdatasync what was handed to the OS (blocking: call it from a worker thread).

        A target that cannot be synced (a pipe, an in-memory file) is left as it is."""
        if not self._can_sync:
            return
        self._f.flush()
        try:
            getattr(os, "fdatasync", os.fsync)(self._f.fileno())  # (macOS has no fdatasync)
        except OSError as e:  # (io.UnsupportedOperation is one)
            if isinstance(e, io.UnsupportedOperation) or e.errno in (errno.EINVAL, errno.EROFS, errno.ENOTSUP):
                self._can_sync = False
                return
            raise
        self.syncs += 1
        self.unsynced = False

    @property
    def size(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.flush()
            self._mcap.finish()
            self.sync()  # the summary too: a finished file is on the disk, not just in the OS
        finally:
            self._f.close()

    def abandon(self) -> None:
        """Close the file without a summary (after a write error: it may be unwritable)."""
        self.closed = True
        try:
            self._f.close()
        except OSError:
            pass


# --------------------------------------------------------------------------- the recorder


@dataclass
class RecorderConfig:
    """Where and how to record. `directory`: rotated files named by start time;
    `file`: exactly this file (no rotation)."""

    directory: Path | None = None
    file: Path | None = None
    streams: tuple[str, ...] = ("*",)
    max_bytes: int | None = None  # rotate once a file is this big
    max_age_s: float | None = None  # rotate once a file is this old
    chunk_age_s: float = DEFAULT_CHUNK_AGE_S
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    compression: str = DEFAULT_COMPRESSION  # a key of COMPRESSIONS
    queue_bytes: int = DEFAULT_QUEUE_BYTES
    write_interval: float = DEFAULT_WRITE_INTERVAL
    sync_interval: float = DEFAULT_SYNC_INTERVAL  # fdatasync at most this often while writing (and on close)
    retry_s: float = 5.0  # after a write error, try a new file this much later
    close_timeout_s: float = 5.0  # at shutdown, how long the disk may take for the last writes
    prefix: str = "sensorstream"
    source: str = "serve"  # written into the file's info metadata
    # How a file is opened (tests substitute a frozen or full target). 'xb': never overwrite.
    opener: Callable[[Path], BinaryIO] = field(default=lambda p: open(p, "xb"))


@dataclass
class RecorderStats:
    batches: int = 0  # written
    samples: int = 0
    bytes: int = 0  # payload bytes written
    dropped: int = 0  # batches not recorded (queue full or disk failing)
    errors: int = 0  # write/open failures (each reported once per episode in the log)
    syncs: int = 0  # fdatasync calls (of files and, once per new file, of its directory)
    files: list[str] = field(default_factory=list)
    failing: str | None = None  # the current error, while it lasts

    def to_json(self) -> dict:
        return {"batches": self.batches, "samples": self.samples, "bytes": self.bytes, "dropped": self.dropped,
                "errors": self.errors, "syncs": self.syncs, "file": self.files[-1] if self.files else None,
                **({"failing": self.failing} if self.failing else {})}


def check_directory(path: Path) -> None:
    """Raise OSError now if recordings cannot be created in `path` (for a clear start-up error)."""
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f".sensorstream-probe-{os.getpid()}"
    with open(probe, "wb"):
        pass
    probe.unlink()


# One pending batch: (stream info, seq, t_last, n samples, payload, wall time received).
_Item = tuple[StreamInfo, int, float, int, "bytes | memoryview", float]


class Recorder:
    """Records batches into MCAP files; a hub subscriber when given a hub.

    `deliver` (hub side) and `put` (anything else, e.g. `sensorstream record`)
    return at once. `run` owns the writing: start it in a nursery; cancelling it
    closes the file with its summary (bounded in time, even with a frozen disk)."""

    def __init__(self, cfg: RecorderConfig, hub=None):
        if (cfg.directory is None) == (cfg.file is None):
            raise ValueError("give exactly one of directory and file")
        self.cfg = cfg
        self.hub = hub
        self.stats = RecorderStats()
        self.drops: dict[str, int] = {}  # stream id -> batches dropped
        self._infos: dict[int, StreamInfo] = {}
        self._pending: list[_Item] = []
        self._pending_bytes = 0
        self._inflight_bytes = 0
        self._wake = trio.Event()
        self._lock = threading.Lock()  # the writer is used by one worker thread at a time
        self._writer: RecordingWriter | None = None
        self._file_started = 0.0
        self._synced_at = float("-inf")
        self._retry_at = 0.0
        self._retry_delay = cfg.retry_s
        self._drops_written: dict[str, int] = {}
        self._seq_of_file = 0
        self.closed = trio.Event()  # set once run() has closed the file (or given up on it)

    # ------------------------------------------------------------------ the live side (never blocks)

    def deliver(self, frame) -> None:
        info = self._infos.get(frame.key)
        if info is not None:
            self.put(info, frame.seq, frame.t_last, frame.n_samples, frame.payload)

    def notify(self, text: str) -> None:
        # Catalog changes (rare): keep each stream's description, so a batch is
        # recorded under the layout it was published with.
        if '"type":"stream"' not in text:
            return
        info = StreamInfo.from_json(json.loads(text)["stream"])
        self._infos[info.key] = info

    def put(self, info: StreamInfo, seq: int, t_last: float, n_samples: int, payload: bytes | memoryview) -> None:
        size = len(payload)
        if self._pending_bytes + self._inflight_bytes + size > self.cfg.queue_bytes or self.stats.failing is not None:
            self._drop(info.id)
            return
        self._pending.append((info, seq, t_last, n_samples, payload, time.time()))
        self._pending_bytes += size
        if self._pending_bytes > self.cfg.chunk_bytes:
            self._wake.set()

    def _drop(self, stream_id: str, n: int = 1) -> None:
        self.stats.dropped += n
        self.drops[stream_id] = self.drops.get(stream_id, 0) + n

    # ------------------------------------------------------------------ the writing side

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        if self.hub is not None:
            self.hub.attach(self)
            for info in self.hub.catalog():
                self._infos[info.key] = info
            self.hub.subscribe(self, self.cfg.streams)
        task_status.started()
        try:
            while True:
                with trio.move_on_after(self.cfg.write_interval):
                    await self._wake.wait()
                self._wake = trio.Event()
                await self._write_pending(trio.current_time())
        finally:
            if self.hub is not None:
                self.hub.detach(self)
            # Shutdown: what is pending, then the summary. Bounded, so a frozen disk
            # cannot hold up the process: the worker thread is then abandoned.
            with trio.CancelScope(shield=True), trio.move_on_after(self.cfg.close_timeout_s) as scope:
                await self._write_pending(trio.current_time(), closing=True)
            if scope.cancelled_caught:
                self.stats.errors += 1
                log.error("recording: the disk did not take the last writes within %g s; %s is left without its summary "
                          "(`sensorstream recover FILE` fixes that)", self.cfg.close_timeout_s,
                          self.stats.files[-1] if self.stats.files else "the file", extra={"event": "recording_error"})
            self.closed.set()

    async def _write_pending(self, now: float, closing: bool = False) -> None:
        items, self._pending = self._pending, []
        moved, self._pending_bytes = self._pending_bytes, 0
        self._inflight_bytes += moved
        drops = dict(self.drops) if self.drops != self._drops_written else None
        try:
            await trio.to_thread.run_sync(self._write, items, now, drops, closing, abandon_on_cancel=True)
        finally:
            self._inflight_bytes -= moved

    def _write(self, items: list[_Item], now: float, drops: dict[str, int] | None, closing: bool) -> None:
        """In a worker thread. Never raises: failures are counted and reported once."""
        with self._lock:
            # A file is opened for batches to write; also at start (an unwritable
            # directory shows at once) and to retry after a failure (while failing,
            # batches are counted as dropped before they get here).
            first_or_retry = not closing and (not self.stats.files or self.stats.failing is not None)
            if self._writer is None and now >= self._retry_at and (items or first_or_retry):
                self._open(now)
            w = self._writer
            if w is None:
                for item in items:
                    self._drop(item[0].id)
                return
            done = 0
            try:
                for info, seq, t_last, n, payload, received in items:
                    w.write(info, seq, t_last, payload, received, now)
                    done += 1
                    self.stats.batches += 1
                    self.stats.samples += n
                    self.stats.bytes += len(payload)
                if closing:
                    if drops is not None:
                        w.note_drops(drops)
                    self._close_writer(w)
                    return
                # Close the chunk before its data is chunk_age_s old (the next
                # look comes one write_interval later, and its data arrived up to
                # one interval before that look).
                w.flush_older_than(now + 2 * self.cfg.write_interval - self.cfg.chunk_age_s)
                if drops is not None:
                    w.note_drops(drops)
                    self._drops_written = drops
                if self._rotation_due(w, now):
                    self._close_writer(w)  # the next file opens with the next batch
                elif w.unsynced and now - self._synced_at >= self.cfg.sync_interval:
                    self._synced_at = now
                    self._count_sync(w, w.sync)
            except OSError as e:
                for item in items[done:]:
                    self._drop(item[0].id)
                self._failed(e, now)

    def _close_writer(self, w: RecordingWriter) -> None:
        self._writer = None
        self._count_sync(w, w.close)  # (close syncs)

    def _count_sync(self, w: RecordingWriter, fn: Callable[[], None]) -> None:
        before = w.syncs
        try:
            fn()
        finally:
            self.stats.syncs += w.syncs - before

    def _rotation_due(self, w: RecordingWriter, now: float) -> bool:
        cfg = self.cfg
        if cfg.file is not None:
            return False
        return (cfg.max_bytes is not None and w.size >= cfg.max_bytes) or (cfg.max_age_s is not None and now - self._file_started >= cfg.max_age_s)

    def _next_path(self) -> Path:
        if self.cfg.file is not None:
            return self.cfg.file
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self._seq_of_file += 1
        return self.cfg.directory / f"{self.cfg.prefix}-{stamp}-{self._seq_of_file:03d}.mcap"

    def _open(self, now: float) -> None:
        path = self._next_path()
        try:
            if self.cfg.directory is not None:
                self.cfg.directory.mkdir(parents=True, exist_ok=True)
            f = self.cfg.opener(path)
            try:
                self._writer = RecordingWriter(f, chunk_bytes=self.cfg.chunk_bytes, compression=self.cfg.compression, info={
                    "source": self.cfg.source, "started": dt.datetime.now(dt.timezone.utc).isoformat()})
            except BaseException:
                f.close()
                raise
        except OSError as e:
            self._failed(e, now, path)
            return
        self._file_started = now
        self.stats.files.append(str(path))
        self._drops_written = {}
        self._sync_directory(path.parent)
        if self.stats.failing is not None:
            self._retry_delay = self.cfg.retry_s
            log.warning("recording: writing again, to %s (%d batches dropped in all)", path, self.stats.dropped,
                        extra={"event": "recording_resumed", "file": str(path)})
            self.stats.failing = None
        else:
            log.info("recording to %s", path, extra={"event": "recording", "file": str(path)})

    def _sync_directory(self, directory: Path) -> None:
        """A new file's name is durable once its directory is synced (once per file)."""
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return
        try:
            os.fsync(fd)
            self.stats.syncs += 1
        except OSError:
            pass  # (a file system that cannot sync directories: the file's own syncs still hold its data)
        finally:
            os.close(fd)

    def _failed(self, e: OSError, now: float, path: Path | None = None) -> None:
        self.stats.errors += 1
        if self._writer is not None:
            self._writer.abandon()
            self._writer = None
        # A file of its own is not retried (it may now be half-written); a
        # directory is, backing off to once in 5 minutes while the disk stays full.
        self._retry_at = float("inf") if self.cfg.file is not None else now + self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, 300.0)
        where = path or (self.stats.files[-1] if self.stats.files else self.cfg.directory or self.cfg.file)
        if self.stats.failing is None:
            hint = {errno.ENOSPC: "the disk is full", errno.EACCES: "no permission", errno.EROFS: "read-only file system",
                    errno.ENOTDIR: "a path component is not a directory"}.get(e.errno, e.strerror or str(e))
            log.error("recording: cannot write %s: %s. The server goes on; batches are counted as dropped "
                      "until writing works again%s.", where, hint,
                      "" if self.cfg.file is not None else f" (retried from {self.cfg.retry_s:g}s on)",
                      extra={"event": "recording_error", "file": str(where)})
        self.stats.failing = f"{where}: {e.strerror or e}"


def recorder_for(cfg, hub) -> Recorder | None:
    """The server's recorder for `serve --record DIR` (None without --record)."""
    if not cfg.record:
        return None
    return Recorder(RecorderConfig(
        directory=Path(cfg.record), streams=tuple(cfg.record_streams or ["*"]),
        max_bytes=None if cfg.record_max_mb is None else int(cfg.record_max_mb * 1024 * 1024),
        max_age_s=cfg.record_max_age_s, compression=cfg.record_compression), hub=hub)
