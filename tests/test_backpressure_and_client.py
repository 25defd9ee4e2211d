"""A slow reader is told what it lost; the Python client reconnects by itself."""

import json

import numpy as np
import pytest
import trio

from sensorstream.client import open_client
from sensorstream.config import ServerConfig
from sensorstream.server.app import Server

from .conftest import eventually
from .wire import FrameReader, masked_frame, raw_handshake


@pytest.mark.parametrize("limit", [{"queue_batches": 4}, {"queue_batches": 10_000, "queue_mb": 0.15}],
                         ids=["batches", "bytes"])
async def test_slow_reader_gets_dropped_message_matching_the_seq_gap(make_server, limit):
    """Either limit of the queue (frames, or bytes: ~5 of these 32 KiB batches)."""
    server = await make_server(simulate=True, imu_rate=20_000, send_timeout=30, ping_interval=60, **limit)
    stream, rest = await raw_handshake(server.port, rcvbuf=4096)
    reader = FrameReader(stream, rest)
    await stream.send_all(masked_frame(json.dumps({"type": "subscribe", "streams": ["sim/imu"]}).encode()))
    # Read up to the first live batch, then stop reading until the server has had to drop.
    while (await reader.message())[0] != "batch":
        pass
    await eventually(lambda: server.stats.dropped_batches_total >= 10, timeout=20)
    (session,) = server.sessions
    assert 0 < session.n_data <= server.cfg.queue_batches
    assert session.n_bytes == sum(f.size for f in session.outbox.queue if hasattr(f, "size"))
    assert session.n_bytes <= server.cfg.queue_mb * 2**20
    seqs, dropped = [], 0
    with trio.fail_after(20):
        while True:
            kind, m = await reader.message()
            if kind == "text" and m["type"] == "dropped":
                assert m["batches"] > 0
                dropped += m["batches"]
            elif kind == "batch":
                seqs.append(m["seq"])
                if dropped and len(seqs) > 2 and np.diff(seqs)[-1] == 1:
                    break
    # The seq gaps the client sees add up to exactly what it was told was dropped
    # (the server may drop more after the notice; those get their own notice).
    gaps = int(np.sum(np.diff(seqs) - 1))
    assert gaps <= dropped and gaps > 0
    await stream.aclose()


async def test_python_client_reconnects_resubscribes_and_skips_duplicates(nursery):
    a = Server(ServerConfig(port=0, simulate=True, seed=1))
    port = await nursery.start(a.run)
    async with open_client(f"ws://127.0.0.1:{port}/ws", ["sim/env"], backoff_min=0.05, backoff_max=0.2) as client:
        it = client.batches()
        first = await it.__anext__()
        assert client.streams[first.key].id == "sim/env"
        await a.shutdown()
        # Same port, a new server process' worth of state: keys and seqs start again.
        b = Server(ServerConfig(port=port, simulate=True, seed=1))
        await nursery.start(b.run)
        with trio.fail_after(10):
            while client.state.connects < 2:
                batch = await it.__anext__()
            batch = await it.__anext__()
        assert client.state.connects == 2
        assert client.streams[batch.key].id == "sim/env"
        assert batch.timestamps[0] > first.timestamps[-1]  # never a duplicate or a step back in time


async def test_client_state_stays_bounded(make_server):
    """A long-lived client keeps the newest server errors, not all of them, and
    forgets a removed stream's per-key state."""
    from sensorstream.client import MAX_ERRORS_KEPT

    server = await make_server(simulate=True, control_rate=1000, control_burst=1000)
    async with open_client(f"ws://127.0.0.1:{server.port}/ws", ["sim/env"]) as client:
        batch = await client.batches().__anext__()
        assert batch.key in client.state.last_seq
        n = MAX_ERRORS_KEPT + 50
        for i in range(n):
            await client.send('{"type": "ping", "ref": %d' % i)  # bad JSON: each answered with an error
        seen = 0
        with trio.fail_after(10):
            async for m in client.events():
                if isinstance(m, dict) and m["type"] == "error":
                    seen += 1
                    if seen == n:
                        server.hub.remove_stream(batch.key)
                elif isinstance(m, dict) and m["type"] == "stream_removed":
                    break
        assert len(client.state.errors) == MAX_ERRORS_KEPT and server.stats.protocol_errors_total == n
        assert client.state.errors[-1]["code"] == "invalid_json"
        assert batch.key not in client.state.last_seq and batch.key not in client.state.dropped


async def test_slow_history_reader_does_not_pin_history_and_is_told_what_it_missed(make_server):
    """A client reading its history more slowly than the server's history moves
    on: the server does not keep the old frames alive for it; the ones gone before
    it got them are skipped and announced with `dropped`, so every gap in its seqs
    is accounted for."""
    import gc
    import weakref

    server = await make_server(simulate=True, imu_rate=50_000, history_mb=2, send_timeout=60, ping_interval=60)
    key = server.hub.stream_by_id("sim/imu").key
    st = server.hub._streams[key]
    await eventually(lambda: st.history_bytes > 1.5 * 2**20)
    first = weakref.ref(st.history[0])
    snapshot_last = st.history[-1].seq
    stream, rest = await raw_handshake(server.port, rcvbuf=4096)
    reader = FrameReader(stream, rest)
    await stream.send_all(masked_frame(json.dumps({"type": "subscribe", "streams": ["sim/imu"], "history_s": 60}).encode()))
    # Not reading: the replay stalls, and the hub's history moves past all of it.
    await eventually(lambda: st.history[0].seq > snapshot_last, timeout=20)
    gc.collect()
    assert first() is None  # not kept alive for the stalled reader
    replayed = dropped = live = 0
    expected = pending = None
    with trio.fail_after(20):
        while live < 5:
            kind, m = await reader.message()
            if kind == "text":
                if m["type"] == "dropped":
                    assert m["key"] == key
                    pending = (pending or 0) + m["batches"]
                    dropped += m["batches"]
                continue
            if expected is not None:
                assert m["seq"] - expected == (pending or 0), (m["seq"], expected, pending)  # every gap announced
            expected, pending = m["seq"] + 1, None
            if m["flags"] & 1:
                replayed += 1
            else:
                live += 1
    assert replayed > 0 and dropped > 0
    await stream.aclose()
