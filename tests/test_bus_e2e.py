"""Whole `sensorstream serve --bus` processes over a real redis-server: a publisher
and gateways, killed and restarted for real."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio_websocket

from sensorstream import protocol
from sensorstream.hub.redis import history_key

from .redis_util import RedisProc

ROOT = Path(__file__).resolve().parent.parent


class Serve:
    """One `serve` process; its log goes to a file (a pipe nobody reads would fill and stall it)."""

    def __init__(self, tmp_path, name: str, *args: str, env: dict | None = None):
        self.log = tmp_path / f"{name}.log"
        self.args = args
        self.env = env or {}
        self.proc: trio.Process | None = None
        self.port = 0

    async def start(self) -> "Serve":
        self.proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "sensorstream", "serve", "--port", "0", *self.args],
            stdout=subprocess.PIPE, stderr=open(self.log, "ab"), cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **self.env})
        out = b""
        with trio.fail_after(20):
            while b"dashboard at" not in out:
                chunk = await self.proc.stdout.receive_some(4096)
                assert chunk, f"serve exited early: {out!r} {self.log.read_text()}"
                out += chunk
        self.port = int(re.search(rb"http://127\.0\.0\.1:(\d+)/", out).group(1))
        return self

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(sig)


class Conn:
    """A raw protocol client: what arrives, in order."""

    def __init__(self, ws):
        self.ws = ws
        self.hello = None

    @classmethod
    async def open(cls, nursery, port):
        ws = await trio_websocket.connect_websocket(nursery, "127.0.0.1", port, "/ws", use_ssl=False)
        c = cls(ws)
        c.hello = json.loads(await ws.get_message())
        return c

    def streams(self):
        return {s["id"]: s for s in self.hello["streams"]}

    async def next(self):
        m = await self.ws.get_message()
        if isinstance(m, bytes):
            return "batch", m
        return "text", json.loads(m)

    async def batches(self, n, timeout=20):
        """The next n batches, decoded (text messages in between are passed over)."""
        got = []
        with trio.fail_after(timeout):
            while len(got) < n:
                kind, m = await self.next()
                if kind == "batch":
                    got.append(protocol.decode_batch(m))
        return got


@pytest.fixture
async def redis(tmp_path):
    r = await RedisProc(tmp_path).start()
    yield r
    r.kill_now()


@pytest.fixture
async def procs():
    started = []
    yield started
    for p in started:
        p.kill()
        if p.proc is not None:
            with trio.move_on_after(5):
                await p.proc.wait()


async def _serve(procs, tmp_path, name, *args, env=None):
    p = await Serve(tmp_path, name, *args, env=env).start()
    procs.append(p)
    return p


async def _wait_catalog(port, nursery, ids):
    with trio.fail_after(20):
        while True:
            c = await Conn.open(nursery, port)
            got = c.streams()
            await c.ws.aclose()
            if all(i in got and got[i]["status"] == "live" for i in ids):
                return got
            await trio.sleep(0.1)


async def _wait_written_past(redis, key, seq):
    """Until the stream's history in Redis holds a batch after `seq` (its entry ids are seqs)."""
    last_id = "local r = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1) return r[1] and r[1][1] or ''"
    with trio.fail_after(20):
        while int(redis.cli("eval", last_id, "1", history_key(key)).strip().split("-")[0] or -1) <= seq:
            await trio.sleep(0.05)


async def test_two_gateways_serve_one_publishers_streams_bit_exact_with_one_catalog(redis, procs, tmp_path, nursery):
    bus = ("--bus", redis.url)
    pub = await _serve(procs, tmp_path, "pub", *bus, "--simulate")
    gw_a = await _serve(procs, tmp_path, "gw-a", *bus)
    gw_b = await _serve(procs, tmp_path, "gw-b", *bus)
    ids = ["sim/env", "sim/imu", "sim/power"]
    cats = [await _wait_catalog(p.port, nursery, ids) for p in (pub, gw_a, gw_b)]
    assert {i: (cats[0][i]["key"], cats[0][i]["epoch"]) for i in ids} == \
           {i: (c[i]["key"], c[i]["epoch"]) for c in cats[1:] for i in ids}
    # The same batch (by seq) from the publisher's own port and from gateway B: the same bytes.
    frames = []
    for port in (pub.port, gw_b.port):
        c = await Conn.open(nursery, port)
        assert c.hello["bus"] == {"up": True}
        await c.ws.send_message(protocol.subscribe(["sim/imu"], ref=1))
        frames.append(c)
    got = [{}, {}]
    with trio.fail_after(20):
        while not (set(got[0]) & set(got[1])):
            for i, c in enumerate(frames):
                kind, m = await c.next()
                if kind == "batch":
                    got[i][protocol.decode_batch(m).seq] = m
    common = set(got[0]) & set(got[1])
    assert all(got[0][s] == got[1][s] for s in common)
    b = protocol.decode_batch(got[1][min(common)])
    assert b.key == cats[2]["sim/imu"]["key"] and b.values.shape[0] == len(cats[2]["sim/imu"]["channels"])


