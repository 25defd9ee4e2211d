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


def stream_id(i: int) -> str:
    """The i-th synthetic stream (0: STREAM_ID); a client of several subscribes to `bench/*`."""
    return STREAM_ID if i == 0 else f"{STREAM_ID}{i + 1}"


def machine_cpus() -> list[int]:
    """The CPUs this machine lets us run on. Not this process's affinity: a child
    inherits its parent's pinning (the harness pins itself to CLIENT_CPU), and
    choosing from that set would put the server on the load generator's core."""
    try:
        text = open("/sys/fs/cgroup/cpuset.cpus.effective").read().strip()
    except OSError:
        text = ""
    cpus: list[int] = []
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus or list(range(os.cpu_count() or 1))


def pin(cpu: int | None) -> None:
    if cpu is None or cpu < 0:
        return
    avail = machine_cpus()
    try:
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


def write_all(fds: list[int], wire: bytes) -> int:
    """`wire` written once to every descriptor in a bare loop: the floor's writes,
    nothing per client around them. Returns how many writes went out whole."""
    n = 0
    size = len(wire)
    for fd in fds:
        try:
            n += os.write(fd, wire) == size
        except OSError:  # full or gone: the floor does not retry
            pass
    return n


def command_lines(buf: bytes, data: bytes) -> tuple[list[str], bytes]:
    """The whole command lines in what has arrived on stdin so far, and what is left of it."""
    *lines, rest = (buf + data).split(b"\n")
    return [line.decode().strip() for line in lines], rest


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

    def cpus(self) -> str | None:
        """The CPUs the process may run on now (after it pinned itself), as the kernel says."""
        try:
            for line in open(f"/proc/{self.proc.pid}/status"):
                if line.startswith("Cpus_allowed_list:"):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return None

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


# ------------------------------------------------------------------ a server and its clients

SERVER_CPU = 0
CLIENT_CPU = 1

IMPLS = {"sensorstream": "bench.server_proc", "websockets": "bench.baseline_websockets", "bare": "bench.baseline_bare"}


class Cluster:
    """One server process (sensorstream or the websockets baseline) and the load
    generator processes holding `clients` connections to it.

    Server pinned to SERVER_CPU, load generators to CLIENT_CPU, so the client
    side never competes with the server for its core (the machine's other tenants still may).
    Load generators busy-poll by default: over loopback, a send() to a sleeping
    receiver also pays for waking it (a cross-core wake-up, ~4 µs here), a cost
    a server sending over a real network does not have (and they poll with poll(2),
    not epoll, for the same reason: see bench/loadgen.py). `timestamps=False` for
    benches that report no latency: receive timestamps cost the sender too.
    """

    def __init__(self, impl: str, clients: int, *, procs: int = 1, stalled: int = 0,
                 ping_interval: float = 5.0, ping_timeout: float = 10.0, send_timeout: float = 10.0,
                 window: float = 0.05, busy_poll: bool = True, timestamps: bool = True, streams: int = 1,
                 server_flags: tuple[str, ...] = ()):
        self.impl = impl
        self.clients = clients
        flags = ["--cpu", str(SERVER_CPU), "--window", str(window), "--ping-interval", str(ping_interval),
                 "--ping-timeout", str(ping_timeout), "--streams", str(streams)]
        if impl == "sensorstream":
            flags += ["--send-timeout", str(send_timeout)]
        self.srv = Child(IMPLS[impl], flags + list(server_flags), name=impl)
        self.lgs: list[Child] = []
        try:
            hello = self.srv.read(60)
            self.port = hello["port"]
            self.pid = hello["pid"]
            per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
            st = [stalled // procs + (1 if i < stalled % procs else 0) for i in range(procs)]
            for i, n in enumerate(per):
                if n:
                    self.lgs.append(Child("bench.loadgen", ["--port", str(self.port), "--clients", str(n), "--stalled", str(st[i]),
                                                            "--cpu", str(CLIENT_CPU)] + (["--busy-poll"] if busy_poll else [])
                                          + (["--stream", STREAM_ID[:STREAM_ID.index("/") + 1] + "*"] if streams > 1 else [])
                                          + ([] if timestamps else ["--no-timestamps"]),
                                          name=f"loadgen{i}"))
            self.ready = self.failed = 0
            for lg in self.lgs:
                r = lg.read(300)
                self.ready += r["ready"]
                self.failed += r["failed"]
            # Recorded with every result: a bench whose server shares the load
            # generator's core measures the wrong thing.
            self.placement = {"server": self.srv.cpus(), "loadgen": sorted({lg.cpus() for lg in self.lgs if lg.cpus()})}
        except BaseException:
            self.close()
            raise

    def publish(self, rate: float) -> None:
        self.srv.cmd(f"publish {rate:g}")

    def stats(self, gc: bool = False) -> dict:
        return self.srv.cmd("stats gc" if gc else "stats")

    def reset(self) -> None:
        for lg in self.lgs:
            lg.cmd("reset")

    def report(self) -> dict:
        return merge_reports([lg.cmd("report", 120) for lg in self.lgs])

    def close(self) -> None:
        try:
            self.srv.send("publish 0")
        except (BrokenPipeError, OSError):
            pass
        for lg in self.lgs:
            lg.close()
        self.srv.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def merge_reports(reps: list[dict]) -> dict:
    from .loadgen import decode_array

    out = {"frames": sum(r["frames"] for r in reps), "bytes": sum(r["bytes"] for r in reps),
           "open": sum(r["open"] for r in reps), "cpu": sum(r["cpu"] for r in reps),
           "closed_by_server": [c for r in reps for c in r["closed_by_server"]],
           "t0": min(r["t0"] for r in reps), "t1": max(r["t1"] for r in reps)}
    for k in ("lat_last", "lat_first", "lat_app"):
        out[k] = np.concatenate([decode_array(r[k]) for r in reps]) if reps else np.zeros(0)
    spread: dict[str, list] = {}
    for r in reps:
        for seq, (lo, hi, n) in r["spread"].items():
            s = spread.get(seq)
            if s is None:
                spread[seq] = [lo, hi, n]
            else:
                s[0], s[1], s[2] = min(s[0], lo), max(s[1], hi), s[2] + n
    out["spread"] = spread
    return out


def cpu_delta(s0: dict, s1: dict) -> float:
    return (s1["cpu_user"] + s1["cpu_sys"]) - (s0["cpu_user"] + s0["cpu_sys"])


def ratio(a, b) -> float | None:
    if a is None or b is None or not b:
        return None
    return a / b


def median(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(np.median(xs)) if xs else None


def row(section: str, metric: str, ours, base, target: str = "", ok: bool | None = None, unit: str = "",
        ratio_value: float | None = None) -> dict:
    """One line of the results table: our figure, the baseline's, their ratio (ours/baseline)."""
    return {"section": section, "metric": metric, "unit": unit, "sensorstream": ours, "baseline": base,
            "ratio": ratio_value if ratio_value is not None else ratio(ours, base), "target": target, "ok": ok}
