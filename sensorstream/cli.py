"""Command line: `sensorstream serve | tail`."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import signal
import sys

import trio

from . import __version__
from .config import ServerConfig
from .sources import serial_cli


def _late(spec: str) -> tuple[str, float]:
    stream_id, _, delay = spec.rpartition(":")
    if not stream_id:
        raise argparse.ArgumentTypeError("expected ID:SECONDS, e.g. sim/late:2")
    return stream_id, float(delay)


def _wide(spec: str) -> tuple[int, float]:
    c, _, rate = spec.partition(":")
    try:
        n, r = int(c), float(rate)
    except ValueError:
        raise argparse.ArgumentTypeError("expected CHANNELS:RATE, e.g. 16:1000") from None
    if not (1 <= n <= 1024 and r > 0):
        raise argparse.ArgumentTypeError("CHANNELS must be 1..1024 and RATE > 0")
    return n, r


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sensorstream", description="Live sensor data from devices to the browser.")
    p.add_argument("--version", action="version", version=f"sensorstream {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    d = ServerConfig()
    s = sub.add_parser("serve", help="run the server", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = s.add_argument_group("network")
    g.add_argument("--host", default=d.host, help="address to bind")
    g.add_argument("--port", type=int, default=d.port, help="TCP port (0 picks a free one)")
    g = s.add_argument_group("sources")
    g.add_argument("--simulate", action="store_true", help="stream the built-in simulators (devices/sim-*.toml)")
    g.add_argument("--seed", type=int, default=d.seed, help="simulator random seed (same seed, same data)")
    g.add_argument("--imu-rate", type=float, default=None, help="simulated IMU sample rate in Hz (default: its profile's, 200)")
    g.add_argument("--simulate-late", type=_late, action="append", default=[], metavar="ID:SECONDS",
                   help="add a simulated stream ID after SECONDS (shows streams appearing live)")
    g.add_argument("--simulate-wide", type=_wide, default=None, metavar="CHANNELS:RATE",
                   help="add stream sim/wide with CHANNELS channels at RATE Hz (load tests, e.g. 16:1000)")
    serial_cli.add_serve_arguments(s.add_argument_group("serial devices"))
    g = s.add_argument_group("batching and history")
    g.add_argument("--window-ms", type=float, default=d.window_s * 1000, help="batch window")
    g.add_argument("--max-batch", type=int, default=d.max_batch_samples, help="most samples in one batch")
    g.add_argument("--history-s", type=float, default=d.history_s, help="seconds of history kept per stream")
    g.add_argument("--history-mb", type=float, default=d.history_mb, help="history cap per stream, MiB")
    g = s.add_argument_group("liveness and backpressure")
    g.add_argument("--ping-interval", type=float, default=d.ping_interval, help="seconds between WebSocket pings")
    g.add_argument("--ping-timeout", type=float, default=d.ping_timeout, help="close a client whose pong is this late")
    g.add_argument("--send-timeout", type=float, default=d.send_timeout, help="close a client whose write blocks this long")
    g.add_argument("--heartbeat", type=float, default=d.heartbeat_s, help="heartbeat message interval on idle connections")
    g.add_argument("--queue-batches", type=int, default=d.queue_batches, help="per-client queue; oldest batches dropped beyond it")
    g = s.add_argument_group("logging")
    g.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    t = sub.add_parser("tail", help="print live samples from a running server")
    t.add_argument("url", nargs="?", default="ws://127.0.0.1:8765/ws")
    t.add_argument("--stream", action="append", default=None, help="stream id or glob (repeatable; default: all)")
    t.add_argument("--history", type=float, default=0.0, help="start with this many seconds of history")
    t.add_argument("--count", type=int, default=0, help="stop after this many samples (0: run until Ctrl-C)")
    t.add_argument("--batches", action="store_true", help="one line per batch instead of per sample")
    serial_cli.add_subcommands(sub)
    return p


def config_from_args(a: argparse.Namespace) -> ServerConfig:
    cfg = ServerConfig(
        host=a.host, port=a.port, simulate=a.simulate, seed=a.seed, imu_rate=a.imu_rate, simulate_late=a.simulate_late,
        simulate_wide=a.simulate_wide,
        window_s=a.window_ms / 1000, max_batch_samples=a.max_batch, history_s=a.history_s, history_mb=a.history_mb,
        ping_interval=a.ping_interval, ping_timeout=a.ping_timeout, send_timeout=a.send_timeout,
        heartbeat_s=a.heartbeat, queue_batches=a.queue_batches,
    )
    serial_cli.apply_args(cfg, a)
    return cfg


async def serve(cfg: ServerConfig) -> None:
    from .server.app import Server

    server = Server(cfg)
    serial_cli.add_sources(server, cfg)
    # Signals are handled as events, not KeyboardInterrupt, so shutdown is an
    # ordinary code path: close clients with 1001, stop sources, exit 0.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.run)
            host = cfg.host if ":" not in cfg.host else f"[{cfg.host}]"
            print(f"sensorstream {__version__}: dashboard at http://{host}:{port}/  (WebSocket ws://{host}:{port}/ws)", flush=True)
            async for sig in signals:
                logging.getLogger("sensorstream").info("signal %s: shutting down", signal.Signals(sig).name)
                break
            await server.shutdown()
            nursery.cancel_scope.cancel()


async def tail(a: argparse.Namespace) -> None:
    from .client import open_client

    printed = 0
    async with open_client(a.url, a.stream or ["*"], history_s=a.history) as client:
        async for batch in client:
            info = client.streams.get(batch.key)
            sid = info.id if info else f"key{batch.key}"
            names = [c.name for c in info.channels] if info else []
            if a.batches:
                print(f"{sid} seq={batch.seq} n={len(batch.timestamps)}", flush=True)
                printed += len(batch.timestamps)
            else:
                lines = []
                for i, t in enumerate(batch.timestamps):
                    when = dt.datetime.fromtimestamp(float(t), dt.timezone.utc).isoformat(timespec="milliseconds")
                    vals = " ".join(f"{names[c] if c < len(names) else f'ch{c}'}={batch.values[c, i]:.6g}" for c in range(batch.values.shape[0]))
                    lines.append(f"{when} {sid} {vals}")
                    printed += 1
                    if a.count and printed >= a.count:
                        break
                print("\n".join(lines), flush=True)
            if a.count and printed >= a.count:
                return


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.command == "serve":
        logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        trio.run(serve, config_from_args(a))
        return 0
    if a.command == "tail":
        logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s")
        try:
            trio.run(tail, a)
        except KeyboardInterrupt:
            pass
        except BrokenPipeError:
            pass
        return 0
    rc = serial_cli.run_subcommand(a)
    return 2 if rc is None else rc


if __name__ == "__main__":
    sys.exit(main())
