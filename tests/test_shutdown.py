"""Ctrl-C on `serve` with a dashboard open: the listener closes first, so the
dashboard's immediate reconnect is refused instead of being accepted and closed
again, and the process is gone quickly."""

from __future__ import annotations

import signal
import time

import trio
import trio_websocket

from .test_cli import read_all, start_serve


async def test_serve_stops_accepting_first_and_exits_fast_while_a_client_keeps_reconnecting():
    proc, port, _ = await start_serve("--simulate", "--log-level", "debug")
    accepted_during_shutdown = 0
    refused = 0
    async with trio_websocket.open_websocket("127.0.0.1", port, "/ws", use_ssl=False) as ws:
        await ws.get_message()  # hello
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            try:
                while True:
                    await ws.get_message()
            except trio_websocket.ConnectionClosed as e:
                assert e.reason.code == 1001
    # What the dashboard does on a 1001: reconnect at once, and again, until the
    # server is gone. Every attempt must be refused.
    with trio.fail_after(10):
        while proc.poll() is None:
            try:
                async with trio_websocket.open_websocket("127.0.0.1", port, "/ws", use_ssl=False, connect_timeout=2) as again:
                    await again.get_message()
                    accepted_during_shutdown += 1
            except (OSError, trio_websocket.HandshakeError, trio_websocket.ConnectionClosed):
                refused += 1
            await trio.sleep(0.01)  # (pacing the attempts, not synchronising)
        rc = await proc.wait()
    elapsed = time.monotonic() - t0
    err = await read_all(proc.stderr)
    assert rc == 0 and b"Traceback" not in err
    assert accepted_during_shutdown == 0
    before, after = err.split(b"shutting down", 1)
    assert b": open (session" in before  # the log does show opens (so their absence below means something)
    assert b"ws_open" not in after and b": open (session" not in after, after.decode()[-2000:]
    # 2.1 s before the listener was really closed (close_timeout + a served reconnect).
    assert elapsed < 1.0, elapsed