async def test_a_client_of_a_killed_gateway_resumes_on_another_with_no_gap_and_no_duplicate(redis, procs, tmp_path, nursery):
    bus = ("--bus", redis.url)
    await _serve(procs, tmp_path, "pub", *bus, "--simulate")
    gw_a = await _serve(procs, tmp_path, "gw-a", *bus)
    gw_b = await _serve(procs, tmp_path, "gw-b", *bus)
    await _wait_catalog(gw_a.port, nursery, ["sim/imu"])
    c = await Conn.open(nursery, gw_a.port)
    epoch = c.streams()["sim/imu"]["epoch"]
    await c.ws.send_message(protocol.subscribe(["sim/imu"], ref=1))
    seqs = [b.seq for b in await c.batches(10)]
    gw_a.kill(signal.SIGKILL)  # mid-stream, no goodbye
    with trio.fail_after(10):
        with pytest.raises(trio_websocket.ConnectionClosed):
            while True:
                kind, m = await c.next()
                if kind == "batch":
                    seqs.append(protocol.decode_batch(m).seq)
    # The client was away for a while; the publisher went on: wait until Redis holds
    # batches it never got (those are what the resume replays).
    await _wait_written_past(redis, c.streams()["sim/imu"]["key"], seqs[-1])
    d = await Conn.open(nursery, gw_b.port)
    assert d.streams()["sim/imu"]["epoch"] == epoch
    await d.ws.send_message(protocol.subscribe(["sim/imu"], ref=2, resume={"sim/imu": (epoch, seqs[-1])}))
    replayed = live = 0
    with trio.fail_after(20):
        while live < 10:
            kind, m = await d.next()
            if kind == "text" and m["type"] == "subscribed":
                assert m["resumed"]["sim/imu"]["recovered"] is True and m["resumed"]["sim/imu"]["batches"] > 0
            elif kind == "batch":
                b = protocol.decode_batch(m)
                seqs.append(b.seq)
                if b.replayed:
                    replayed += 1
                else:
                    live += 1
    assert replayed > 0
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap, no duplicate


async def test_redis_restarting_mid_stream_recovers_without_restarting_sensorstream(redis, procs, tmp_path, nursery):
    bus = ("--bus", redis.url)
    await _serve(procs, tmp_path, "pub", *bus, "--simulate")
    gw = await _serve(procs, tmp_path, "gw", *bus)
    await _wait_catalog(gw.port, nursery, ["sim/env"])
    c = await Conn.open(nursery, gw.port)
    await c.ws.send_message(protocol.subscribe(["sim/env"], ref=1))
    texts, seqs = [], []

    async def until(pred, timeout=20):
        with trio.fail_after(timeout):
            while not pred():
                kind, m = await c.next()
                if kind == "batch":
                    seqs.append(protocol.decode_batch(m).seq)
                else:
                    texts.append(m)

    await until(lambda: len(seqs) >= 3)
    await redis.stop()
    await until(lambda: {"type": "bus", "up": False} in texts and any(
        t["type"] == "stream" and t["stream"]["id"] == "sim/env" and t["stream"]["status"] == "disconnected" for t in texts))
    health = json.loads(subprocess.run(["curl", "-s", f"http://127.0.0.1:{gw.port}/healthz"], capture_output=True, text=True).stdout or "{}")
    assert health.get("bus", {}).get("up") is False and health["status"] == "degraded"
    assert "redis://127.0.0.1" in health["bus"]["url"]
    n = len(seqs)
    await trio.sleep(0.5)  # Redis is down a while; sim/env goes on at 10 Hz
    await redis.start()
    t0 = trio.current_time()
    await until(lambda: {"type": "bus", "up": True} in texts and len(seqs) > n + 3)
    assert trio.current_time() - t0 < 5
    # Every seq at most once and in order; those never delivered were announced.
    assert seqs == sorted(set(seqs))
    dropped = sum(t["batches"] for t in texts if t["type"] == "dropped")
    assert seqs[-1] - seqs[0] + 1 == len(seqs) + dropped


async def test_a_password_in_the_bus_url_works_and_never_shows(tmp_path, procs, nursery):
    r = await RedisProc(tmp_path, None, "--requirepass", "s3cret-pw").start()
    try:
        url = f"redis://:s3cret-pw@127.0.0.1:{r.port}/0"
        pub = await _serve(procs, tmp_path, "pub", "--simulate", "--log-level", "debug",
                           env={"SENSORSTREAM_BUS": url})  # from the environment, as a deployment would
        await _wait_catalog(pub.port, nursery, ["sim/env"])
        health = subprocess.run(["curl", "-s", f"http://127.0.0.1:{pub.port}/healthz"], capture_output=True, text=True).stdout
        metrics = subprocess.run(["curl", "-s", f"http://127.0.0.1:{pub.port}/metrics"], capture_output=True, text=True).stdout
        assert json.loads(health)["bus"]["url"] == f"redis://:***@127.0.0.1:{r.port}/0"
        assert "sensorstream_bus_up 1.0" in metrics
        pub.kill(signal.SIGTERM)
        with trio.fail_after(10):
            await pub.proc.wait()
        for text in (health, metrics, pub.log.read_text()):
            assert "s3cret-pw" not in text
    finally:
        r.kill_now()


