"""Resume by (epoch, seq) end to end on one process (in-process hub), with the Python client."""

from __future__ import annotations

import trio

from sensorstream.client import Gap, open_client
from sensorstream.config import ServerConfig
from sensorstream.server.app import Server


async def _collect(client, until, *, timeout=15):
    out = []
    with trio.fail_after(timeout):
        async for item in client.events():
            out.append(item)
            if until(item, out):
                return out


async def test_a_reconnect_resumes_with_no_gap_and_no_duplicate(make_server):
    server = await make_server(simulate=True)
    async with open_client(f"ws://127.0.0.1:{server.port}/ws", ["sim/imu"], backoff_min=0.05, backoff_max=0.1) as client:
        await _collect(client, lambda item, out: sum(1 for i in out if not isinstance(i, (dict, Gap))) >= 5)
        before = client.state.resume["sim/imu"]
        for s in list(server.sessions):
            s.stop("test: drop the connection", 1001)
        # Through the reconnect until the resumed subscription has delivered live batches.
        items = await _collect(client, lambda item, out: client.state.connects == 2 and any(
            isinstance(i, dict) and i["type"] == "subscribed" for i in out) and sum(
            1 for i in out if hasattr(i, "seq") and not i.replayed) >= 5)
    sub = next(i for i in items if isinstance(i, dict) and i["type"] == "subscribed")
    assert sub["resumed"]["sim/imu"]["recovered"] is True
    assert not any(isinstance(i, Gap) for i in items)
    seqs = [before[1]] + [i.seq for i in items if hasattr(i, "seq")]
    # Every seq after the last one seen before the drop, exactly once, in order.
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    replayed = [i for i in items if hasattr(i, "seq") and i.replayed]
    assert len(replayed) == sub["resumed"]["sim/imu"]["batches"] > 0


async def test_a_restarted_server_is_a_new_epoch_and_the_client_is_told(nursery):
    a = Server(ServerConfig(port=0, host="127.0.0.1", simulate=True))
    port = await nursery.start(a.run)
    async with open_client(f"ws://127.0.0.1:{port}/ws", ["sim/env", "sim/imu"], backoff_min=0.05, backoff_max=0.2) as client:
        await _collect(client, lambda item, out: {"sim/env", "sim/imu"} <= set(client.state.resume))
        old_keys = {i.id: i.key for i in client.streams.values()}
        old_epoch = client.state.resume["sim/imu"][0]
        await a.shutdown()
        b = Server(ServerConfig(port=port, host="127.0.0.1", simulate=True))
        await nursery.start(b.run)
        items = await _collect(client, lambda item, out: client.state.connects == 2 and
                               sum(1 for i in out if isinstance(i, Gap)) == 2 and
                               client.state.resume.get("sim/imu", (old_epoch,))[0] != old_epoch)
    gaps = {g.stream: g for g in items if isinstance(g, Gap)}
    assert {g.reason for g in gaps.values()} == {"epoch_changed"}
    assert set(gaps) == {"sim/env", "sim/imu"}
    # The same profile gives the same keys after a restart (and a new epoch).
    assert {i.id: i.key for i in client.streams.values() if i.id in old_keys} == old_keys
