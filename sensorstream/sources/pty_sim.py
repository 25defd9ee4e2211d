"""`sensorstream simulate --pty`: a fake serial device on a pseudo-terminal.

It runs a simulator profile and writes its samples into a pty in one of the
device formats, so the whole serial path (port, parser, reconnect) can be
tried without hardware. `encode_samples` is the pure part (samples -> bytes a
device would send); `run_pty_device` is the loop that paces and writes them.
"""

from __future__ import annotations

import json
import os
import struct
import tty

import numpy as np
import trio

from ..ingest import cobs
from .simulator import Pacer, SignalModel, SimProfile

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
    task_status.started(link or path)
    try:
        while True:
            first, ts = pacer.due()
            if len(ts):
                try:
                    os.write(master, encode_samples(fmt, names, ts, model.generate(first, len(ts)), pacer.wall0))
                except BlockingIOError:
                    pass  # nobody is reading and the pty is full: a real device's bytes would be lost too
            await pacer.wait()
    finally:
        if link and os.path.islink(link):
            os.unlink(link)
        os.close(master)
        os.close(slave)
