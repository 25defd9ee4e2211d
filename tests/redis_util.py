"""Real redis-server processes for the bus tests: one server, or a 3-node cluster,
on free ports of 127.0.0.1, in a temporary directory, killed at the end.

Missing redis-server: the test fails under CI=true (CI installs it, see
.ci/run) and is skipped elsewhere."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess

import pytest
import trio

REDIS = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def need_redis() -> str:
    if REDIS is None:
        msg = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return REDIS


def free_port(cluster: bool = False) -> int:
    """A free port; for a cluster node one at most 55535 whose bus port (+10000) is free too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not cluster:
            return port
        if port > 55535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


async def _accepting(port: int, timeout: float = 10.0) -> None:
    """Until the port accepts a connection: redis-server announces readiness only in its log."""
    with trio.fail_after(timeout):
        while True:
            try:
                s = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.01)
                continue
            await s.aclose()
            return


class RedisProc:
    """One redis-server. `stop` kills it (SIGKILL: a crash, nothing saved); `start` again
    reuses the port, so clients reconnect to "the same Redis, empty"."""

    def __init__(self, workdir, port: int | None = None, *extra: str):
        self.exe = need_redis()
        self.port = port or free_port(cluster="--cluster-enabled" in extra)
        self.dir = workdir / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.extra = extra
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> "RedisProc":
        args = [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.dir), "--loglevel", "warning", *self.extra]
        self.proc = subprocess.Popen(args, stdout=open(self.dir / "log", "ab"), stderr=subprocess.STDOUT)
        await _accepting(self.port)
        return self

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            await trio.to_thread.run_sync(self.proc.wait)
        self.proc = None

    def cli(self, *args: str) -> str:
        return subprocess.run([REDIS_CLI, "-p", str(self.port), *args], capture_output=True, text=True, timeout=10).stdout

    def kill_now(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def tls_redis(workdir, password: str, hostname: str = "127.0.0.1") -> tuple[RedisProc, "os.PathLike"]:
    """A redis-server that speaks only TLS (plain port off) with a self-signed
    certificate for `hostname` made here, and a password; (server, its certificate).
    `start()` it. Debian's redis-server is built with TLS."""
    from .httpraw import self_signed_cert

    certdir = workdir / f"redis-tls-{hostname}"
    certdir.mkdir(parents=True, exist_ok=True)
    cert, key = self_signed_cert(certdir, hostname)
    port = free_port()
    return RedisProc(workdir, port, "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
                     "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
                     "--requirepass", password), cert


class RedisCluster:
    """Three masters, no replicas (`--cluster-enabled yes`), slots spread by redis-cli."""

    def __init__(self, workdir):
        self.nodes = [RedisProc(workdir, None, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                "--cluster-node-timeout", "2000") for _ in range(3)]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    async def start(self) -> "RedisCluster":
        for n in self.nodes:
            await n.start()
        out = subprocess.run([REDIS_CLI, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
                              "--cluster-replicas", "0", "--cluster-yes"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stdout + out.stderr
        with trio.fail_after(15):
            while not all("cluster_state:ok" in n.cli("cluster", "info") for n in self.nodes):
                await trio.sleep(0.05)
        return self

    def kill_now(self) -> None:
        for n in self.nodes:
            n.kill_now()
