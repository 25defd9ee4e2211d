"""The server under test, as a bench child process.

    python -m bench.server_proc --cpu 0 [--ping-interval S --ping-timeout S ...]

Starts the real `Server` (h11 front door, trio-websocket, ClientSession, LocalHub)
with no simulators and one synthetic stream, `bench/s` (3 channels x 50 samples,
1024-byte payload), published straight through `hub.publish` at a rate the
harness sets. With `--bus URL` the hub is a RedisHub: `--role publisher` publishes
`bench/s` to Redis (and serves it back through Redis), `--role gateway` has no
stream of its own and serves what a publisher puts on the bus (bench/bus.py).

With `--flat-fanout` (a diagnostic of bench/fanout.py) the publisher bypasses the
hub and the sessions: it frames each batch once and writes it to every client
socket in a bare `os.write` loop, as bench/baseline_bare.py does, while the rest
of the server (trio's loop, the keeper's Pings and their Pongs, every session's
reader) runs as usual: what this process costs with no per-client fan-out code.
Pass `--heartbeat` large with it (those writes do not count as the sessions' own).

Prints {"port": N}, then answers commands on stdin (bench.common):

    publish R   publish R batches/s from now on (0 stops)
    stats       own CPU time, RSS, frames delivered, connections, drops...
    closes      [[client port, time.time() of the close, reason], ...] from the server's log
    quit
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import gc
import logging
import math
import os
import struct
import termios
import time

import trio

from sensorstream.config import ServerConfig
from sensorstream.protocol import Channel, encode_batch
from sensorstream.server import gctune
from sensorstream.server.app import Server
from sensorstream.server.ws import ws_binary_frame

from .common import CHANNELS, STREAM_ID, SyntheticBatches, stream_id, emit, pin, raise_nofile, self_stats, write_all


class _CloseLog(logging.Handler):
    """Collects the server's own 'ws <peer>: closed (...)' lines with their times."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.closes: list[tuple[int, float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("ws %s: closed") and record.args:
            peer, reason = record.args[0], record.args[1]
            try:
                port = int(str(peer).rsplit(":", 1)[1])
            except (IndexError, ValueError):
                port = -1
            self.closes.append((port, record.created, str(reason)))


def queues(server: Server) -> tuple[int, int]:
    """Bytes waiting in the kernel's send queues of all client sockets (SIOCOUTQ), and
    bytes of data frames waiting in the sessions' own queues (frames are shared between
    clients, so this overstates the memory they hold)."""
    sndq = queued = 0
    for s in server.sessions:
        sock = s.conn.sock
        if sock is not None and sock.fileno() >= 0:
            try:
                sndq += struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
            except OSError:
                pass
        queued += s.n_bytes  # the session keeps the count of its queued data bytes
    return sndq, queued


def _floor_targets(server: Server) -> tuple[bytes, list[int]]:
    """A 1 KiB data frame as a client gets it, and the sockets of every client a
    direct write could go to now."""
    ts, vals = SyntheticBatches(0.05).make()
    wire = ws_binary_frame(encode_batch(1, 0, ts, vals))
    fds = []
    for s in server.sessions:
        d = s._direct
        if d is not None and d.idle and d.ok:
            fds.append(d.sock.fileno())
    return wire, fds


def _write_round(fds: list[int], wire: bytes) -> tuple[int, float]:
    """`wire` written once to every socket: (whole writes, thread CPU seconds)."""
    c0 = time.thread_time()
    n = write_all(fds, wire)
    return n, time.thread_time() - c0


def send_floor(server: Server, rounds: int) -> dict:
    """Diagnostic: the CPU cost of the bare send() of one 1 KiB frame to every client,
    with no server logic around it: the floor any fan-out in this process pays."""
    wire, fds = _floor_targets(server)
    hub, key = server.hub, server.hub.stream_by_id(STREAM_ID).key
    n = pn = 0
    cpu = pcpu = 0.0
    # Interleaved with real publishes of the same size, so both see the same machine.
    for i in range(rounds):
        written, spent = _write_round(fds, wire)
        n += written
        cpu += spent
        c1 = time.thread_time()
        f0 = server.stats.frames_sent_total
        ts, vals = SyntheticBatches(0.05).make()
        hub.publish(key, hub.next_seq(key), ts, vals)
        pcpu += time.thread_time() - c1
        pn += server.stats.frames_sent_total - f0
    return {"floor_writes": n, "floor_us": 1e6 * cpu / max(n, 1), "publish_frames": pn, "publish_us": 1e6 * pcpu / max(pn, 1)}


