"""Connection churn leaves nothing behind: no tasks, no fds, no hub state, bounded memory.

Two thousand connect / subscribe / disconnect cycles, ending every way a
client can end: a clean close handshake, a FIN with no close frame, and an
RST (SO_LINGER 0) with no close frame, some of them mid-handshake.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import struct
import time

import trio

from .wire import masked_frame, upgrade_request

CYCLES = 2000
CONCURRENCY = 24


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _task_count() -> int:
    n = 0
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        t = stack.pop()
        n += 1
        for nursery in t.child_nurseries:
            stack.extend(nursery.child_tasks)
    return n


async def _cycle(port: int, i: int) -> None:
    sock = trio.socket.socket()
    await sock.connect(("127.0.0.1", port))
    how = i % 4
    try:
        if how == 3 and i % 8 == 3:
            # Gone during the HTTP head, with an RST.
            await sock.send(upgrade_request(port)[:40])
            return
        await sock.send(upgrade_request(port))
        buf = b""
        sub = masked_frame(json.dumps({"type": "subscribe", "ref": i, "streams": ["sim/*"], "history_s": 0.2}).encode())
        sent = False
        with trio.fail_after(10):
            while b'"type":"subscribed"' not in buf:
                chunk = await sock.recv(65536)
                assert chunk, "server closed early"
                buf += chunk
                if not sent and b"\r\n\r\n" in buf:
                    assert buf.startswith(b"HTTP/1.1 101"), buf[:100]
                    await sock.send(sub)
                    sent = True
        if how == 0:
            # Clean: close frame, then wait for the server's close and EOF.
            await sock.send(masked_frame(struct.pack("!H", 1000), opcode=8))
            with trio.fail_after(10):
                while await sock.recv(65536):
                    pass
    finally:
        if how >= 2:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
        sock.close()  # how == 1: FIN, no close frame


async def _churn(port: int, n: int, start: int = 0) -> None:
    limit = trio.Semaphore(CONCURRENCY)

    async def one(i):
        async with limit:
            await _cycle(port, i)

    async with trio.open_nursery() as nursery:
        for i in range(start, start + n):
            await limit.acquire()
            limit.release()
            nursery.start_soon(one, i)


async def _quiesce(server) -> None:
    with trio.fail_after(10):
        await server.wait_sessions(lambda s: not s)
        while server.stats.tcp_connections_open or server._per_address.counts:
            await trio.sleep(0.01)
    # Let cancelled tasks finish unwinding.
    for _ in range(20):
        await trio.sleep(0)


async def test_connection_churn_leaves_nothing_behind(make_server):
    server = await make_server(simulate=True, history_s=1.0, ping_interval=60)
    port = server.port
    await _churn(port, 200)  # warm-up: caches, lazily built things
    await _quiesce(server)
    # Sockets other tests dropped without closing are closed by the collector,
    # whenever it runs: now, not in the middle of the count.
    gc.collect()
    fds, tasks, rss = _open_fds(), _task_count(), _rss_mb()

    cpu0 = time.process_time()
    peak = 0

    async def sample():
        nonlocal peak
        while True:
            peak = max(peak, _task_count())
            await trio.sleep(0.01)

    async with trio.open_nursery() as n:
        n.start_soon(sample)
        await _churn(port, CYCLES, start=200)
        n.cancel_scope.cancel()
    cpu = time.process_time() - cpu0
    assert peak > tasks + CONCURRENCY // 2  # the count does see connection tasks
    await _quiesce(server)

    total = CYCLES + 200
    gone_early = sum(1 for i in range(total) if i % 8 == 3)  # never opened a session
    assert server.stats.connections_total == total - gone_early
    assert not server.sessions and not server.hub._attached and not server.hub._patterns
    assert server.hub.subscriber_count() == 0
    with trio.fail_after(5):
        while _open_fds() != fds:
            await trio.sleep(0.05)
    assert _task_count() == tasks
    grown = _rss_mb() - rss
    # ~5 MiB here (allocator slack). A session kept alive per cycle (~10 KiB)
    # would be 20 MiB: the keeper's heap once did exactly that until ended
    # sessions' pings fell due, 60 s later.
    assert grown < 10, f"RSS grew {grown:.1f} MiB over {CYCLES} cycles"
    assert len(server.keeper._heap) <= 2 * server.keeper.COMPACT_ABOVE + 2
    # CPU time, not wall time: a loaded CI machine must not fail this.
    assert cpu < 30
    # Every ending was seen for what it was.
    closed = server.stats.closed
    assert closed == {1000: total // 4, 1006: total - total // 4 - gone_early}
