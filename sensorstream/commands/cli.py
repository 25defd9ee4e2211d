"""Command-line wiring for commands: `serve --allow-commands/--control-token ...` and `send`."""

from __future__ import annotations

import argparse
import os
import sys

import trio

from .. import argtypes

CONTROL_TOKEN_ENV = "SENSORSTREAM_CONTROL_TOKEN"


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
    cfg.control_token = args.control_token or os.environ.get(CONTROL_TOKEN_ENV) or None
    cfg.command_rate = args.command_rate
    cfg.command_burst = max(1, int(2 * args.command_rate))
    cfg.max_command_bytes = args.max_command_bytes
    cfg.command_queue_bytes = args.command_queue_bytes


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("send", help="send a command to a device through a running server",
                       usage='sensorstream send [URL] --stream ID "TEXT" | --hex "01 03 ..."  (see --help)')
    s.add_argument("url", nargs="?", default="ws://127.0.0.1:8765/ws",
                   help="the server's WebSocket URL (add ?token=... if it needs a read token)")
    s.add_argument("text", nargs="?", default=None, help="the text to send (a line ending is added, see --eol)")
    s.add_argument("--stream", required=True, help="the stream id of the device, e.g. serial/ttyACM0")
    s.add_argument("--hex", default=None, metavar="BYTES", help='send these bytes instead of text, e.g. "01 03 00 00 00 0a"')
    s.add_argument("--eol", choices=["none", "lf", "cr", "crlf"], default="lf", help="line ending after the text")
    s.add_argument("--control-token", default=None, metavar="TOKEN", help=f"the server's control token; also ${CONTROL_TOKEN_ENV}")
    s.add_argument("--timeout", type=argtypes.number(0, 3600, min_open=True), default=10.0, metavar="S",
                   help="give up after this many seconds")
    s.add_argument("--cafile", default=None, type=argtypes.readable_file, help="trust this CA (or self-signed) certificate for wss:// URLs")


def run_subcommand(args: argparse.Namespace) -> int | None:
    if args.command != "send":
        return None
    # `send URL TEXT`, or `send TEXT` with the default URL.
    if args.text is None and args.hex is None and args.url and "://" not in args.url:
        args.text, args.url = args.url, "ws://127.0.0.1:8765/ws"
    if (args.text is None) == (args.hex is None):
        print('sensorstream send: error: give the text to send, or --hex "01 03 ..." (one of them)', file=sys.stderr)
        return 2
    token = args.control_token or os.environ.get(CONTROL_TOKEN_ENV) or None
    try:
        n = trio.run(_send, args, token)
    except BaseException as exc:  # noqa: BLE001 -- mapped to one line below, or re-raised
        why = _failure(_leaf(exc), args)
        if why is None:
            raise
        print(f"sensorstream send: {why}", file=sys.stderr)
        return 1
    print(f"sent {n} bytes to {args.stream}")
    return 0


def _leaf(e: BaseException) -> BaseException:
    """The one exception inside nested single-member groups (trio's nurseries are strict)."""
    while isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
        e = e.exceptions[0]
    return e


def _failure(e: BaseException, args: argparse.Namespace) -> str | None:
    """One line for what went wrong, or None for what is not a user-facing failure."""
    from trio_websocket import ConnectionClosed, HandshakeError

    from ..client import CommandRefused

    if isinstance(e, CommandRefused):
        return f"refused: {e.code}: {e.message}"
    if isinstance(e, trio.TooSlowError):
        return f"no answer from {args.url} within {args.timeout:g} s"
    if isinstance(e, HandshakeError):
        return f"{args.url} refused the connection ({e}); does it need ?token=...?"
    if isinstance(e, (ConnectionError, ConnectionClosed, OSError)):
        return f"cannot reach {args.url}: {e or type(e).__name__}"
    return None


async def _send(args: argparse.Namespace, token: str | None) -> int:
    from ..client import Client

    ctx = None
    if args.cafile:
        import ssl

        ctx = ssl.create_default_context(cafile=args.cafile)
    client = Client(args.url, [], reconnect=False, control_token=token, ssl_context=ctx)
    with trio.fail_after(args.timeout):
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            await client.connected.wait()
            try:
                return await client.send_command(args.stream, text=args.text, hex=args.hex, eol=args.eol)
            finally:
                nursery.cancel_scope.cancel()