async def paced_floor(server: Server, rate: float, seconds: float) -> dict:
    """The bare send() floor at the windows' own cadence: every 1/rate s, the same
    1 KiB frame written to every client socket, nothing else (publishing stopped).
    The thread CPU of the write loops alone: the whole process's would also count
    the heartbeats an idle server sends, which a publishing one does not."""
    wire, fds = _floor_targets(server)
    n = 0
    cpu = 0.0
    k = math.floor(trio.current_time() * rate) + 1
    await trio.sleep_until(k / rate)
    end = trio.current_time() + seconds
    while trio.current_time() < end:
        written, spent = _write_round(fds, wire)
        n += written
        cpu += spent
        k += 1
        await trio.sleep_until(k / rate)
    return {"pfloor_writes": n, "pfloor_loop_us": 1e6 * cpu / max(n, 1)}


def _flat_publish(server: Server, fds: list[int], key: int, seq: int, ts, vals) -> None:
    """--flat-fanout: one batch framed once and written to `fds` in a bare loop."""
    wire = ws_binary_frame(encode_batch(key, seq, ts, vals))
    n = write_all(fds, wire)
    st = server.stats
    st.frames_sent_total += n
    st.bytes_sent_total += n * len(wire)
    st.writes_total += len(fds)


def make_config(a: argparse.Namespace) -> ServerConfig:
    cfg = ServerConfig(host="127.0.0.1", port=0, window_s=a.window, ping_interval=a.ping_interval,
                       ping_timeout=a.ping_timeout, send_timeout=a.send_timeout, heartbeat_s=a.heartbeat)
    # Connection caps a deployment may set must not cap the bench (all clients are on 127.0.0.1).
    for f in dataclasses.fields(cfg):
        if f.name.startswith("max_conn") or f.name.endswith("_per_ip") or f.name == "max_clients":
            if isinstance(getattr(cfg, f.name), int):
                setattr(cfg, f.name, 1_000_000)
    return cfg


