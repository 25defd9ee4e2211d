"""The conformance echo server: sensorstream's own front door and WebSocket
connection, with an echo loop where /ws has its session.

    python -m tests.conformance.echo_server --port P [--host H] [--max-message-bytes N]

(from the repository root; keep this command stable: docs/conformance.md and
the runner use it). It prints one line, `listening on ws://H:P/ws`, once it
accepts connections, and runs until SIGINT/SIGTERM.

Only the session differs from `sensorstream serve`: the listener, the HTTP
front door and its handshake (`Server`, `http.handle_http`), and the
connection (`ws.ServerConnection`: framing, UTF-8 validation, the message size
limit, ping/pong and the close paths) are the ones /ws clients get. The echo
loop sends no `hello` and no heartbeats, so the fuzzing client sees exactly
the messages it sent.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys

import trio

from sensorstream.config import ServerConfig
from sensorstream.server.app import Server
from sensorstream.server.http import Upgrade
from sensorstream.server.ws import ConnectionClosed, ServerConnection

#: Autobahn's largest messages (cases 9.x.6) are 16 MiB.
DEFAULT_MAX_MESSAGE = 32 * 1024 * 1024


async def echo(cfg: ServerConfig, up: Upgrade) -> None:
    """The WebSocket life of one echo connection: what `Server.handle_websocket`
    does for /ws, with an echo loop where the session would be."""
    # preface: the 101 goes out with the connection's first write (here, before its first read).
    conn = ServerConnection(up.stream, trailing=up.trailing, preface=up.response, max_message_bytes=cfg.max_message_bytes)
    del up
    try:
        async for message in conn:
            if type(message) is str:
                await conn.send_text(message)
            else:
                await conn.send_bytes(message)
    except ConnectionClosed:
        pass  # closed while an echo was going out
    finally:
        if conn.closed is None:
            # The server is shutting down (this task is cancelled): close politely, briefly.
            with trio.CancelScope(shield=True), trio.move_on_after(cfg.close_timeout):
                await conn.aclose(1001, "server shutting down")


def config(host: str, port: int, max_message_bytes: int) -> ServerConfig:
    return ServerConfig(
        host=host, port=port, max_message_bytes=max_message_bytes,
        # No heartbeats (they are text messages the fuzzing client did not ask for).
        heartbeat_s=1e9, log_level="warning",
        # Autobahn opens one connection per case, one after the other.
        max_connections_per_client=4096,
    )


def echo_server(cfg: ServerConfig) -> Server:
    """A sensorstream Server (listener, TLS, connection limits, the HTTP front
    door and its handshake) whose accepted upgrades run `echo` instead of a session."""
    server = Server(cfg)
    server.http_context = dataclasses.replace(server.http_context, upgrade=lambda up: echo(cfg, up))
    return server


async def serve(cfg: ServerConfig) -> None:
    server = echo_server(cfg)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.run)
        print(f"listening on ws://{cfg.host}:{port}/ws", flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        await server.shutdown()
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.conformance.echo_server", description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9001, help="0: any free port (printed)")
    ap.add_argument("--max-message-bytes", type=int, default=DEFAULT_MAX_MESSAGE,
                    help="largest message accepted; larger ones are closed with 1009 (default %(default)s)")
    args = ap.parse_args(argv)
    trio.run(serve, config(args.host, args.port, args.max_message_bytes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
