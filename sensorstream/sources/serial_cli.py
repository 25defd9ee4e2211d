"""Command-line wiring for serial sources: `serve --serial/--device`, `ports`, `simulate --pty`."""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import sys

import trio

from .. import argtypes
from ..server.security import ConfigError

log = logging.getLogger(__name__)


def add_serve_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--serial", action="append", default=[], metavar="PORT[@BAUD]", type=argtypes.serial_port,
                       help="read a serial port (a path like /dev/ttyUSB0, or a pyserial URL such as "
                            "socket://host:port, rfc2217://host:port, loop://); repeatable; format auto-detected")
    group.add_argument("--baud", type=argtypes.baud, default=115200, help="baud rate (bits per second) for --serial ports without @BAUD")
    group.add_argument("--device", action="append", default=[], metavar="PROFILE.toml",
                       help="read a serial device described by a profile (devices/*.toml); repeatable")


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("ports", help="list serial ports (device, description, VID:PID, serial number)")
    s = sub.add_parser("simulate", help="a simulated serial device on a pseudo-terminal (try the serial path without hardware)",
                       usage="sensorstream simulate --pty [--format FORMAT] [--profile NAME] [options]  (see --help)")
    s.add_argument("--pty", action="store_true", required=True, help="create a pseudo-terminal and print its path")
    s.add_argument("--format", choices=["labels", "csv", "json", "cobs"], default="labels", help="what the fake device sends")
    s.add_argument("--profile", default="sim-imu", help="simulator profile: a name in devices/ (sim-imu, sim-env, sim-power) or a path")
    s.add_argument("--rate", type=argtypes.number(0, 1e6, min_open=True), default=None, metavar="HZ",
                   help="samples per second (default: the profile's)")
    s.add_argument("--seed", type=argtypes.seed, default=0, help="random seed, 0-4294967295 (same seed, same data)")
    s.add_argument("--link", default=None, type=argtypes.new_path, help="also create a symlink to the pty at this path (stable name for replug tests)")


def apply_args(cfg, args: argparse.Namespace) -> None:
    cfg.serial = list(args.serial)
    cfg.baud = args.baud
    cfg.devices = list(args.device)


def run_subcommand(args: argparse.Namespace) -> int | None:
    if args.command == "ports":
        from .serial import list_ports

        rows = list_ports()
        if not rows:
            print("no serial ports found")
            return 0
        cols = ["device", "description", "vid_pid", "serial_number"]
        widths = [max(len(c), *(len(r[c]) for r in rows)) for c in cols]
        print("  ".join(c.upper().ljust(w) for c, w in zip(cols, widths)))
        for r in rows:
            print("  ".join(r[c].ljust(w) for c, w in zip(cols, widths)))
        return 0
    if args.command == "simulate":
        return _simulate(args)
    return None


def _simulate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .pty_sim import run_pty_device
    from .simulator import devices_dir, load_profile

    p = Path(args.profile)
    if not p.exists():
        p = devices_dir() / (args.profile if args.profile.endswith(".toml") else args.profile + ".toml")
    if not p.is_file():
        names = sorted(f.stem for f in devices_dir().glob("sim-*.toml"))
        raise ConfigError(f"no simulator profile {args.profile!r}{argtypes.suggest(args.profile, names)}: "
                          f"use one of {', '.join(names)} or a path to a simulator .toml")
    try:
        profile = load_profile(p)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{p}: not a simulator profile ({type(e).__name__}: {e}); see devices/sim-imu.toml for one") from None
    if args.rate:
        profile = profile.with_rate(args.rate)

    async def main():
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                path = await nursery.start(functools.partial(run_pty_device, profile, args.format, seed=args.seed, link=args.link))
                names = ",".join(c.name for c in profile.channels)
                print(f"PTY {path}", flush=True)
                print(f"simulating {profile.id} ({names}) at {profile.rate_hz:g} Hz as {args.format}; "
                      f"try: sensorstream serve --serial {path}", file=sys.stderr, flush=True)
                async for _ in signals:
                    break
                nursery.cancel_scope.cancel()

    trio.run(main)
    return 0