async def main(a: argparse.Namespace) -> None:
    closelog = _CloseLog()
    app_log = logging.getLogger("sensorstream.server.app")
    app_log.setLevel(logging.INFO)
    app_log.addHandler(closelog)
    app_log.propagate = False

    cfg = make_config(a)
    cfg.bus = a.bus
    server = Server(cfg)
    hub = server.hub
    # --role gateway (with --bus): no stream of its own, it serves what the publisher puts on the bus.
    keys = [] if a.role == "gateway" else [
        hub.add_stream(stream_id(i), [Channel(f"c{c}") for c in range(CHANNELS)], rate_hz=1000).key for i in range(a.streams)]
    batches = SyntheticBatches(a.window)
    state = {"rate": 0.0, "published": 0, "publish_cpu": 0.0, "publish_frames": 0}
    changed = trio.Event()
    snaps: list = []
    flat_fds: list[int] = []  # --flat-fanout: the sockets, taken when publishing starts

    async def publisher(key: int):
        """One stream's source. Several streams' publishers wake on the same clock
        grid (multiples of 1/rate), as the server's own sources do with one window."""
        nonlocal changed
        seq = 0
        while True:
            rate = state["rate"]
            if rate <= 0:
                await changed.wait()
                continue
            k = math.floor(trio.current_time() * rate)
            while state["rate"] == rate:
                k += 1
                now = trio.current_time()
                if now * rate - k > rate:  # hopelessly behind (over a second): do not burst to catch up
                    k = math.floor(now * rate)
                    continue
                await trio.sleep_until(k / rate)
                ts, vals = batches.make()
                c0, f0 = time.thread_time(), server.stats.frames_sent_total
                if a.flat_fanout:
                    _flat_publish(server, flat_fds, key, seq, ts, vals)
                else:
                    hub.publish(key, seq, ts, vals)
                # CPU spent inside publish (encode + fan-out) and the frames it wrote at once.
                state["publish_cpu"] += time.thread_time() - c0
                state["publish_frames"] += server.stats.frames_sent_total - f0
                seq += 1
                state["published"] += 1

    async def control():
        nonlocal changed
        stdin = trio.lowlevel.FdStream(os.dup(0))
        buf = b""
        while True:
            data = await stdin.receive_some(65536)
            if not data:
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                words = line.decode().split()
                if not words:
                    continue
                cmd = words[0]
                if cmd == "quit":
                    return
                if cmd == "publish":
                    if a.flat_fanout:
                        flat_fds[:] = _floor_targets(server)[1]
                    state["rate"] = float(words[1])
                    changed.set()
                    changed = trio.Event()
                    emit({"ok": True})
                elif cmd == "stats":
                    if len(words) > 1 and words[1] == "gc":
                        gc.collect()
                    st = server.stats
                    sndq, queued = queues(server)
                    bus = hub.bus_status()
                    if bus is not None:
                        bus = {**bus, "history_reads": hub.bus.history_reads, "written": hub.bus.written}
                    emit({**self_stats(), "bus": bus, "kernel_sendq": sndq, "user_queued_bytes": queued, "frames_sent": st.frames_sent_total, "bytes_sent": st.bytes_sent_total,
                          "published": state["published"], "connections": st.connections_open,
                          "publish_cpu": state["publish_cpu"], "publish_frames": state["publish_frames"],
                          "dropped": st.dropped_batches_total, "ping_timeouts": st.ping_timeouts_total,
                          "send_timeouts": st.send_timeouts_total, "closes": len(closelog.closes), "writes": st.writes_total})
                elif cmd == "floor":
                    emit(send_floor(server, int(words[1]) if len(words) > 1 else 20))
                elif cmd == "pfloor":
                    emit(await paced_floor(server, float(words[1]), float(words[2])))
                elif cmd == "snap":  # with PYTHONTRACEMALLOC set: where memory goes (diagnostic)
                    import tracemalloc
                    snaps.append(tracemalloc.take_snapshot())
                    emit({"ok": True})
                elif cmd == "snapdiff":
                    import tracemalloc
                    now = tracemalloc.take_snapshot()
                    top = now.compare_to(snaps[0], words[1] if len(words) > 1 else "lineno")[:40]
                    emit({"top": [[str(t.traceback), t.size_diff, t.count_diff] for t in top]})
                elif cmd == "closes":
                    emit({"closes": closelog.closes})
                else:
                    emit({"error": f"unknown command {cmd!r}"})

    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.run)
        for key in keys:
            nursery.start_soon(publisher, key)
        gctune.tune()  # as `serve` does once it listens
        emit({"port": port, "pid": os.getpid(), "impl": "sensorstream", "started": time.time()})
        await control()
        nursery.cancel_scope.cancel()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--cpu", type=int, default=None)
    p.add_argument("--window", type=float, default=0.05)
    p.add_argument("--ping-interval", type=float, default=5.0)
    p.add_argument("--ping-timeout", type=float, default=10.0)
    p.add_argument("--send-timeout", type=float, default=10.0)
    p.add_argument("--heartbeat", type=float, default=2.0)
    p.add_argument("--bus", default=None, help="redis://...: publish (or, --role gateway, serve) through Redis (bench/bus.py)")
    p.add_argument("--role", default="local", choices=["local", "publisher", "gateway"])
    p.add_argument("--streams", type=int, default=1, help="streams published on the same clock grid (bench/s, bench/s2, ...)")
    p.add_argument("--flat-fanout", action="store_true", help="diagnostic: bypass hub and sessions, write each batch in a bare loop")
    return p.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    pin(args.cpu)
    raise_nofile()
    trio.run(main, args)
