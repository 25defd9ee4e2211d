"""The baseline: the `websockets` library serving the same frames with `broadcast()`.

    python -m bench.baseline_websockets --cpu 0 [--ping-interval S --ping-timeout S]

A small reference server (asyncio, websockets' own keepalive, no compression)
that speaks just enough of the sensorstream protocol for the load generator: a
hello on connect, and a client that sends a subscribe is added to the broadcast
set and gets a `subscribed` reply. Batches are the same 1024-byte payloads,
encoded once by sensorstream.protocol.encode_batch and handed to
`websockets.broadcast(clients, payload)` at the rate the harness sets.

Same stdin commands as bench.server_proc (publish R, stats, closes, quit).
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import gc
import json
import logging
import os
import struct
import sys
import termios
import time

from websockets.asyncio.server import broadcast, serve

from sensorstream.protocol import encode_batch

from .common import SyntheticBatches, emit, pin, raise_nofile, self_stats

HELLO = json.dumps({"type": "hello", "protocol": 1, "server": "websockets-baseline", "session": "x",
                    "heartbeat_s": 2.0, "streams": [{"key": 1, "id": "bench/s"}]})
SUBSCRIBED = json.dumps({"type": "subscribed", "ref": None, "keys": [1]})


async def main(a: argparse.Namespace) -> None:
    clients: set = set()
    closes: list = []
    state = {"rate": 0.0, "published": 0, "frames_sent": 0, "connections": 0}
    changed = asyncio.Event()
    batches = SyntheticBatches(a.window)
    done = asyncio.Event()

    async def handler(ws):
        state["connections"] += 1
        port = ws.remote_address[1] if ws.remote_address else -1
        try:
            await ws.send(HELLO)
            async for msg in ws:
                if isinstance(msg, str) and '"subscribe"' in msg:
                    clients.add(ws)
                    await ws.send(SUBSCRIBED)
        except Exception:
            pass
        finally:
            clients.discard(ws)
            state["connections"] -= 1
            closes.append((port, time.time(), f"close code {ws.close_code}"))

    async def publisher():
        loop = asyncio.get_running_loop()
        seq = 0
        while True:
            rate = state["rate"]
            if rate <= 0:
                changed.clear()
                await changed.wait()
                continue
            t0, k = loop.time(), 0
            while state["rate"] == rate:
                k += 1
                due = t0 + k / rate
                now = loop.time()
                if now - due > 1.0:
                    t0, k = now, 0
                    continue
                if due > now:
                    await asyncio.sleep(due - now)
                ts, vals = batches.make()
                # One broadcast per stream and batch, one frame per call, as its users do.
                for key in range(1, a.streams + 1):
                    payload = encode_batch(key, seq, ts, vals)
                    state["published"] += 1
                    state["frames_sent"] += len(clients)
                    broadcast(clients, payload)
                seq += 1

    def on_command(line: str) -> None:
        words = line.split()
        if not words:
            return
        cmd = words[0]
        if cmd == "quit":
            sys.stdout.flush()
            os._exit(0)  # no graceful close of thousands of bench connections
        elif cmd == "publish":
            state["rate"] = float(words[1])
            changed.set()
            emit({"ok": True})
        elif cmd == "stats":
            if len(words) > 1 and words[1] == "gc":
                gc.collect()
            sndq = queued = 0
            for ws in list(clients):
                tr = ws.transport
                if tr is None or tr.is_closing():
                    continue
                queued += tr.get_write_buffer_size()
                sock = tr.get_extra_info("socket")
                if sock is not None and sock.fileno() >= 0:
                    try:
                        sndq += struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
                    except OSError:
                        pass
            emit({**self_stats(), "kernel_sendq": sndq, "user_queued_bytes": queued, "frames_sent": state["frames_sent"], "published": state["published"],
                  "connections": state["connections"], "dropped": 0, "ping_timeouts": None, "closes": len(closes)})
        elif cmd == "closes":
            emit({"closes": closes})
        else:
            emit({"error": f"unknown command {cmd!r}"})

    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()
    os.set_blocking(fd, False)
    pending = [b""]

    def readable():
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        if not data:
            done.set()
            return
        pending[0] += data
        while b"\n" in pending[0]:
            line, pending[0] = pending[0].split(b"\n", 1)
            on_command(line.decode())

    loop.add_reader(fd, readable)
    async with serve(handler, "127.0.0.1", 0, compression=None, ping_interval=a.ping_interval,
                     ping_timeout=a.ping_timeout, close_timeout=1.0,  # sensorstream's close_timeout default
                     backlog=4096, max_size=64 * 1024) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        task = asyncio.create_task(publisher())
        emit({"port": port, "pid": os.getpid(), "impl": "websockets", "started": time.time()})
        await done.wait()
        task.cancel()
        server.close(close_connections=False)


if __name__ == "__main__":
    # A closed client mid-broadcast is normal here; asyncio and websockets would log every write to it.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    p = argparse.ArgumentParser()
    p.add_argument("--cpu", type=int, default=None)
    p.add_argument("--window", type=float, default=0.05)
    p.add_argument("--ping-interval", type=float, default=5.0)
    p.add_argument("--ping-timeout", type=float, default=10.0)
    p.add_argument("--streams", type=int, default=1, help="payloads broadcast per tick (one broadcast() each)")
    args = p.parse_args()
    pin(args.cpu)
    raise_nofile()
    asyncio.run(main(args))
