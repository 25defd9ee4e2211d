"""16 virtual serial ports at 921,600 baud: does every line arrive?

Each port is a pseudo-terminal. This process plays 16 devices, writing CSV lines
`seq,a,b,c` into the pty masters at 921,600 baud's byte rate (92,160 bytes/s per
port: 8N1 framing, 10 bits a byte), and is also the WebSocket client that checks
every seq of every port arrives, in order, exactly once. The server runs in its
own process (`sensorstream serve --serial PTY ...`), pinned to another core.

Baseline in the same run: a minimal reader process that only `os.read`s the
same 16 ptys and counts newlines (the least any gateway must do), under the
same traffic. The figure reported is server CPU as a ratio of that reader's.

    python -m bench.serial_ports [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import tty

import numpy as np
import trio
import trio_websocket

from .common import REPO, pin

BAUD = 921_600
PORTS = 16
BYTES_PER_S = BAUD / 10

_READER = r"""
import os, select, sys, time
paths = sys.argv[1:]
fds = [os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY) for p in paths]
poll = select.poll()
for fd in fds:
    poll.register(fd, select.POLLIN)
lines = 0
print("ready", flush=True)
while True:
    for fd, ev in poll.poll(200):
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            continue
        lines += data.count(b"\n")
"""


def _cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Devices:
    def __init__(self, n: int):
        self.masters, self.slaves, self.paths = [], [], []
        for _ in range(n):
            m, s = os.openpty()
            tty.setraw(s)
            os.set_blocking(m, False)
            self.masters.append(m)
            self.slaves.append(s)
            self.paths.append(os.ttyname(s))
        self.seq = [0] * n
        self.pending = [b""] * n
        self.written_lines = [0] * n
        self.written_bytes = 0
        self.stalled_bytes = 0

    def close(self):
        for fd in self.masters + self.slaves:
            os.close(fd)

    def junk(self):
        # The parser discards the first line after the port opens (usually half a line).
        for m in self.masters:
            os.write(m, b"junk\n")

    def tick(self, budget: int, rng) -> None:
        """Write `budget` bytes of lines to every port (what the UART would have sent)."""
        for i, m in enumerate(self.masters):
            buf = self.pending[i]
            while len(buf) < budget:
                s = self.seq[i]
                a, b, c = rng.standard_normal(3)
                buf += f"{s},{a:.4f},{b:.4f},{c:.4f}\n".encode()
                self.seq[i] += 1
            # Only whole lines count as written; the tail waits for the next tick.
            cut = buf.rfind(b"\n", 0, budget) + 1
            chunk, rest = buf[:cut], buf[cut:]
            try:
                n = os.write(m, chunk)
            except BlockingIOError:
                n = 0
            if n < len(chunk):
                self.stalled_bytes += len(chunk) - n
                rest = chunk[n:] + rest
                chunk = chunk[:n]
            self.written_lines[i] += chunk.count(b"\n")
            self.written_bytes += len(chunk)
            self.pending[i] = rest


async def _drive(dev: Devices, seconds: float, tick: float = 0.01, on_tick=None):
    rng = np.random.default_rng(1)
    start = trio.current_time()
    t = start
    sent = 0
    while trio.current_time() - start < seconds:
        # Bytes due from the elapsed time, not per tick: a late tick catches up,
        # so the line rate is the UART's even when this process is descheduled.
        due = int(BYTES_PER_S * (trio.current_time() - start + tick))
        budget, sent = due - sent, due
        dev.tick(budget, rng)
        if on_tick:
            on_tick()
        t += tick
        await trio.sleep_until(t)


async def _baseline(seconds: float, cpu: int) -> dict:
    dev = Devices(PORTS)
    proc = await trio.lowlevel.open_process([sys.executable, "-c", _READER, *dev.paths], stdout=subprocess.PIPE,
                                            preexec_fn=lambda: pin(cpu))
    try:
        await proc.stdout.receive_some(64)
        c0, t0 = _cpu_of(proc.pid), time.monotonic()
        await _drive(dev, seconds)
        cpu_s, wall = _cpu_of(proc.pid) - c0, time.monotonic() - t0
    finally:
        proc.kill()
        await proc.wait()
        dev.close()
    return {"cpu_fraction": cpu_s / wall, "lines": sum(dev.written_lines)}


async def _server(seconds: float, cpu: int) -> dict:
    dev = Devices(PORTS)
    # A deep client queue: this measures ingest, so the one bench client (which
    # shares a core with the 16 writers) must not lose batches to backpressure.
    # Any it does lose are reported separately as client_dropped_batches.
    args = [sys.executable, "-m", "sensorstream", "serve", "--port", "0", "--log-level", "warning", "--queue-batches", "8192"]
    for p in dev.paths:
        args += ["--serial", f"{p}@{BAUD}"]
    proc = await trio.lowlevel.open_process(args, stdout=subprocess.PIPE, cwd=REPO, preexec_fn=lambda: pin(cpu))
    try:
        out = b""
        with trio.fail_after(30):
            while b"dashboard at" not in out:
                out += await proc.stdout.receive_some(4096)
        port = int(re.search(rb":(\d+)/", out).group(1))
        received: dict[int, list[np.ndarray]] = {}
        dropped = [0]
        names: dict[int, str] = {}
        async with trio_websocket.open_websocket("127.0.0.1", port, "/ws", use_ssl=False, max_message_size=1 << 24) as ws:
            json.loads(await ws.get_message())
            await ws.send_message(json.dumps({"type": "subscribe", "ref": 1, "streams": ["serial/*"]}))

            async def reader():
                while True:
                    m = await ws.get_message()
                    if isinstance(m, bytes):
                        c, key, n = int.from_bytes(m[2:4], "little"), int.from_bytes(m[4:8], "little"), int.from_bytes(m[8:12], "little")
                        vals = np.frombuffer(m, "<f4", c * n, 24 + 8 * n).reshape(c, n)
                        received.setdefault(key, []).append(vals[0].copy())
                    else:
                        msg = json.loads(m)
                        if msg["type"] == "dropped":
                            dropped[0] += msg["batches"]
                        if msg["type"] == "stream":
                            names[msg["stream"]["key"]] = msg["stream"]["id"]

            async with trio.open_nursery() as n:
                n.start_soon(reader)
                dev.junk()
                c0, t0 = _cpu_of(proc.pid), time.monotonic()
                await _drive(dev, seconds)
                cpu_s, wall = _cpu_of(proc.pid) - c0, time.monotonic() - t0
                # Let the last batches through: wait until every written line arrived, or 5 s.
                want = sum(dev.written_lines)
                with trio.move_on_after(5):
                    while sum(sum(len(a) for a in v) for v in received.values()) < want:
                        await trio.sleep(0.05)
                n.cancel_scope.cancel()
    finally:
        proc.terminate()
        with trio.move_on_after(5):
            await proc.wait()
        dev.close()
    lost = dup = 0
    for key, parts in received.items():
        seqs = np.concatenate(parts).astype(np.int64)
        dup += len(seqs) - len(np.unique(seqs))
    got = sum(len(np.unique(np.concatenate(p))) for p in received.values())
    lost = sum(dev.written_lines) - got
    return {"cpu_fraction": cpu_s / wall, "lines_written": sum(dev.written_lines), "lines_received": got,
            "lines_lost": lost, "duplicates": dup, "client_dropped_batches": dropped[0], "ports_seen": len(received),
            "achieved_baud_per_port": dev.written_bytes * 10 / PORTS / wall,
            "writer_stalled_bytes": dev.stalled_bytes}


def run(quick: bool = False) -> dict:
    seconds = 3.0 if quick else 20.0
    ncpu = len(os.sched_getaffinity(0))
    server_cpu = 0
    pin(1 if ncpu > 1 else 0)  # this process (devices + client) on the other core

    async def main():
        base = await _baseline(seconds, server_cpu)
        srv = await _server(seconds, server_cpu)
        return base, srv

    base, srv = trio.run(main)
    ratio = srv["cpu_fraction"] / base["cpu_fraction"] if base["cpu_fraction"] else float("nan")
    return {
        "ports": PORTS, "baud": BAUD, "seconds": seconds,
        "server_cpu_pct": round(100 * srv["cpu_fraction"], 1),
        "baseline_reader_cpu_pct": round(100 * base["cpu_fraction"], 1),
        "cpu_ratio_vs_reader": round(ratio, 2),
        "lines_written": srv["lines_written"], "lines_lost": srv["lines_lost"], "duplicates": srv["duplicates"],
        "client_dropped_batches": srv["client_dropped_batches"],
        "ports_seen": srv["ports_seen"], "writer_stalled_bytes": srv["writer_stalled_bytes"],
        "achieved_baud_per_port": round(srv["achieved_baud_per_port"]),
        "lines_per_s": round(srv["lines_written"] / seconds),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    r = run(a.quick)
    width = max(map(len, r))
    for k, v in r.items():
        print(f"{k.ljust(width)}  {v}")


if __name__ == "__main__":
    main()
