"""Shared plumbing for the benchmark processes: pinning, limits, resource readings,
the synthetic batch, and a line-oriented JSON control channel over stdin/stdout.

Every bench process (server under test, baseline server, load generator) is a
child of the harness. It prints JSON lines on stdout and takes one-word commands
on stdin, so the harness can drive phases ("publish 20", "reset", "report") and
read numbers from inside the process under test (its own CPU time and RSS).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

#: The synthetic stream: 3 float32 channels x 50 samples = 24 + 50*8 + 3*50*4 = 1024-byte payload.
CHANNELS = 3
SAMPLES = 50
STREAM_ID = "bench/s"


def pin(cpu: int | None) -> None:
    if cpu is None or cpu < 0:
        return
    try:
        avail = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {avail[cpu % len(avail)]})
    except (AttributeError, OSError):
        pass


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds() -> tuple[float, float]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime, ru.ru_stime


def self_stats() -> dict:
    u, s = cpu_seconds()
    return {"cpu_user": u, "cpu_sys": s, "rss": rss_bytes(), "wall": time.time()}


class SyntheticBatches:
    """Batches of SAMPLES samples whose timestamps end at the moment of publishing.

    The samples span the batch window evenly, (t_pub - window, t_pub], so the first
    sample is one window old when the batch is published and the last one is new:
    receipt time - last timestamp is the server's delivery latency, receipt time -
    first timestamp is what the oldest sample in the batch waited in total.
    """

    def __init__(self, window_s: float):
        self.window_s = window_s
        self.offsets = (np.arange(SAMPLES, dtype=np.float64) + 1 - SAMPLES) * (window_s / SAMPLES)
        rng = np.random.default_rng(0)
        self.values = rng.standard_normal((CHANNELS, SAMPLES)).astype(np.float32)

    def make(self) -> tuple[np.ndarray, np.ndarray]:
        return time.time() + self.offsets, self.values


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def pct(xs, p: float) -> float | None:
    if xs is None or len(xs) == 0:
        return None
    return float(np.percentile(np.asarray(xs, dtype=np.float64), p))


class Child:
    """A bench child process driven over stdin/stdout JSON lines."""

    def __init__(self, module: str, args: list[str], *, name: str | None = None, env: dict | None = None):
        self.name = name or module
        e = dict(os.environ)
        e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
        if env:
            e.update(env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args], cwd=REPO, env=e, text=True, bufsize=1,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read(self, timeout: float = 120.0) -> dict:
        import select

        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no answer within {timeout:g} s")
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if not r:
                continue
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.name} exited (rc={self.proc.poll()})")
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line)

    def cmd(self, text: str, timeout: float = 120.0) -> dict:
        self.send(text)
        return self.read(timeout)

    def send(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def close(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
