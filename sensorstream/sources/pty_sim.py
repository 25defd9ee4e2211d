"""`sensorstream simulate --pty`: a fake serial device on a pseudo-terminal.

It runs a simulator profile and writes its samples into a pty in one of the
device formats, so the whole serial path (port, parser, reconnect) can be
tried without hardware. `encode_samples` is the pure part (samples -> bytes a
device would send); `run_pty_device` is the loop that paces and writes them.
It also reads what is written to the pty, like a device with a command line:
`rate <Hz>`, `spike` and `help`, each ended by CR or LF, are answered with a
line (`OK rate 500`) between the samples (see simulator.SimCommands).
"""

from __future__ import annotations

import json
import os
import struct
import tty

import numpy as np
import trio

from ..ingest import cobs
from .simulator import Pacer, SignalModel, SimCommands, SimProfile

FORMATS = ("labels", "csv", "json", "cobs")


def encode_samples(fmt: str, names: list[str], ts: np.ndarray, values: np.ndarray, t0: float) -> bytes:
    """Lines (or COBS frames) for samples at Unix times `ts`; device clock = ms/µs since `t0`."""
    n = len(ts)
    if fmt == "labels":
        return b"".join(
            (" ".join(f"{name}:{values[c, i]:.5g}" for c, name in enumerate(names)) + "\r\n").encode() for i in range(n)
        )
    if fmt == "csv":
        return b"".join((",".join(f"{values[c, i]:.5g}" for c in range(len(names))) + "\n").encode() for i in range(n))
    if fmt == "json":
        ms = (ts - t0) * 1000
        return b"".join(
            (json.dumps({"t": round(float(ms[i]), 3), **{name: round(float(values[c, i]), 5) for c, name in enumerate(names)}}) + "\n").encode()
            for i in range(n)
        )
    if fmt == "cobs":
        rec = struct.Struct("<I" + "f" * len(names))
        us = ((ts - t0) * 1e6).astype(np.uint64) & 0xFFFFFFFF
        return b"".join(cobs.encode(rec.pack(int(us[i]), *map(float, values[:, i]))) + b"\x00" for i in range(n))
    raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")


def cobs_struct(n_channels: int) -> str:
    return "<I" + "f" * n_channels


async def run_pty_device(profile: SimProfile, fmt: str, *, seed: int = 0, link: str | None = None,
                         tick_s: float = 0.02, task_status=trio.TASK_STATUS_IGNORED) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)  # no echo, no newline translation: bytes go through as a device sends them
    os.set_blocking(master, False)
    path = os.ttyname(slave)
    if link:
        tmp = f"{link}.tmp{os.getpid()}"
        os.symlink(path, tmp)
        os.replace(tmp, link)
    model = SignalModel(profile, seed)
    names = [c.name for c in profile.channels]
    pacer = Pacer(profile.rate_hz, tick_s)
    commands = SimCommands(model, pacer)
    replies: list[str] = []
    task_status.started(link or path)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read_commands, master, commands, replies)
            while True:
                first, ts = pacer.due()
                out = b""
                if len(ts):
                    out = encode_samples(fmt, names, ts, model.generate(first, len(ts)), pacer.wall0)
                if replies and fmt != "cobs":  # a binary device has no text console
                    out += "".join(r + "\r\n" for r in replies).encode()
                replies.clear()
                if out:
                    try:
                        os.write(master, out)
                    except BlockingIOError:
                        pass  # nobody is reading and the pty is full: a real device's bytes would be lost too
                await pacer.wait()
    finally:
        if link and os.path.islink(link):
            os.unlink(link)
        os.close(master)
        os.close(slave)


async def _read_commands(master: int, commands: SimCommands, replies: list[str]) -> None:
    """Lines written to the device, answered in `replies` (written with the next samples)."""
    pending = b""
    while True:
        await trio.lowlevel.wait_readable(master)
        try:
            data = os.read(master, 4096)
        except BlockingIOError:
            continue
        except OSError:
            return  # the other side closed (EIO): nothing more will come
        data = pending + data
        end = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1  # the complete lines; SimCommands splits them
        replies.extend(commands.feed(data[:end]))
        pending = data[end:][-1024:]  # a line without an end is kept only so long
