"""Echo servers of two other Python WebSocket implementations, the peers the
conformance run compares sensorstream with:

    python -m tests.conformance.peers websockets --port P
    python -m tests.conformance.peers trio-websocket --port P

Each prints `listening on ws://H:P/` once it accepts connections, like
tests.conformance.echo_server. Settings are the libraries' defaults except the
message size limit (Autobahn's largest messages are 16 MiB) and, for
`websockets`, compression, which is off so that no implementation negotiates
the 12.x/13.x (permessage-deflate) cases.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from .echo_server import DEFAULT_MAX_MESSAGE


def websockets_echo(host: str, port: int, max_size: int) -> None:
    from websockets.asyncio.server import serve

    async def echo(ws):
        async for msg in ws:
            await ws.send(msg)

    async def main():
        stop = asyncio.get_running_loop().create_future()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
        async with serve(echo, host, port, max_size=max_size, compression=None) as server:
            bound = server.sockets[0].getsockname()[1]
            print(f"listening on ws://{host}:{bound}/", flush=True)
            await stop

    asyncio.run(main())


def trio_websocket_echo(host: str, port: int, max_size: int) -> None:
    import trio
    from trio_websocket import ConnectionClosed, serve_websocket

    async def echo(request):
        ws = await request.accept()
        try:
            while True:
                await ws.send_message(await ws.get_message())
        except ConnectionClosed:
            pass

    async def main():
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(lambda task_status: serve_websocket(
                echo, host, port, ssl_context=None, max_message_size=max_size, task_status=task_status))
            bound = listeners.port
            print(f"listening on ws://{host}:{bound}/", flush=True)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    break
            nursery.cancel_scope.cancel()

    trio.run(main)


PEERS = {"websockets": websockets_echo, "trio-websocket": trio_websocket_echo}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.conformance.peers", description=__doc__.split("\n\n")[0])
    ap.add_argument("peer", choices=sorted(PEERS))
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    ap.add_argument("--max-message-bytes", type=int, default=DEFAULT_MAX_MESSAGE)
    args = ap.parse_args(argv)
    PEERS[args.peer](args.host, args.port, args.max_message_bytes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
