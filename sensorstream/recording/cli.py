"""Command-line wiring for recordings: `serve --record`, `record`, `replay`, `export`, `recover`."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import signal
import sys
from pathlib import Path

import trio

from .. import argtypes

log = logging.getLogger(__name__)

COMMANDS = ("record", "replay", "export", "recover")


def _time(text: str):
    """--from/--to: Unix seconds, an ISO 8601 time (UTC unless it says otherwise), or +SECONDS from the start."""
    text = text.strip()
    if text.startswith("+"):
        try:
            return ("rel", float(text[1:]))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected +SECONDS, e.g. +10") from None
    try:
        return ("abs", float(text))
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected Unix seconds, an ISO time (2026-11-29T15:00:00Z) or +SECONDS") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return ("abs", when.timestamp())


def add_serve_arguments(g: argparse._ArgumentGroup, d) -> None:
    g.add_argument("--record", metavar="DIR", default=d.record,
                   help="record every batch into MCAP files in DIR (docs/recording.md); never slows the live path")
    g.add_argument("--record-streams", metavar="GLOB", action="append", default=None,
                   help="record only streams matching this id or glob (repeatable; default: all)")
    g.add_argument("--record-max-mb", type=argtypes.number(0.001, 1e7, min_open=False), default=d.record_max_mb, metavar="MB", help="start a new file at this size")
    g.add_argument("--record-max-age", type=argtypes.number(1, 1e8), default=d.record_max_age_s, metavar="SECONDS", help="start a new file at this age")
    _compression_argument(g, "--record-compression", d.record_compression)


def _compression_argument(g, flag: str, default: str) -> None:
    g.add_argument(flag, choices=["zstd", "lz4", "none"], default=default,
                   help="chunk compression: zstd (smallest files; default), lz4 (reads back ~2x faster, bigger files; needs the lz4 "
                        "package) or none (docs/recording.md#compression)")


def check_compression(flag: str, name: str) -> None:
    """A clear error now, rather than a failing recording later, if lz4 is asked for and missing."""
    if name == "lz4":
        try:
            import lz4.frame  # noqa: F401
        except ImportError:
            from ..server.security import ConfigError

            raise ConfigError(f"{flag} lz4 needs the lz4 package: pip install 'sensorstream[lz4]' (or use zstd)") from None


def apply_serve_args(cfg, a: argparse.Namespace) -> None:
    from ..server.security import ConfigError
    from .writer import check_directory

    cfg.record = a.record
    cfg.record_streams = list(a.record_streams or ["*"])
    cfg.record_max_mb = a.record_max_mb
    cfg.record_max_age_s = a.record_max_age
    cfg.record_compression = a.record_compression
    check_compression("--record-compression", cfg.record_compression)
    if a.record_streams and not a.record:
        raise ConfigError("--record-streams needs --record DIR")
    if cfg.record:
        try:
            check_directory(Path(cfg.record))
        except OSError as e:
            raise ConfigError(f"--record {cfg.record}: cannot write there ({e.strerror or e}); choose a writable directory") from None


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("record", help="record streams from a running server into an MCAP file",
                       usage="sensorstream record [URL] -o FILE.mcap [--stream ID_OR_GLOB] [options]  (see --help)")
    r.add_argument("url", nargs="?", default="ws://127.0.0.1:8765/ws")
    r.add_argument("--stream", action="append", default=None, help="stream id or glob (repeatable; default: all)")
    r.add_argument("-o", "--output", required=True, metavar="FILE.mcap", help="the recording to write")
    r.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    r.add_argument("--duration", type=argtypes.positive_float, default=None, metavar="SECONDS", help="stop after this long (default: Ctrl-C)")
    r.add_argument("--cafile", default=None, type=argtypes.readable_file, help="trust this CA (or self-signed) certificate for wss:// URLs")
    _compression_argument(r, "--compression", "zstd")

    p = sub.add_parser("replay", help="serve a recording as live streams, with its original timing",
                       usage="sensorstream replay FILE.mcap [--speed X] [--loop] [--port PORT] [options]  (see --help)")
    p.add_argument("file", metavar="FILE.mcap")
    p.add_argument("--speed", type=argtypes.number(0, 1000), default=1.0,
                   help="playback speed (2: twice as fast; 0: as fast as the clients read: each batch goes out once every "
                        "subscribed client has room for it, so none is dropped; nothing goes out before the first client "
                        "subscribes; a client that stops reading is closed by the usual ping/send timeouts)")
    p.add_argument("--loop", action="store_true", help="start over at the end")
    p.add_argument("--host", type=argtypes.host, default="127.0.0.1", help="address to bind; anything but loopback needs --token")
    p.add_argument("--port", type=argtypes.listen_port, default=8765, help="TCP port, 1-65535 (0 picks a free one)")
    p.add_argument("--token", default=None, help="WebSocket clients must present this (as for serve)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"], help="least severe level logged")

    e = sub.add_parser("export", help="turn a recording into CSV, npz, Parquet or Foxglove files",
                       usage="sensorstream export FILE.mcap --format csv|npz|parquet|foxglove -o OUT [options]  (see --help)")
    e.add_argument("file", metavar="FILE.mcap")
    e.add_argument("--format", required=True, choices=["csv", "npz", "parquet", "foxglove"])
    e.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="a file (npz, foxglove, aligned tables, or one stream to *.csv/*.parquet) or a directory (one file per stream)")
    e.add_argument("--stream", action="append", default=None, help="stream id or glob (repeatable; default: all)")
    e.add_argument("--from", dest="start", type=_time, default=None, metavar="T", help="Unix seconds, ISO time, or +SECONDS from the start")
    e.add_argument("--to", dest="end", type=_time, default=None, metavar="T", help="as --from")
    e.add_argument("--align", type=argtypes.number(0.001, 86_400_000, min_open=False), default=None, metavar="MS", help="resample every stream onto one time axis every MS milliseconds")
    e.add_argument("--method", choices=["linear", "nearest"], default="linear", help="how --align resamples")

    c = sub.add_parser("recover", help="rewrite a recording cut short (crash, full disk) with a valid summary")
    c.add_argument("file", metavar="FILE.mcap")
    c.add_argument("-o", "--output", default=None, metavar="OUT.mcap", help="write here instead of replacing FILE")


def run_subcommand(a: argparse.Namespace) -> int | None:
    """Exit code, or None if `a` is not one of these commands."""
    if a.command not in COMMANDS:
        return None
    logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s")
    from . import RecordingError
    from .export import ExportError

    try:
        if a.command == "export":
            return _export(a)
        if a.command == "recover":
            return _recover(a)
        if a.command == "record":
            return _record(a)
        return _replay(a)
    except (RecordingError, ExportError) as e:
        print(f"sensorstream {a.command}: error: {e}", file=sys.stderr)
        return 2


def _resolve(spec, start: float | None) -> float | None:
    if spec is None:
        return None
    kind, v = spec
    return (start or 0.0) + v if kind == "rel" else v


def _export(a) -> int:
    from . import Recording
    from .export import export

    with Recording(a.file) as rec:
        paths = export(rec, a.format, Path(a.output), patterns=a.stream, start=_resolve(a.start, rec.start),
                       end=_resolve(a.end, rec.start), align_ms=a.align, method=a.method)
        if not rec.complete:
            print(f"note: {a.file} has no summary (cut short?); every complete chunk was used", file=sys.stderr)
    for p in paths:
        print(p)
    return 0


def _recover(a) -> int:
    from .recover import recover

    src = Path(a.file)
    dst = Path(a.output) if a.output else src.with_name(src.name + ".recovering")
    r = recover(src, dst)
    if not a.output:
        os.replace(dst, src)
        dst = src
    what = "had a summary already; rewritten" if r.had_summary else f"{r.dropped_bytes} bytes of cut-off tail left out"
    print(f"{dst}: {r.messages} batches in {r.chunks} chunks ({what})")
    return 0


# ----------------------------------------------------------------- record (a client)


async def record(a, progress=None) -> None:
    from ..client import open_client
    from ..protocol import encode_batch
    from .writer import Recorder, RecorderConfig

    ctx = None
    if a.cafile:
        import ssl

        ctx = ssl.create_default_context(cafile=a.cafile)
    opener = (lambda p: open(p, "wb")) if a.overwrite else (lambda p: open(p, "xb"))
    rec = Recorder(RecorderConfig(file=Path(a.output), source=f"record {a.url}", opener=opener, compression=a.compression))
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_signal, signals, nursery.cancel_scope)
            await nursery.start(rec.run)
            if a.duration:
                nursery.cancel_scope.deadline = trio.current_time() + a.duration
            t0 = trio.current_time()
            async with open_client(a.url, a.stream or ["*"], ssl_context=ctx) as client:
                async for b in client:
                    info = client.streams.get(b.key)
                    if info is None:
                        continue
                    # The client hands out decoded views; the wire bytes are rebuilt
                    # once per batch (a copy, no conversion) for the file.
                    payload = encode_batch(b.key, b.seq, b.timestamps, b.values)
                    rec.put(info, b.seq, float(b.timestamps[-1]) if len(b.timestamps) else 0.0, len(b.timestamps), payload)
                    if progress is not None:
                        # The client resumes by (epoch, seq) after a reconnect; what it could
                        # not get back (and what the server dropped) it counts as gaps.
                        progress(rec, trio.current_time() - t0, client.state.lost, client.state.gaps)


async def _cancel_on_signal(signals, scope: trio.CancelScope) -> None:
    async for _ in signals:
        scope.cancel()
        return


class _Progress:
    """One line, rewritten in place at most 4 times a second (only on a terminal)."""

    def __init__(self, out):
        self.out = out
        self.next = 0.0

    def __call__(self, rec, elapsed: float, lost: int, gaps: int) -> None:
        if elapsed < self.next:
            return
        self.next = elapsed + 0.25
        st = rec.stats
        size = st.bytes / 1e6
        rate = st.samples / elapsed if elapsed > 0 else 0.0
        extra = f", {st.dropped} dropped by the recorder" if st.dropped else ""
        self.out.write(f"\r{st.samples:,} samples, {rate:,.0f}/s, {size:.1f} MB, {lost} batches missed in {gaps} gaps{extra}   ")
        self.out.flush()


def _record(a) -> int:
    out = Path(a.output)
    if out.exists() and not a.overwrite:
        print(f"sensorstream record: error: {out} exists; choose another name or add --overwrite", file=sys.stderr)
        return 2
    if not out.parent.is_dir():
        print(f"sensorstream record: error: directory {out.parent} does not exist", file=sys.stderr)
        return 2
    from ..server.security import ConfigError

    try:
        check_compression("--compression", a.compression)
    except ConfigError as e:
        print(f"sensorstream record: error: {e}", file=sys.stderr)
        return 2
    progress = _Progress(sys.stderr) if sys.stderr.isatty() else None
    try:
        trio.run(record, a, progress)
    except ConnectionError as e:
        print(f"sensorstream record: error: {e} (is the server running?)", file=sys.stderr)
        return 1
    finally:
        if progress is not None:
            sys.stderr.write("\n")
    from . import Recording

    if out.exists():
        with Recording(out) as rec:
            n = len(rec.streams)
        print(f"{out}: {n} streams, {out.stat().st_size / 1e6:.1f} MB")
    return 0


# ----------------------------------------------------------------- replay (a server)


def _replay(a) -> int:
    from .. import logs
    from ..config import ServerConfig
    from ..server.security import ConfigError

    cfg = ServerConfig(host=a.host, port=a.port, token=a.token or os.environ.get("SENSORSTREAM_TOKEN") or None)
    logs.setup(a.log_level, "text")
    from ..cli import run_server

    try:
        return run_server("replay", serve_replay, cfg, a.file, a.speed, a.loop)
    except ConfigError as e:
        print(f"sensorstream replay: error: {e}", file=sys.stderr)
        return 2


def make_replay_server(cfg, path, speed: float = 1.0, loop: bool = False):
    """A server whose only source is the replay of `path` (also used by tests)."""
    from .. import protocol
    from ..server.app import Server
    from ..sources.replay import Replay

    from ..sources.pacing import PaceLimits

    server = Server(cfg)
    replay = Replay(server.hub, path, speed=speed, loop=loop, pace=PaceLimits.for_outbox(cfg.queue_batches, server.queue_bytes))

    def broadcast(state: dict) -> None:
        text = protocol.playback_state(None, state)
        for s in list(server.sessions):
            s.notify(text)

    replay.on_state = broadcast
    server.use_replay(replay)
    return server


async def serve_replay(cfg, path, speed: float, loop: bool) -> None:
    from ..cli import serve

    await serve(cfg, make_replay_server(cfg, path, speed, loop), what=f"replaying {path}: ")
