"""Command-line wiring for commands: `serve --allow-commands/--control-token ...` and `send`."""

from __future__ import annotations

import argparse
import os
import sys

import trio

from .. import argtypes, excgroups

CONTROL_TOKEN_ENV = "SENSORSTREAM_CONTROL_TOKEN"
DEFAULT_URL = "ws://127.0.0.1:8765/ws"


def add_serve_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--allow-commands", action="store_true",
                       help="let clients send commands to devices (serial ports, simulators); off by default")
    group.add_argument("--control-token", default=None, metavar="TOKEN",
                       help="only clients presenting this may send commands (?control_token=... or the "
                            f"Sensorstream-Control-Token header); implies --allow-commands; also ${CONTROL_TOKEN_ENV}")
    group.add_argument("--command-rate", type=argtypes.number(0, 1000, min_open=True), default=10.0, metavar="PER_S",
                       help="commands per second one connection may send (twice as many at once)")
    group.add_argument("--max-command-bytes", type=argtypes.integer(1, 65536), default=1024, metavar="BYTES",
                       help="largest command, in bytes")
    group.add_argument("--command-queue-bytes", type=argtypes.integer(16, 16 * 1024 * 1024), default=4096, metavar="BYTES",
                       help="bytes queued per device before further commands are refused (rate_limited)")


def apply_args(cfg, args: argparse.Namespace) -> None:
    cfg.allow_commands = args.allow_commands
    cfg.control_token = args.control_token or None  # $SENSORSTREAM_CONTROL_TOKEN: cli.parse_serve_args
    cfg.command_rate = args.command_rate
    cfg.command_burst = max(1, int(2 * args.command_rate))
    cfg.max_command_bytes = args.max_command_bytes
    cfg.command_queue_bytes = args.command_queue_bytes


class _Intermixed(argparse.ArgumentParser):
    """Positionals before and after options (`send URL --stream ID "TEXT" --eol cr`),
    which plain parse_args cannot split (it gives every positional the first run)."""

    _inside = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inside:  # parse_known_intermixed_args calls back in here
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("send", help="send a command to a device through a running server",
                       usage='sensorstream send [URL] --stream ID "TEXT" | --hex "01 03 ..."  (see --help)')
    s.__class__ = _Intermixed
    s.add_argument("url", nargs="?", default=None,
                   help=f"the server's WebSocket URL (default {DEFAULT_URL}; add ?token=... if it needs a read token)")
    s.add_argument("text", nargs="?", default=None, help="the text to send (a line ending is added, see --eol)")
    s.add_argument("--stream", required=True, help="the stream id of the device, e.g. serial/ttyACM0")
    s.add_argument("--hex", default=None, metavar="BYTES", help='send these bytes instead of text, e.g. "01 03 00 00 00 0a"')
    s.add_argument("--eol", choices=["none", "lf", "cr", "crlf"], default="lf", help="line ending after the text")
    s.add_argument("--control-token", default=None, metavar="TOKEN", help=f"the server's control token; also ${CONTROL_TOKEN_ENV}")
    s.add_argument("--timeout", type=argtypes.number(0, 3600, min_open=True), default=10.0, metavar="S",
                   help="give up after this many seconds")
    s.add_argument("--cafile", default=None, type=argtypes.readable_file, help="trust this CA (or self-signed) certificate for wss:// URLs")


def run_subcommand(args: argparse.Namespace) -> int | None:
    """`send`: 0 once the server wrote the bytes, 1 if refused or unreachable (one line),
    2 for a usage mistake or a bad URL, 130 on Ctrl-C."""
    if args.command != "send":
        return None
    from ..client import BadURL, ClientError, CommandRefused, normalize_url

    # `send URL TEXT`, `send TEXT` (the default URL), `send URL --hex ...` or `send --hex ...`.
    if args.text is None and args.hex is None:
        args.text, args.url = args.url, None
    args.url = args.url or DEFAULT_URL
    if (args.text is None) == (args.hex is None):
        print('sensorstream send: error: give the text to send, or --hex "01 03 ..." (one of them)', file=sys.stderr)
        return 2
    try:
        args.url = normalize_url(args.url)
    except BadURL as e:
        print(f"sensorstream send: error: {e}", file=sys.stderr)
        return 2
    token = args.control_token or os.environ.get(CONTROL_TOKEN_ENV) or None
    try:
        with excgroups.unwrapped():
            n = trio.run(_send, args, token)
    except KeyboardInterrupt:
        return 130
    except CommandRefused as e:
        print(f"sensorstream send: refused: {e.code}: {e.message}", file=sys.stderr)
        return 1
    except ClientError as e:
        print(f"sensorstream send: error: {e}", file=sys.stderr)
        return 1
    except trio.TooSlowError:
        print(f"sensorstream send: error: no answer from {args.url} within {args.timeout:g} s", file=sys.stderr)
        return 1
    print(f"sent {n} byte{'' if n == 1 else 's'} to {args.stream}")
    return 0


async def _send(args: argparse.Namespace, token: str | None) -> int:
    from ..client import open_client

    ctx = None
    if args.cafile:
        import ssl

        ctx = ssl.create_default_context(cafile=args.cafile)
    with trio.fail_after(args.timeout):
        async with open_client(args.url, [], reconnect=False, control_token=token, ssl_context=ctx,
                               connect_timeout=args.timeout) as client:
            await client.connected.wait()
            return await client.send_command(args.stream, text=args.text, hex=args.hex, eol=args.eol)
