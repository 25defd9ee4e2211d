"""Replay as a source: the recorded batches again, in order, on time (MockClock),
under pause, seek and speed."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import trio

from sensorstream.hub import LocalHub
from sensorstream.protocol import Channel, StreamInfo, decode_batch, encode_batch
from sensorstream.recording.writer import RecordingWriter
from sensorstream.sources.replay import PlaybackClock, Replay

A = StreamInfo(1, "dev/a", (Channel("x", "V"), Channel("y", "V")), 50.0, device="dev")
B = StreamInfo(2, "dev/b", (Channel("z", "A"),), 5.0, device="dev")
T0 = 1_800_000_000.0
# Irregular gaps between batch ends, as a real recording has.
ENDS = T0 + np.cumsum([0.0, 0.05, 0.05, 0.2, 0.01, 0.5, 0.05, 0.05, 1.0, 0.05, 0.3, 0.05])


def write(path):
    rng = np.random.default_rng(2)
    batches = []
    with open(path, "wb") as f:
        w = RecordingWriter(f, chunk_bytes=300)
        for i, end in enumerate(ENDS):
            info = A if i % 3 else B
            n = 4 if info is A else 1
            t = end - np.arange(n)[::-1] * 0.002
            v = rng.standard_normal((len(info.channels), n)).astype(np.float32)
            w.write(info, i, end, encode_batch(info.key, i, t, v), time.time())
            batches.append((info.id, i, t, v))
        w.close()
    return batches


class Watcher:
    """A hub subscriber that notes when each batch arrives (on trio's clock) and catalog changes."""

    def __init__(self, hub):
        self.hub = hub
        self.got = []  # (clock time, stream id, seq, timestamps, values)
        self.notes = []
        self.changed = trio.Event()
        hub.attach(self)
        self.ids = {}

    def deliver(self, frame):
        b = decode_batch(frame.payload)
        sid = next(i.id for i in self.hub.catalog() if i.key == frame.key)
        self.got.append((trio.current_time(), sid, b.seq, b.timestamps.copy(), b.values.copy()))
        self.changed.set()
        self.changed = trio.Event()

    def notify(self, text):
        m = json.loads(text)
        self.notes.append(m["type"])
        if m["type"] == "stream" and m["stream"]["status"] == "live":
            self.hub.subscribe(self, [m["stream"]["id"]])

    async def wait(self, n):
        while len(self.got) < n:
            await self.changed.wait()


def test_playback_clock_maps_recording_time_under_pause_speed_and_seek():
    c = PlaybackClock(100.0, now=10.0)
    assert c.due(101.0) == 11.0 and c.position(10.5) == 100.5
    c.set_speed(2.0, now=11.0)  # at recording time 101
    assert c.due(103.0) == 12.0 and c.position(11.5) == 102.0
    c.pause(now=12.0)
    assert c.due(200.0) is None and c.position(50.0) == 103.0
    c.resume(now=20.0)
    assert c.due(104.0) == 20.5
    c.seek(50.0, now=21.0)
    assert c.position(21.0) == 50.0 and c.due(51.0) == 21.5
    c.set_speed(0.0, now=22.0)
    assert c.due(1e9) == -np.inf
    c.reached(60.0, now=22.0)
    assert c.position(99.0) == 60.0


@pytest.mark.parametrize("speed", [1.0, 2.0, 0.5])
async def test_replay_sends_the_same_batches_with_the_original_gaps_scaled(tmp_path, nursery, autojump_clock, speed):
    batches = write(tmp_path / "r.mcap")
    hub = LocalHub()
    w = Watcher(hub)
    replay = Replay(hub, tmp_path / "r.mcap", speed=speed)
    nursery.start_soon(replay.run)
    with trio.fail_after(60):
        await w.wait(len(batches))
    assert [(sid, seq) for _, sid, seq, _, _ in w.got] == [(sid, seq) for sid, seq, _, _ in batches]
    for (_, _, _, t, v), (_, _, et, ev) in zip(w.got, batches):
        assert np.array_equal(t, et) and np.array_equal(v, ev)
    gaps = np.diff([at for at, *_ in w.got])
    np.testing.assert_allclose(gaps, np.diff(ENDS) / speed, rtol=0.05, atol=1e-9)
    assert {i.id: i.channels for i in hub.catalog()} == {"dev/a": A.channels, "dev/b": B.channels}
    assert {i.id: i.rate_hz for i in hub.catalog()} == {"dev/a": 50.0, "dev/b": 5.0}


async def test_pause_holds_everything_and_resume_keeps_the_timing(tmp_path, nursery, autojump_clock):
    write(tmp_path / "r.mcap")
    hub = LocalHub()
    w = Watcher(hub)
    replay = Replay(hub, tmp_path / "r.mcap")
    states = []
    replay.on_state = states.append
    nursery.start_soon(replay.run)
    await w.wait(4)  # up to ENDS[3]
    state = replay.pause()
    assert state["paused"] and state["position"] == pytest.approx(ENDS[3], abs=1e-6) and states[-1] == state
    paused_at = trio.current_time()
    await trio.sleep(100)
    assert len(w.got) == 4
    replay.resume()
    await w.wait(5)
    assert w.got[4][0] - paused_at == pytest.approx(100 + ENDS[4] - ENDS[3], abs=1e-6)


async def test_seek_back_restarts_the_streams_and_seek_forward_skips(tmp_path, nursery, autojump_clock):
    batches = write(tmp_path / "r.mcap")
    hub = LocalHub()
    w = Watcher(hub)
    replay = Replay(hub, tmp_path / "r.mcap")
    nursery.start_soon(replay.run)
    await w.wait(6)
    replay.seek(ENDS[1])
    await w.wait(7)
    # Time runs backwards: the streams were removed and added again first.
    assert "stream_removed" in w.notes
    assert (w.got[6][1], w.got[6][2]) == (batches[1][0], batches[1][1])
    replay.seek(ENDS[10])
    await w.wait(8)
    assert w.got[7][2] == 10
    replay.set_speed(4.0)
    await w.wait(9)
    assert w.got[8][0] - w.got[7][0] == pytest.approx((ENDS[11] - ENDS[10]) / 4, rel=0.05)
    # At the end it says so, and waits for a seek.
    await trio.sleep(10)
    assert replay.state()["ended"] and len(w.got) == 9


async def test_loop_starts_over(tmp_path, nursery, autojump_clock):
    batches = write(tmp_path / "r.mcap")
    hub = LocalHub()
    w = Watcher(hub)
    nursery.start_soon(Replay(hub, tmp_path / "r.mcap", speed=10, loop=True).run)
    await w.wait(2 * len(batches) + 1)
    assert [seq for _, _, seq, _, _ in w.got] == [b[1] for b in batches] * 2 + [0]
