"""Replay and /export over real sockets: playback control answered on the wire,
the replay process serving a recording, and /export against the recording."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import trio

from sensorstream import recording
from sensorstream.client import open_client
from sensorstream.config import ServerConfig
from sensorstream.recording.cli import make_replay_server

from .test_cli import ROOT
from .test_replay import ENDS, write
from .wire import connect, http_get


async def start_replay_server(nursery, path, **kw):
    server = make_replay_server(ServerConfig(host="127.0.0.1", port=0), path, **kw)
    await nursery.start(server.run)
    return server


async def test_playback_messages_are_answered_and_broadcast(nursery, tmp_path):
    write(tmp_path / "r.mcap")
    server = await start_replay_server(nursery, tmp_path / "r.mcap")
    c = await connect(nursery, server.port)
    other = await connect(nursery, server.port)
    await c.send({"type": "playback", "ref": 1, "action": "pause"})
    state = (await c.recv_text("playback"))
    while state["ref"] != 1:
        state = await c.recv_text("playback")
    assert state["state"]["paused"] is True and state["state"]["start"] == pytest.approx(ENDS[0])
    assert state["state"]["end"] == pytest.approx(ENDS[-1]) and state["state"]["file"] == "r.mcap"
    seen = await other.recv_text("playback")  # every client hears of it
    assert seen["ref"] is None and seen["state"]["paused"] is True
    await c.send({"type": "subscribe", "ref": 2, "streams": ["*"]})
    await c.recv_text("subscribed")
    await c.send({"type": "playback", "ref": 3, "action": "seek", "t": ENDS[8]})
    await c.send({"type": "playback", "ref": 4, "action": "speed", "speed": 3})
    await c.send({"type": "playback", "ref": 5, "action": "status"})
    replies = {}
    with trio.fail_after(10):
        while 5 not in replies:
            m = await c.recv_text("playback")
            replies[m["ref"]] = m["state"]
    assert replies[3]["position"] == pytest.approx(ENDS[8]) and replies[5]["speed"] == 3 and replies[5]["paused"]
    assert replies[5]["position"] == pytest.approx(ENDS[8])  # paused: it stays there
    await c.send({"type": "playback", "ref": 6, "action": "resume"})
    with trio.fail_after(10):
        b = await c.recv_batch()
    assert b["seq"] == 8 and b["t"][-1] == pytest.approx(ENDS[8])
    # Mistakes are answered like any other control message's.
    for bad, code in [({"action": "jump"}, "bad_field"), ({"action": "seek"}, "bad_field"),
                      ({"action": "speed", "speed": -1}, "bad_field"), ({"action": "speed", "speed": 1e9}, "bad_field")]:
        await c.send({"type": "playback", "ref": "x", **bad})
        err = await c.recv_text("error")
        assert err["code"] == code and err["ref"] == "x"


async def test_playback_on_a_live_server_is_refused(make_server, nursery):
    server = await make_server()
    c = await connect(nursery, server.port)
    await c.send({"type": "playback", "ref": 7, "action": "pause"})
    err = await c.recv_text("error")
    assert err["code"] == "not_replay" and err["ref"] == 7


async def test_replay_command_serves_the_recording_as_live_streams(tmp_path):
    batches = write(tmp_path / "r.mcap")
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "sensorstream", "replay", str(tmp_path / "r.mcap"), "--port", "0", "--speed", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    try:
        out = b""
        with trio.fail_after(20):
            while b"dashboard at" not in out:
                chunk = await proc.stdout.receive_some(4096)
                assert chunk, out
                out += chunk
        port = int(re.search(rb"http://127\.0\.0\.1:(\d+)/", out).group(1))
        got = []
        # history_s: whatever was published before we subscribed comes first.
        async with open_client(f"ws://127.0.0.1:{port}/ws", ["dev/*"], history_s=60) as client:
            with trio.fail_after(20):
                async for b in client:
                    got.append((client.streams[b.key].id, b.seq, b.timestamps.copy(), b.values.copy()))
                    if len(got) == len(batches):
                        break
            assert {i.id: [c.unit for c in i.channels] for i in client.streams.values()} == {"dev/a": ["V", "V"], "dev/b": ["A"]}
        assert [(g[0], g[1]) for g in got] == [(b[0], b[1]) for b in batches]
        for g, b in zip(got, batches):
            assert np.array_equal(g[2], b[2]) and np.array_equal(g[3], b[3])
    finally:
        proc.terminate()
        with trio.fail_after(10):
            await proc.wait()


async def test_export_endpoint_equals_the_recording_for_the_same_range(make_server, nursery, tmp_path):
    server = await make_server(simulate=True, record=str(tmp_path))
    async with open_client(f"ws://127.0.0.1:{server.port}/ws", ["sim/imu"]) as client:
        ts = []
        with trio.fail_after(20):
            async for b in client:
                ts.append(float(b.timestamps[-1]))
                if len(ts) >= 30:
                    break
    start, end = ts[5] + 0.0123, ts[25]
    csv_resp = await http_get(server.port, f"GET /export?stream=sim/imu&from={start!r}&to={end!r}&format=csv HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    npz_resp = await http_get(server.port, f"GET /export?stream=sim/imu&from={start!r}&to={end!r}&format=npz HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    bad = await http_get(server.port, b"GET /export?stream=nope HTTP/1.1\r\nHost: x\r\n\r\n")
    await server.shutdown()
    with trio.fail_after(10):
        await server.recorder.closed.wait()
    assert csv_resp.startswith(b"HTTP/1.1 200") and b"attachment" in csv_resp.partition(b"\r\n\r\n")[0]
    assert bad.startswith(b"HTTP/1.1 404")
    with recording.open(server.recorder.stats.files[0]) as rec:
        t, v = rec.stream("sim/imu").read(start, end)
    assert len(t) > 100
    rows = [r.split(",") for r in csv_resp.partition(b"\r\n\r\n")[2].decode().splitlines()[2:]]
    assert np.array_equal(np.array([float(r[1]) for r in rows]), t)
    assert np.array_equal(np.array([[np.float32(x) for x in r[2:]] for r in rows]).T, v)
    z = np.load(io.BytesIO(npz_resp.partition(b"\r\n\r\n")[2]))
    assert np.array_equal(z["sim/imu/t"], t) and np.array_equal(z["sim/imu/values"], v)


async def test_export_endpoint_needs_the_token_and_a_valid_request(make_server):
    server = await make_server(simulate=True, token="s3cret")
    no = await http_get(server.port, b"GET /export?stream=sim/imu HTTP/1.1\r\nHost: x\r\n\r\n")
    assert no.startswith(b"HTTP/1.1 401")
    for q, status in [(b"", b"400"), (b"stream=sim/imu&format=xls", b"400"), (b"stream=sim/imu&from=abc", b"400"),
                      (b"stream=sim/imu&from=nan", b"400")]:
        r = await http_get(server.port, b"GET /export?" + q + b"&token=s3cret HTTP/1.1\r\nHost: x\r\n\r\n")
        assert r.startswith(b"HTTP/1.1 " + status), (q, r[:80])
