"""`replay --speed 0`: as fast as the clients read. The pure decision, a real server
with a slow reader (every batch, no `dropped`), and a client that stops reading
for good (closed by the liveness rules; the replay goes on), on MockClock."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import trio
import trio.testing
import wsproto
from wsproto.events import BytesMessage, Ping, TextMessage

from sensorstream.config import ServerConfig
from sensorstream.protocol import Channel, StreamInfo, encode_batch
from sensorstream.recording.cli import make_replay_server
from sensorstream.recording.writer import RecordingWriter
from sensorstream.sources.pacing import PaceLimits, may_publish

from .conftest import eventually
from .test_liveness_mockclock import handshake, start_session
from .test_replay import write
from .wire import FrameReader, decode, masked_frame, raw_handshake

LIMITS = PaceLimits(frames=4, bytes=1000)


def test_a_batch_goes_out_once_every_client_of_its_stream_has_room():
    assert may_publish([(0, 0), (3, 999)], 2, LIMITS)
    assert not may_publish([(0, 0), (4, 0)], 2, LIMITS)  # one client has 4 frames queued
    assert not may_publish([(0, 0), (1, 1000)], 2, LIMITS)  # ... or 1000 bytes
    assert may_publish([None, (0, 0)], 2, LIMITS)  # a recorder takes everything at once
    assert may_publish([], 1, LIMITS)  # nobody on this stream, somebody on another: no one to wait for
    assert not may_publish([], 0, LIMITS)  # nobody reading at all: wait for the first client
    assert PaceLimits.for_outbox(256, 16 << 20) == PaceLimits(128, 8 << 20)
    assert PaceLimits.for_outbox(1, 1) == PaceLimits(1, 1)


def write_wide(path, n_batches: int, n: int = 1000) -> int:
    info = StreamInfo(1, "dev/wide", (Channel("x", "V"), Channel("y", "V")), 1000.0, device="dev")
    t0 = 1_800_000_000.0
    with open(path, "wb") as f:
        w = RecordingWriter(f, compression="none")
        for i in range(n_batches):
            t = t0 + (i * n + np.arange(n)) / 1000.0
            w.write(info, i, float(t[-1]), encode_batch(1, i, t, np.full((2, n), i, np.float32)), time.time())
        w.close()
    return n_batches


@pytest.mark.parametrize("how", ["flag", "message"])
async def test_at_speed_0_a_slow_reader_gets_every_batch_and_no_dropped_notice(nursery, tmp_path, how):
    # how: `replay --speed 0`, or a replay at speed 1 switched to 0 by a playback message.
    n = write_wide(tmp_path / "r.mcap", 600)  # 16 KB batches: ~10 MB, more than the socket buffers hold
    # An outbox of 8 batches: publishing without waiting would overflow it at once.
    server = make_replay_server(ServerConfig(host="127.0.0.1", port=0, queue_batches=8, ping_interval=60), tmp_path / "r.mcap",
                                speed=0 if how == "flag" else 1)
    await nursery.start(server.run)
    pacer = server.replay.pacer
    stream, rest = await raw_handshake(server.port, rcvbuf=4096)
    reader = FrameReader(stream, rest)
    subscribe = {"type": "subscribe", "ref": 1, "streams": ["*"]}
    if how == "message":
        await stream.send_all(masked_frame(json.dumps({"type": "playback", "ref": 0, "action": "speed", "speed": 0}).encode()))
        while True:  # the answer: from now on the replay waits for its clients
            kind, m = await reader.message()
            if kind == "text" and m.get("type") == "playback" and m.get("ref") == 0:
                assert m["state"]["speed"] == 0
                break
        subscribe["history_s"] = 60  # what speed 1 published before the switch
    await stream.send_all(masked_frame(json.dumps(subscribe).encode()))
    seqs, pauses = [], 0
    with trio.fail_after(60):
        while len(seqs) < n:
            kind, m = await reader.message()
            if kind == "text":
                assert m["type"] != "dropped", m
                continue
            seqs.append(m["seq"])
            assert np.all(m["values"] == m["seq"])
            if len(seqs) in (50, 200):
                # Stop reading until the replay waits for us (our queue is full), then read on. (Early
                # enough that what is left outgrows the socket buffers: at most 4 MiB, 256 batches.)
                await eventually(lambda: pacer.holding, timeout=30)
                pauses += 1
    assert seqs == list(range(n)) and pauses == 2
    assert server.stats.dropped_batches_total == 0
    await eventually(lambda: server.replay.ended)


async def _subscribe(client: wsproto.WSConnection, end, history_s: float = 0.0) -> None:
    """Send a subscribe and read up to its `subscribed` reply."""
    await end.send_all(client.send(TextMessage(json.dumps({"type": "subscribe", "ref": 1, "streams": ["dev/*"], "history_s": history_s}))))
    while True:
        client.receive_data(await end.receive_some())
        if any(isinstance(e, TextMessage) and '"subscribed"' in e.data for e in client.events()):
            return


async def test_at_speed_0_a_client_that_stops_reading_is_closed_and_the_replay_goes_on(nursery, autojump_clock, tmp_path):
    batches = write(tmp_path / "r.mcap")
    cfg = ServerConfig(ping_interval=5, ping_timeout=10, send_timeout=10, heartbeat_s=1000, queue_batches=4)
    server = make_replay_server(cfg, tmp_path / "r.mcap", speed=0)
    replay = server.replay
    nursery.start_soon(replay.run)  # (Server.run would start it; these sessions run over in-memory streams)
    # First a client that subscribes, then never reads again: a write to it blocks (lockstep
    # streams behave like a full TCP window), its queue fills, and the replay waits for it.
    stalled_end, stalled_done = start_session(nursery, server, trio.testing.lockstep_stream_pair)
    stalled, _ = await handshake(stalled_end)
    t0 = trio.current_time()
    await _subscribe(stalled, stalled_end)
    await eventually(lambda: replay.pacer.holding)
    # A healthy client, which also answers pings: what went out before it came arrives as history.
    end, _ = start_session(nursery, server)
    client, _ = await handshake(end)
    await _subscribe(client, end, history_s=60)
    seqs, texts = [], []
    with trio.fail_after(120):
        while len(seqs) < len(batches):
            client.receive_data(await end.receive_some())
            for e in client.events():
                if isinstance(e, Ping):
                    await end.send_all(client.send(e.response()))
                elif isinstance(e, BytesMessage):
                    seqs.append(decode(bytes(e.data))["seq"])
                elif isinstance(e, TextMessage):
                    texts.append(json.loads(e.data)["type"])
    # The stalled client was closed by the liveness rules, not before; then the replay went on to the end.
    assert stalled_done.is_set() and trio.current_time() - t0 >= 10
    assert server.stats.ping_timeouts_total + server.stats.send_timeouts_total == 1
    # (History comes stream by stream, so the first few are in another order.)
    assert sorted(seqs) == [seq for _, seq, _, _ in batches] and "dropped" not in texts
    await eventually(lambda: replay.ended)
    assert replay.pacer.waits >= 2  # (for the first client, then for the stalled one)
