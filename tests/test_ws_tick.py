"""One write per client per tick: the default simulators close their batches on one
clock grid, and each client gets all of a tick's frames in one write. On MockClock,
stepped one window at a time, with the real server and real TCP clients."""

import json

import trio
import trio.testing

from sensorstream.config import ServerConfig
from sensorstream.ingest.batching import grid_after
from sensorstream.server.app import Server

from .wire import FrameReader, masked_frame, raw_handshake

WINDOW = 0.05


async def step(clock) -> None:
    """To just past the next boundary of the window grid, and let everything due run."""
    now = trio.current_time()
    clock.jump(grid_after(now, WINDOW) - now + 1e-6)
    await trio.testing.wait_all_tasks_blocked()


async def test_each_client_gets_a_ticks_frames_in_one_write(nursery, mock_clock):
    server = Server(ServerConfig(host="127.0.0.1", port=0, simulate=True, window_s=WINDOW, ping_interval=1e6, heartbeat_s=1e6))
    await nursery.start(server.run)
    readers = []
    for _ in range(3):
        stream, rest = await raw_handshake(server.port)
        await stream.send_all(masked_frame(json.dumps({"type": "subscribe", "streams": ["sim/*"]}).encode()))
        reader = FrameReader(stream, rest)
        while (await reader.message())[1].get("type") != "subscribed":
            pass
        readers.append(reader)
    await step(mock_clock)  # the first tick after subscribing may be partial
    st = server.stats
    per_tick = []
    for _ in range(20):
        w0, f0 = st.writes_total, st.frames_sent_total
        await step(mock_clock)
        per_tick.append((st.writes_total - w0, st.frames_sent_total - f0))
    # sim/imu (200 Hz) and sim/power (100 Hz) publish every tick, sim/env (10 Hz) every other one.
    assert all(w == 3 for w, _ in per_tick), per_tick  # one write per client
    assert {f for _, f in per_tick} == {6, 9}, per_tick  # of two or three frames each
    # And the clients got them whole: every stream's seqs in order, none missing.
    for reader in readers:
        seqs: dict[int, list[int]] = {}
        while sum(map(len, seqs.values())) < sum(f for _, f in per_tick) // 3:
            kind, m = await reader.message()
            if kind == "batch":
                seqs.setdefault(m["key"], []).append(m["seq"])
        assert len(seqs) == 3
        for s in seqs.values():
            assert s == list(range(s[0], s[0] + len(s)))
