"""Helpers for the dashboard's real-browser tests and benchmark.

* ``chromium_path()`` / ``launch_chromium()``: Debian's chromium through Playwright.
* ``ServerProcess``: start ``python -m sensorstream serve ...`` (or the contract fake
  below) on a free port, wait for its URL with a bounded deadline, kill/restart it.
* ``WsClient``: a tiny synchronous WebSocket client (``websockets.sync``) that speaks
  wire contract v1, to compare what the page shows with what the server sent.
* A *contract fake* (``python tests/browser_util.py fake --port N``): a small
  asyncio/websockets server that implements wire contract v1 with simulated
  streams. It exists so the dashboard can be developed and its fault paths
  (seq jumps, ``dropped``) exercised deterministically; the browser tests use
  the real server for everything the real server can do.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "dashboard"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str | None:
    return CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")


def require_browser():
    """For a browser test module: playwright's sync API, or a skip (outside CI) or a
    failure (in CI) when chromium or playwright is missing."""
    import pytest

    in_ci = os.environ.get("CI") == "true"
    if in_ci and not os.path.exists(CHROMIUM):
        pytest.fail(f"chromium is required in CI ({CHROMIUM} missing)", pytrace=False)
    if chromium_path() is None:
        pytest.skip(f"chromium not installed ({CHROMIUM})", allow_module_level=True)
    try:
        from playwright import sync_api
    except ImportError:
        if in_ci:
            pytest.fail("playwright is required in CI (pip install -e .[test])", pytrace=False)
        pytest.skip("playwright not installed", allow_module_level=True)
    return sync_api


def chromium_session():
    """A launched chromium for the length of a (module-scoped) fixture."""
    from playwright import sync_api

    with sync_api.sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


def launch_chromium(playwright, extra_args: list[str] | None = None):
    path = chromium_path()
    return playwright.chromium.launch(
        executable_path=path, headless=True, args=CHROMIUM_ARGS + list(extra_args or [])
    )


def free_port() -> int:
    """A port that is free now and stays free until the server binds it (a second
    or so later, and again on a restart). Port 0 would pick one from the kernel's
    ephemeral range, which the outgoing connections made meanwhile (health polls,
    the browser) draw from too; so pick one just below that range."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 10_000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


URL_RE = re.compile(r"http://127\.0\.0\.1:(\d+)/")