async def test_serve_over_a_real_3_node_cluster_with_sharded_pubsub(tmp_path, procs, nursery):
    from .redis_util import RedisCluster

    cluster = await RedisCluster(tmp_path).start()
    try:
        bus = ("--bus", cluster.url)
        await _serve(procs, tmp_path, "pub", *bus, "--simulate")
        gw = await _serve(procs, tmp_path, "gw", *bus)
        cat = await _wait_catalog(gw.port, nursery, ["sim/env", "sim/imu", "sim/power"])
        c = await Conn.open(nursery, gw.port)
        await c.ws.send_message(protocol.subscribe(["sim/*"], ref=1))
        seqs: dict[int, list[int]] = {}
        with trio.fail_after(20):
            while len(seqs) < 3 or min(len(v) for v in seqs.values()) < 5:
                kind, m = await c.next()
                if kind == "batch":
                    b = protocol.decode_batch(m)
                    seqs.setdefault(b.key, []).append(b.seq)
        for key, s in seqs.items():
            assert s == list(range(s[0], s[0] + len(s)))
        keys = {cat[i]["key"] for i in cat}
        shard = "".join(n.cli("pubsub", "shardchannels") for n in cluster.nodes)
        assert all(f"ss:{{{k}}}:live" in shard for k in keys)
    finally:
        cluster.kill_now()


def _get(port, path):
    return subprocess.run(["curl", "-s", f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True).stdout


async def test_a_rediss_bus_with_a_private_ca_and_a_password_carries_batches_and_never_shows_it(tmp_path, procs, nursery):
    from .redis_util import tls_redis

    r, ca = tls_redis(tmp_path, "tls-s3cret")
    await r.start()
    try:
        url = f"rediss://:tls-s3cret@127.0.0.1:{r.port}/0"
        # The CA both ways: the flag on the publisher, ?ca= in the gateway's URL.
        pub = await _serve(procs, tmp_path, "pub", "--bus", url, "--bus-cafile", str(ca), "--simulate", "--log-level", "debug")
        gw = await _serve(procs, tmp_path, "gw", "--bus", f"{url}?ca={ca}", "--log-level", "debug")
        cat = await _wait_catalog(gw.port, nursery, ["sim/env"])
        c = await Conn.open(nursery, gw.port)
        assert c.hello["bus"] == {"up": True}
        await c.ws.send_message(protocol.subscribe(["sim/env"], ref=1))
        got = await c.batches(3)
        assert {b.key for b in got} == {cat["sim/env"]["key"]}
        seqs = [b.seq for b in got]
        assert seqs == sorted(set(seqs))
        texts = []
        for p in (pub, gw):
            health = _get(p.port, "/healthz")
            assert json.loads(health)["bus"]["url"] == f"rediss://:***@127.0.0.1:{r.port}/0"
            metrics = _get(p.port, "/metrics")
            assert "sensorstream_bus_up 1.0" in metrics
            texts += [health, metrics]
        for p in (pub, gw):
            p.kill(signal.SIGTERM)
            with trio.fail_after(10):
                await p.proc.wait()
            texts.append(p.log.read_text())
        assert "connected" in texts[-1]
        for text in texts:
            assert "tls-s3cret" not in text
    finally:
        r.kill_now()


async def test_an_untrusted_redis_certificate_is_one_clear_log_line_and_the_server_keeps_serving(tmp_path, procs, nursery):
    from .redis_util import tls_redis

    r, _ca = tls_redis(tmp_path, "tls-s3cret")
    await r.start()
    try:
        # No CA given: the system trust store does not know the self-signed certificate.
        pub = await _serve(procs, tmp_path, "pub", "--bus", f"rediss://:tls-s3cret@127.0.0.1:{r.port}/0", "--simulate")
        with trio.fail_after(20):  # several attempts, each refused by the certificate check
            while (h := json.loads(_get(pub.port, "/healthz"))["bus"])["reconnects"] < 3:
                await trio.sleep(0.1)
        assert h["up"] is False
        c = await Conn.open(nursery, pub.port)  # clients are still served, told the bus is down
        assert c.hello["bus"] == {"up": False}
        await c.ws.aclose()
        pub.kill(signal.SIGTERM)
        with trio.fail_after(10):
            await pub.proc.wait()
        log = pub.log.read_text()
        lines = [line for line in log.splitlines() if "not trusted" in line]
        assert len(lines) == 1, log  # once, not once per retry
        assert "--bus-cafile" in lines[0] and "self-signed" in lines[0] and "rediss://:***@" in lines[0]
        assert "Traceback" not in log and "tls-s3cret" not in log
    finally:
        r.kill_now()
