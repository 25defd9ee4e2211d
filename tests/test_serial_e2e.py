"""Serial devices end to end: bytes written into a real pseudo-terminal come out
as decoded batches at a WebSocket client. No mocks: the source opens the pty's
slave side with pyserial and waits on its file descriptor like on a USB port."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import tty
from types import SimpleNamespace

import numpy as np
import pytest
import trio

from sensorstream.ingest import cobs
from sensorstream.sources.serial import COALESCE_BELOW, SerialSpec, load_device_profile, match_port, run_serial, spec_from_arg

from .conftest import eventually
from .wire import connect

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Pty:
    """A fake device: the test writes to the master, the server reads the slave (via a stable symlink)."""

    def __init__(self, link: str):
        self.link = link
        self.plug()

    def plug(self):
        self.master, slave = os.openpty()
        tty.setraw(slave)
        path = os.ttyname(slave)
        os.close(slave)  # only the server holds the slave side open
        tmp = self.link + ".new"
        os.symlink(path, tmp)
        os.replace(tmp, self.link)

    def unplug(self):
        os.close(self.master)
        os.unlink(self.link)

    def write(self, data: bytes):
        os.write(self.master, data)


@pytest.fixture
def pty(tmp_path):
    p = Pty(str(tmp_path / "ttyFAKE0"))
    yield p
    try:
        os.close(p.master)
    except OSError:
        pass


async def start_serial(nursery, server, spec: SerialSpec, **kw):
    return await nursery.start(functools.partial(run_serial, server.hub, spec, window_s=0.02, **kw))


async def subscribe(nursery, server, pattern: str):
    c = await connect(nursery, server.port)
    await c.send({"type": "subscribe", "ref": 1, "streams": [pattern]})
    await c.recv_text("subscribed")
    return c


async def collect(c, n_samples: int, timeout: float = 10):
    """Batches until n_samples arrived, plus the stream messages seen on the way."""
    batches, streams = [], []
    with trio.fail_after(timeout):
        while sum(len(b["t"]) for b in batches) < n_samples:
            kind, m = await c.recv()
            if kind == "batch":
                batches.append(m)
            elif m["type"] == "stream":
                streams.append(m["stream"])
    return batches, streams


def values_of(batches, n_channels=None):
    n = n_channels or max(b["values"].shape[0] for b in batches)
    cols = []
    for b in batches:
        v = b["values"]
        if v.shape[0] < n:  # frames from before a channel was added carry fewer rows
            v = np.vstack([v, np.full((n - v.shape[0], v.shape[1]), np.nan, np.float32)])
        cols.append(v)
    return np.hstack(cols)


def spec_for(pty, profile: dict | None = None, sid="dev/test") -> SerialSpec:
    return SerialSpec(stream_id=sid, path=pty.link, baud=115200, profile=profile or {})


@pytest.mark.parametrize("sep", [",", ";", "\t", " "])
async def test_csv_lines_any_separator(make_server, nursery, pty, sep):
    server = await make_server()
    await start_serial(nursery, server, spec_for(pty))
    c = await subscribe(nursery, server, "dev/test")
    lines = [sep.join(str(i * 10 + k) for k in range(3)) for i in range(50)]
    pty.write(b"partial junk\n" + "\r\n".join(lines).encode() + b"\r\n")
    batches, _ = await collect(c, 50)
    v = values_of(batches)
    np.testing.assert_array_equal(v[:, :50], np.array([[i * 10 + k for i in range(50)] for k in range(3)], np.float32))
    info = server.hub.stream_by_id("dev/test")
    assert [ch.name for ch in info.channels] == ["ch0", "ch1", "ch2"]


async def test_labels_plotter_format_with_spaces_and_dynamic_labels(make_server, nursery, pty):
    server = await make_server()
    await start_serial(nursery, server, spec_for(pty))
    c = await subscribe(nursery, server, "dev/test")
    pty.write(b"xx\n")
    pty.write(b"Temperature: 23.64 humidity=40\r\n" * 5)
    batches1, _ = await collect(c, 5)
    # A new label mid-stream: announced before any batch that carries it.
    pty.write(b"Temperature: 24.0, humidity = 41, pressure:1000.5\n" * 5)
    batches2, streams = await collect(c, 5)
    assert [ch["name"] for ch in streams[-1]["channels"]] == ["Temperature", "humidity", "pressure"]
    v = values_of(batches1 + batches2, 3)
    assert np.allclose(v[0], [23.64] * 5 + [24.0] * 5)
    assert np.isnan(v[2, :5]).all() and np.allclose(v[2, 5:], 1000.5)
    assert all(b["values"].shape[0] == 3 for b in batches2)


async def test_json_lines_nested_and_device_timestamps(make_server, nursery, pty):
    server = await make_server()
    profile = {"format": {"kind": "json", "timestamp_field": "t", "timestamp_unit": "ms"}}
    await start_serial(nursery, server, spec_for(pty, profile))
    c = await subscribe(nursery, server, "dev/test")
    pty.write(b"{}\n")
    # The device's samples are 0.1 ms apart on its own clock. The mapper keeps that
    # spacing unless the device runs ahead of the wall clock (then it holds samples
    # back to their arrival time). However the pty splits these bytes between reads,
    # every read is short (< COALESCE_BELOW), so the next one comes at least the
    # coalescing wait (4 ms here) later, longer than the 2.9 ms the device spans:
    # the result does not depend on how the kernel chunks the write. (With 40 lines
    # 10 ms apart it did: a split made the device look fast, and CI caught it.)
    n = 30
    lines = [json.dumps({"t": 1000 + i / 10, "imu": {"ax": i, "ay": -i}, "temp": 20.5}) for i in range(n)]
    data = ("\n".join(lines) + "\n").encode()
    assert len(data) < COALESCE_BELOW
    t0 = time.monotonic()
    pty.write(data)
    batches, _ = await collect(c, n)
    elapsed = time.monotonic() - t0
    names = [ch.name for ch in server.hub.stream_by_id("dev/test").channels]
    assert names == ["imu.ax", "imu.ay", "temp"]
    v = values_of(batches)
    np.testing.assert_array_equal(v[0, :n], np.arange(n))
    ts = np.concatenate([b["t"] for b in batches])[:n]
    # Device clock (ms) mapped onto wall time: 0.1 ms apart (arrival times would be
    # equal within a read), plus at most the mapper's drift allowance (200 ppm of
    # the time between reads); near now.
    d = np.diff(ts)
    assert d.min() >= 1e-4 - 1e-6, d
    assert d.max() <= 1e-4 + 2e-4 * elapsed + 1e-6, (d, elapsed)
    assert abs(ts[-1] - time.time()) < 5


async def test_garbage_and_oversize_lines_are_counted_and_good_lines_survive(make_server, nursery, pty):
    server = await make_server()
    await start_serial(nursery, server, spec_for(pty, {"format": {"kind": "csv", "max_line": 64}}))
    c = await subscribe(nursery, server, "dev/test")
    pty.write(b"junk\n1,2\n")
    pty.write(b"\xff\xfe\x00garbage\x01\n3,4\n" + b"9" * 500 + b"\n5,6\nnot,numbers\n7,8\n")
    batches, _ = await collect(c, 4)
    v = values_of(batches)
    good = v[:, ~np.isnan(v).all(axis=0)]
    np.testing.assert_array_equal(good[:, :4], [[1, 3, 5, 7], [2, 4, 6, 8]])
    src = server.hub.stats(server.hub.stream_by_id("dev/test").key).source
    assert src["lines_oversize"] == 1 and src["parse_errors"] >= 2


async def test_cobs_binary_records(make_server, nursery, pty):
    server = await make_server()
    profile = {"format": {"kind": "cobs", "struct": "<Iffff", "fields": ["t_us", "a", "b", "c", "d"],
                          "timestamp_field": "t_us", "timestamp_unit": "us"}}
    await start_serial(nursery, server, spec_for(pty, profile))
    c = await subscribe(nursery, server, "dev/test")
    rec = struct.Struct("<Iffff")
    # Records 10 µs apart on the device's clock. As in the JSON test above, the whole
    # write is under COALESCE_BELOW bytes, so however the pty splits it every read is
    # short and the next read comes at least the coalescing wait (4 ms) later, longer
    # than the 0.8 ms the device spans: the mapper never sees the device run ahead of
    # the wall clock and keeps the device's spacing. (300 records 1 ms apart, 0.3 s
    # of device time written at once, made the result depend on the kernel's split.)
    n = 80
    frames = b"\x11\x22\x00"  # a partial frame first
    for i in range(n):
        frames += cobs.encode(rec.pack(10 * i, i, 0.0, -i, 1.5)) + b"\x00"
    assert len(frames) < COALESCE_BELOW
    t0 = time.monotonic()
    pty.write(frames)
    batches, _ = await collect(c, n)
    elapsed = time.monotonic() - t0
    v = values_of(batches)
    np.testing.assert_array_equal(v[:, :n], np.array([[i, 0, -i, 1.5] for i in range(n)], np.float32).T)
    ts = np.concatenate([b["t"] for b in batches])[:n]
    # Device µs mapped onto wall time: 10 µs apart, plus at most the mapper's drift
    # allowance (200 ppm of the time between reads); never later than now.
    steps = np.diff(ts)
    assert steps.min() >= 1e-5 - 1e-6, steps
    assert steps.max() <= 1e-5 + 2e-4 * elapsed + 1e-6, (steps, elapsed)
    assert ts[-1] <= time.time() and abs(ts[-1] - time.time()) < 5


async def test_unplug_is_announced_others_keep_streaming_and_replug_resumes_same_stream(make_server, nursery, pty):
    server = await make_server(simulate=True)
    await start_serial(nursery, server, spec_for(pty), backoff_min=0.05, backoff_max=0.2)
    c = await subscribe(nursery, server, "*")
    key = server.hub.stream_by_id("dev/test").key
    sim_key = server.hub.stream_by_id("sim/power").key
    pty.write(b"x\n" + b"1,2\n" * 10)

    async def until(pred, timeout=10):
        seen = []
        with trio.fail_after(timeout):
            while True:
                kind, m = await c.recv()
                seen.append((kind, m))
                if pred(kind, m):
                    return seen

    seen = await until(lambda k, m: k == "batch" and m["key"] == key)
    last_seq = max(m["seq"] for k, m in seen if k == "batch" and m["key"] == key)
    pty.unplug()
    await until(lambda k, m: k == "text" and m["type"] == "stream" and m["stream"]["key"] == key and m["stream"]["status"] == "disconnected")
    # the simulator streams on while the device is away
    sim_seqs = [m["seq"] for k, m in await until(lambda k, m: k == "batch" and m["key"] == sim_key and m["seq"] > 5) if k == "batch" and m["key"] == sim_key]
    assert sim_seqs == list(range(sim_seqs[0], sim_seqs[0] + len(sim_seqs)))
    pty.plug()
    await until(lambda k, m: k == "text" and m["type"] == "stream" and m["stream"]["key"] == key and m["stream"]["status"] == "live")
    pty.write(b"x\n" + b"3,4\n" * 10)
    seen = await until(lambda k, m: k == "batch" and m["key"] == key)
    b = [m for k, m in seen if k == "batch" and m["key"] == key][0]
    assert b["seq"] > last_seq and b["values"][0, 0] == 3
    assert server.hub.stats(key).source["reconnects"] == 1


async def test_missing_port_at_startup_is_retried_not_fatal(make_server, nursery, tmp_path):
    server = await make_server()
    link = str(tmp_path / "later")
    await start_serial(nursery, server, SerialSpec(stream_id="dev/late", path=link), backoff_min=0.05, backoff_max=0.1)
    info = server.hub.stream_by_id("dev/late")
    assert info.status == "disconnected"
    c = await subscribe(nursery, server, "dev/late")
    p = Pty(link)
    try:
        with trio.fail_after(10):
            while True:
                m = await c.recv_text("stream")
                if m["stream"]["status"] == "live":
                    break
        p.write(b"x\n5\n")
        b = await c.recv_batch()
        assert b["values"][0, 0] == 5
    finally:
        os.close(p.master)


def test_port_matching_by_vid_pid_and_serial_number():
    ports = [SimpleNamespace(device="/dev/ttyUSB0", vid=0x0403, pid=0x6001, serial_number="A1"),
             SimpleNamespace(device="/dev/ttyACM3", vid=0x2341, pid=0x0043, serial_number="XYZ")]
    assert match_port(ports, "2341:0043", None) == "/dev/ttyACM3"
    assert match_port(ports, None, "A1") == "/dev/ttyUSB0"
    assert match_port(ports, "2341:0043", "nope") is None
    assert match_port([], "2341:0043", None) is None


def test_port_arguments_and_profiles():
    s = spec_from_arg("/dev/ttyUSB0@9600")
    assert (s.path, s.baud, s.stream_id) == ("/dev/ttyUSB0", 9600, "serial/ttyUSB0")
    s = spec_from_arg("socket://127.0.0.1:7000", 57600)
    assert (s.path, s.baud) == ("socket://127.0.0.1:7000", 57600) and s.is_url
    for name in os.listdir(os.path.join(ROOT, "devices")):
        if name.endswith(".toml") and not name.startswith("sim-"):
            spec = load_device_profile(os.path.join(ROOT, "devices", name))
            assert spec.stream_id and (spec.path or spec.vid_pid or spec.serial_number)


async def test_pyserial_url_port_socket(make_server, nursery):
    """socket:// ports go through the thread fallback."""
    server = await make_server()
    listeners = await nursery.start(functools.partial(trio.serve_tcp, feed_socket, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    await start_serial(nursery, server, SerialSpec(stream_id="dev/net", path=f"socket://127.0.0.1:{port}"))
    c = await subscribe(nursery, server, "dev/net")
    b = await c.recv_batch()
    assert b["values"][0, 0] == 42


async def feed_socket(stream):
    await stream.send_all(b"skip\n" + b"42,1\n" * 5)
    await trio.sleep_forever()


async def test_simulate_pty_command_feeds_serve_serial():
    """`sensorstream simulate --pty` + `sensorstream serve --serial PATH`, as a user would run them."""
    sim = await trio.lowlevel.open_process([sys.executable, "-m", "sensorstream", "simulate", "--pty", "--format", "json"],
                                           stdout=subprocess.PIPE, cwd=ROOT)
    srv = None
    try:
        out = b""
        with trio.fail_after(15):
            while b"\n" not in out:
                out += await sim.stdout.receive_some(1024)
        path = re.match(rb"PTY (\S+)", out).group(1).decode()
        srv = await trio.lowlevel.open_process([sys.executable, "-m", "sensorstream", "serve", "--port", "0", "--serial", path],
                                               stdout=subprocess.PIPE, cwd=ROOT)
        out = b""
        with trio.fail_after(15):
            while b"dashboard at" not in out:
                out += await srv.stdout.receive_some(1024)
        port = int(re.search(rb":(\d+)/", out).group(1))
        async with trio.open_nursery() as n:
            c = await connect(n, port)
            await c.send({"type": "subscribe", "streams": ["serial/*"]})
            await c.recv_text("subscribed")
            batches, _ = await collect(c, 50)
            n.cancel_scope.cancel()
        v = values_of(batches)
        # JSON lines {"t": ms, "ax": ..., ...}; without a profile naming the timestamp, t is a channel too.
        assert v.shape[0] == 7 and abs(np.nanmean(v[3]) - 9.81) < 0.5  # the IMU's az
    finally:
        for p in (sim, srv):
            if p is not None:
                p.send_signal(signal.SIGTERM)
                with trio.fail_after(10):
                    await p.wait()


async def test_device_profile_names_units_scale_and_offset(make_server, nursery, pty, tmp_path):
    prof = tmp_path / "thermo.toml"
    prof.write_text(f"""
[stream]
id = "lab/thermo"
device = "lab"
rate_hz = 10
[port]
path = "{pty.link}"
baud = 9600
[format]
kind = "csv"
[[channels]]
name = "celsius"
unit = "°C"
scale = 0.1
[[channels]]
name = "volts"
unit = "V"
offset = -1.0
""")
    spec = load_device_profile(prof)
    assert (spec.stream_id, spec.baud, spec.device, spec.rate_hz) == ("lab/thermo", 9600, "lab", 10.0)
    server = await make_server()
    await start_serial(nursery, server, spec)
    c = await subscribe(nursery, server, "lab/*")
    pty.write(b"x\n235,3.5\n")
    b = await c.recv_batch()
    np.testing.assert_allclose(b["values"][:, 0], [23.5, 2.5], rtol=1e-6)
    info = server.hub.stream_by_id("lab/thermo")
    assert [(ch.name, ch.unit) for ch in info.channels] == [("celsius", "°C"), ("volts", "V")]
    assert info.device == "lab"


def test_ports_command_lists_or_says_none():
    r = subprocess.run([sys.executable, "-m", "sensorstream", "ports"], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert r.returncode == 0
    assert r.stdout.startswith("DEVICE") or r.stdout.strip() == "no serial ports found"


async def test_a_failing_source_ends_alone_logged_and_counted(nursery, pty, caplog):
    """A source that hits something nobody foresaw (here: a device adding more
    channels than the hub allows a stream) ends on its own; the server, the
    simulators and the clients go on, and the failure is counted and logged. Its
    stream says `failed`, with the reason (sources/supervisor.py restarts it later)."""
    from sensorstream.config import ServerConfig
    from sensorstream.hub import HubLimits, LocalHub
    from sensorstream.server.app import Server

    # The simulators have at most 6 channels; the device will ask for a 7th.
    server = Server(ServerConfig(port=0, host="127.0.0.1", simulate=True), hub=LocalHub(HubLimits(max_channels=6)))
    server.add_source(functools.partial(run_serial, server.hub, spec_for(pty, {"format": {"kind": "labels"}}), window_s=0.02))
    await nursery.start(server.run)
    c = await subscribe(nursery, server, "sim/power")
    await c.recv_batch()
    dev = server.hub.stream_by_id("dev/test")
    pty.write(b"\na:1 b:2 c:3 d:4 e:5 f:6\n")
    await eventually(lambda: server.hub.stream_by_id("dev/test").status == "live" and server.hub.stats(dev.key).batches, timeout=10)
    pty.write(b"a:1 b:2 c:3 d:4 e:5 f:6 g:7\n")  # a 7th channel: the hub refuses it
    await eventually(lambda: server.stats.source_failures_total, timeout=10)
    assert server.stats.source_failures_total == 1
    failed = server.hub.stream_by_id("dev/test")
    assert failed.status == "failed" and "at most 6 channels" in failed.error
    assert any(getattr(r, "event", None) == "source_failed" and r.exc_info for r in caplog.records)
    seq = (await c.recv_batch())["seq"]  # the simulator's stream goes on
    assert (await c.recv_batch())["seq"] == seq + 1