class ServerProcess:
    """A server subprocess on a fixed port; ``start()`` waits until /healthz answers."""

    def __init__(self, args: list[str], port: int | None = None, fake: bool = False, env=None):
        self.port = port or free_port()
        self.fake = fake
        self.args = list(args)
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.output: list[str] = []
        self._reader: threading.Thread | None = None
        self._url_seen = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def command(self) -> list[str]:
        if self.fake:
            return [sys.executable, str(Path(__file__).resolve()), "fake", "--port", str(self.port), *self.args]
        return [
            sys.executable, "-m", "sensorstream", "serve",
            "--host", "127.0.0.1", "--port", str(self.port), *self.args,
        ]

    def _read(self, stream) -> None:
        for line in iter(stream.readline, ""):
            self.output.append(line)
            if URL_RE.search(line):
                self._url_seen.set()

    def start(self, timeout: float = 20.0) -> "ServerProcess":
        self._url_seen.clear()
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = subprocess.Popen(
            self.command(), cwd=REPO, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{''.join(self.output)}")
            if self._url_seen.is_set() or self._healthy():
                if self._healthy():
                    return self
            self._url_seen.wait(0.05)
        self.stop()
        raise TimeoutError(f"server did not answer /healthz within {timeout}s:\n{''.join(self.output)}")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "healthz", timeout=0.5) as r:
                return r.status == 200
        except Exception:
            return False

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit and for its last output line to be read: the
        reader thread may still be draining the pipe when the process is gone."""
        rc = self.proc.wait(timeout)
        self._reader.join(timeout)
        return rc

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()  # abrupt on purpose: the dashboard must survive a dead server
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# --------------------------------------------------------------------------- python client


HEADER = struct.Struct("<BBHIIIQ")


def decode_frame(buf: bytes) -> dict:
    kind, flags, c, key, n, _res, seq = HEADER.unpack_from(buf, 0)
    ts = struct.unpack_from(f"<{n}d", buf, 24)
    vals = struct.unpack_from(f"<{c * n}f", buf, 24 + 8 * n)
    return {
        "kind": kind, "flags": flags, "key": key, "seq": seq, "ts": list(ts),
        "values": [list(vals[i * n:(i + 1) * n]) for i in range(c)],
    }


class WsClient:
    """Synchronous contract-v1 client built on ``websockets.sync``."""

    def __init__(self, url: str):
        from websockets.sync.client import connect

        ws_url = url.replace("http://", "ws://").rstrip("/") + "/ws"
        try:
            self.ws = connect(ws_url, max_size=2**24, compression=None, legacy=True)
        except TypeError:  # websockets < 16 has no `legacy`
            self.ws = connect(ws_url, max_size=2**24, compression=None)
        import json

        self._json = json
        self.hello = json.loads(self.ws.recv(timeout=10))
        assert self.hello["type"] == "hello", self.hello

    def send(self, obj: dict) -> None:
        self.ws.send(self._json.dumps(obj))

    def recv(self, timeout: float = 5.0):
        msg = self.ws.recv(timeout=timeout)
        if isinstance(msg, bytes):
            return decode_frame(msg)
        return self._json.loads(msg)

    def close(self) -> None:
        self.ws.close()


# --------------------------------------------------------------------------- contract fake


def _fake_main(argv: list[str]) -> int:  # pragma: no cover - a dev tool, exercised by hand/bench
    import argparse
    import asyncio
    import fnmatch
    import json
    import math
    import mimetypes
    import random
    from collections import deque

    from websockets.asyncio.server import serve
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--heartbeat", type=float, default=2.0)
    ap.add_argument("--wide", default="", help="C:RATE adds sim/wide with C channels at RATE Hz")
    ap.add_argument("--late", default="", help="ID:SECONDS adds a stream after SECONDS")
    ap.add_argument("--skip-every", type=int, default=0, help="skip one seq every N batches (sim/env, sim/wide)")
    ap.add_argument("--dropped-every", type=int, default=0, help="announce+skip one batch every N (sim/power)")
    ap.add_argument("--no-env", action="store_true")
    ap.add_argument("--keys", default="1,2,3", help="keys of sim/env,sim/imu,sim/power (a restart may hand out others)")
    ap.add_argument("--epoch", default="", help="the streams' epoch (a restart is a new one)")
    a = ap.parse_args(argv)

    BATCH_S = 0.05

    class Stream:
        def __init__(self, key, sid, chans, rate):
            self.key, self.id, self.chans, self.rate = key, sid, chans, rate
            self.seq = 0
            self.hist: deque = deque()
            self.t_next = time.time()
            self.phase = random.random() * 6

        def info(self):
            return {
                "key": self.key, "id": self.id, "device": self.id.split("/")[0],
                "channels": [{"name": n, "unit": u} for n, u in self.chans],
                "rate_hz": self.rate, "status": "live", "epoch": a.epoch,
            }

        def make(self, now):
            n = int((now - self.t_next) * self.rate)
            if n < 1:
                return None
            ts = [self.t_next + i / self.rate for i in range(n)]
            self.t_next += n / self.rate
            c = len(self.chans)
            vals = []
            for ci in range(c):
                for t in ts:
                    v = 10 * (ci + 1) + 3 * math.sin(2 * math.pi * (0.2 + 0.1 * ci) * t + self.phase) + random.gauss(0, 0.2)
                    vals.append(v)
            frame = HEADER.pack(1, 0, c, self.key, n, 0, self.seq) + struct.pack(f"<{n}d", *ts) + struct.pack(f"<{c * n}f", *vals)
            self.seq += 1
            self.hist.append((ts[-1], frame))
            while self.hist and self.hist[0][0] < now - 60:
                self.hist.popleft()
            return frame

    streams: dict[int, Stream] = {}
    if not a.no_env:
        k_env, k_imu, k_power = (int(k) for k in a.keys.split(","))
        streams[k_env] = Stream(k_env, "sim/env", [("temperature", "°C"), ("humidity", "%"), ("pressure", "hPa")], 10)
        streams[k_imu] = Stream(k_imu, "sim/imu", [("ax", "m/s²"), ("ay", "m/s²"), ("az", "m/s²"), ("gx", "deg/s"), ("gy", "deg/s"), ("gz", "deg/s")], 200)
        streams[k_power] = Stream(k_power, "sim/power", [("voltage", "V"), ("current", "A")], 100)
    if a.wide:
        c, r = a.wide.split(":")
        streams[4] = Stream(4, "sim/wide", [(f"ch{i:02d}", "V") for i in range(int(c))], float(r))
    clients: set = set()
    session = f"fake-{random.randrange(1 << 30):08x}"

    def http(connection, request):
        path = request.path.split("?")[0]
        if path == "/ws":
            return None
        if path == "/healthz":
            body = json.dumps({"ok": True}).encode()
            return Response(200, "OK", Headers({"Content-Type": "application/json", "Content-Length": str(len(body))}), body)
        name = "index.html" if path == "/" else path.lstrip("/")
        f = (DASHBOARD / name).resolve()
        if DASHBOARD.resolve() not in f.parents or not f.is_file():
            return Response(404, "Not Found", Headers({"Content-Length": "0"}), b"")
        body = f.read_bytes()
        ctype = mimetypes.guess_type(f.name)[0] or "application/octet-stream"
        if f.suffix == ".js":
            ctype = "text/javascript"
        return Response(200, "OK", Headers({"Content-Type": ctype, "Content-Length": str(len(body)), "Cache-Control": "no-store"}), body)

    class Client:
        def __init__(self, ws):
            self.ws, self.keys, self.last_tx = ws, set(), time.monotonic()
            self.q: asyncio.Queue = asyncio.Queue(maxsize=2000)

        def send(self, m):
            try:
                self.q.put_nowait(m)
            except asyncio.QueueFull:
                pass

    async def handler(ws):
        cl = Client(ws)
        await ws.send(json.dumps({"type": "hello", "protocol": 1, "server": "sensorstream/fake", "session": session,
                                  "heartbeat_s": a.heartbeat, "streams": [s.info() for s in streams.values()]}))
        clients.add(cl)

        async def writer():
            while True:
                m = await cl.q.get()
                await ws.send(m)
                cl.last_tx = time.monotonic()

        wt = asyncio.create_task(writer())
        try:
            async for raw in ws:
                m = json.loads(raw)
                t = m.get("type")
                if t == "subscribe":
                    keys = [s.key for s in streams.values() if any(fnmatch.fnmatchcase(s.id, p) for p in m["streams"])]
                    cl.send(json.dumps({"type": "subscribed", "ref": m.get("ref"), "keys": keys}))
                    h = float(m.get("history_s") or 0)
                    for k in keys:
                        if k in cl.keys:
                            continue
                        s = streams[k]
                        for t_last, fr in list(s.hist):
                            if t_last >= time.time() - h:
                                b = bytearray(fr)
                                b[1] |= 1
                                cl.send(bytes(b))
                        cl.keys.add(k)
                elif t == "unsubscribe":
                    keys = [s.key for s in streams.values() if any(fnmatch.fnmatchcase(s.id, p) for p in m["streams"])]
                    cl.keys -= set(keys)
                    cl.send(json.dumps({"type": "unsubscribed", "ref": m.get("ref"), "keys": keys}))
                elif t == "ping":
                    cl.send(json.dumps({"type": "pong", "ref": m.get("ref")}))
                else:
                    cl.send(json.dumps({"type": "error", "ref": m.get("ref"), "code": "unknown_type", "message": str(t)}))
        except Exception:
            pass
        finally:
            clients.discard(cl)
            wt.cancel()

    async def producer():
        n = 0
        late = None
        if a.late:
            lid, lsec = a.late.split(":")
            late = (lid, time.time() + float(lsec))
        while True:
            await asyncio.sleep(BATCH_S)
            now = time.time()
            n += 1
            if late and now >= late[1]:
                s = Stream(10, late[0], [("level", "%"), ("flow", "l/min")], 20)
                streams[10] = s
                msg = json.dumps({"type": "stream", "stream": s.info()})
                for cl in clients:
                    cl.send(msg)
                late = None
            for s in list(streams.values()):
                fr = s.make(now)
                if fr is None:
                    continue
                # Counted per stream, not per tick: sim/env (10 Hz) has a frame only
                # every other 50 ms tick, so a tick count could never land on one.
                if a.skip_every and s.key in (1, 4) and s.seq % a.skip_every == 0:
                    continue  # lost on the way: seq jump only
                drop = a.dropped_every and s.key == 3 and n % a.dropped_every == 0
                for cl in clients:
                    if s.key in cl.keys:
                        if drop:
                            cl.send(json.dumps({"type": "dropped", "key": s.key, "batches": 1}))
                        else:
                            cl.send(fr)
            for cl in clients:
                if time.monotonic() - cl.last_tx > a.heartbeat:
                    cl.send(json.dumps({"type": "heartbeat", "t": now}))

    async def main():
        async with serve(handler, "127.0.0.1", a.port, process_request=http, max_size=2**20, compression=None):
            print(f"sensorstream fake serving on http://127.0.0.1:{a.port}/", flush=True)
            await producer()

    asyncio.run(main())
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "fake":
        raise SystemExit(_fake_main(sys.argv[2:]))
    print("usage: browser_util.py fake --port N [--wide C:RATE] [--late ID:S]", file=sys.stderr)
    raise SystemExit(2)
