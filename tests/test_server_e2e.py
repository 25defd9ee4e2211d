"""End to end over real sockets on 127.0.0.1, checked with the independent client in tests/wire.py."""

import json

import numpy as np
import trio

from sensorstream.sources.simulator import SignalModel, default_profiles

from .wire import connect, masked_frame, raw_handshake, stalled_and_healthy


async def test_hello_lists_the_catalog(make_server, nursery):
    server = await make_server(simulate=True, seed=1)
    c = await connect(nursery, server.port)
    h = c.hello
    assert h["protocol"] == 1 and h["server"].startswith("sensorstream/") and h["session"] and h["heartbeat_s"] > 0
    ids = {s["id"]: s for s in h["streams"]}
    assert set(ids) == {"sim/env", "sim/imu", "sim/power"}
    assert [ch["name"] for ch in ids["sim/imu"]["channels"]] == ["ax", "ay", "az", "gx", "gy", "gz"]
    assert ids["sim/env"]["channels"][0] == {"name": "temperature", "unit": "°C"}
    assert ids["sim/imu"]["status"] == "live" and ids["sim/imu"]["rate_hz"] == 200


async def test_history_then_live_decode_to_the_simulators_values(make_server, nursery):
    """Subscribe with history from the start: seq 0.. arrive replayed then live, no gap, no duplicate,
    and the values are exactly what the seeded simulator generates."""
    server = await make_server(simulate=True, seed=3)
    c = await connect(nursery, server.port)
    imu_key = next(s["key"] for s in c.hello["streams"] if s["id"] == "sim/imu")
    await c.send({"type": "subscribe", "ref": 1, "streams": ["sim/imu"], "history_s": 60})
    assert await c.recv_text("subscribed") == {"type": "subscribed", "ref": 1, "keys": [imu_key]}
    batches = []
    with trio.fail_after(10):
        while sum(len(b["t"]) for b in batches) < 400 or not any(not (b["flags"] & 1) for b in batches):
            batches.append(await c.recv_batch())
    assert all(b["key"] == imu_key for b in batches)
    seqs = [b["seq"] for b in batches]
    assert seqs == list(range(0, len(seqs)))
    flags = [b["flags"] & 1 for b in batches]
    assert flags == sorted(flags, reverse=True)  # replayed first, then live
    values = np.hstack([b["values"] for b in batches])
    expected = SignalModel(next(p for p in default_profiles() if p.id == "sim/imu"), seed=3).generate(0, values.shape[1])
    np.testing.assert_array_equal(values, expected)
    ts = np.concatenate([b["t"] for b in batches])
    np.testing.assert_allclose(np.diff(ts), 1 / 200, atol=1e-6)


async def test_unsubscribe_stops_data_and_glob_matches(make_server, nursery):
    server = await make_server(simulate=True)
    c = await connect(nursery, server.port)
    await c.send({"type": "subscribe", "ref": "a", "streams": ["sim/*"]})
    sub = await c.recv_text("subscribed")
    assert len(sub["keys"]) == 3
    seen = set()
    with trio.fail_after(5):
        while len(seen) < 3:
            seen.add((await c.recv_batch())["key"])
    await c.send({"type": "unsubscribe", "ref": "b", "streams": ["sim/*"]})
    # Frames already on the wire may still arrive before the reply; none after it.
    while True:
        kind, m = await c.recv()
        if kind == "text" and m["type"] == "unsubscribed":
            assert m["ref"] == "b" and sorted(m["keys"]) == sorted(sub["keys"])
            break
    await c.send({"type": "ping", "ref": 42})
    kind, m = await c.recv()
    assert (kind, m) == ("text", {"type": "pong", "ref": 42})


async def test_bad_requests_get_typed_errors_and_the_connection_survives(make_server, nursery):
    server = await make_server(simulate=True)
    c = await connect(nursery, server.port)
    cases = [
        ("{nope", "invalid_json"),
        ('{"ref": 5}', "missing_type"),
        ('{"type": "launch", "ref": 6}', "unknown_type"),
        ('{"type": "subscribe", "ref": 7, "streams": ["no/such"]}', "unknown_stream"),
        ('{"type": "subscribe", "ref": 8, "streams": 3}', "bad_field"),
    ]
    for text, code in cases:
        await c.send(text)
        m = await c.recv_text("error")
        assert m["code"] == code and isinstance(m["message"], str)
    await c.ws.send_message(b"\x01\x02")  # binary from a client
    assert (await c.recv_text("error"))["code"] == "binary_not_supported"
    await c.send({"type": "subscribe", "ref": 9, "streams": ["sim/env"]})
    assert (await c.recv_text("subscribed"))["ref"] == 9
    assert (await c.recv_batch())["values"].shape[0] == 3
    assert server.stats.protocol_errors_total == 6


async def test_many_concurrent_clients_get_identical_bytes(make_server, nursery):
    server = await make_server(simulate=True)
    clients = [await connect(nursery, server.port) for _ in range(40)]
    for c in clients:
        await c.send({"type": "subscribe", "streams": ["sim/power"]})
        await c.recv_text("subscribed")
    firsts = [await c.recv_batch() for c in clients]
    # Each client sees consecutive seqs from wherever it joined; all agree on content per seq.
    by_seq = {}
    for c, first in zip(clients, firsts):
        for b in [first] + [await c.recv_batch() for _ in range(5)]:
            by_seq.setdefault(b["seq"], []).append(b["values"].tobytes())
    assert all(len(set(v)) == 1 for v in by_seq.values())
    assert server.stats.connections_open == 40


async def test_heartbeat_on_idle_connection(make_server, nursery):
    server = await make_server(heartbeat_s=0.2)
    c = await connect(nursery, server.port)
    with trio.fail_after(2):
        m = await c.recv_text()
    assert m["type"] == "heartbeat" and m["t"] > 1.7e9


async def test_silent_consumer_is_dropped_within_interval_plus_timeout(make_server):
    """A client that completes the handshake, subscribes, then never reads or pongs."""
    interval, timeout = 0.3, 0.5
    server = await make_server(simulate=True, ping_interval=interval, ping_timeout=timeout)
    stream, _ = await raw_handshake(server.port, rcvbuf=4096)
    await stream.send_all(masked_frame(json.dumps({"type": "subscribe", "streams": ["sim/*"]}).encode()))
    await server.wait_sessions(lambda s: len(s) == 1)
    t0 = trio.current_time()
    with trio.fail_after(interval + timeout + 3):
        await server.wait_sessions(lambda s: len(s) == 0)
    # The promise: freed within interval + timeout + 1 s (exact timing is tested
    # on MockClock in test_liveness_mockclock; this is the real-socket path).
    assert trio.current_time() - t0 <= interval + timeout + 1.0
    assert server.stats.ping_timeouts_total == 1
    # the server closed its end: reading now ends (after draining what was sent)
    with trio.fail_after(2):
        while await stream.receive_some(65536):
            pass
    await stream.aclose()


async def test_stalled_client_does_not_slow_a_healthy_one(make_server, nursery):
    # If the stalled client held up the fan-out, the healthy one would see a gap
    # of the whole send timeout (2 s); the bound below sits well under that and
    # well over a stall of a loaded machine (gaps are ~0.06 s).
    server = await make_server(simulate=True, imu_rate=20_000, queue_batches=8, send_timeout=2.0, ping_interval=60)
    stalled, healthy = await stalled_and_healthy(nursery, server.port, "sim/imu")
    got = []
    lags = []
    with trio.fail_after(15):
        while len(got) < 80:  # ~4 s of 20 kHz IMU in 50 ms batches
            b = await healthy.recv_batch()
            got.append(b["seq"])
            lags.append(trio.current_time())
    # The healthy client saw every batch, in order, with no drop notices.
    assert got == list(range(got[0], got[0] + len(got)))
    # ...and the stalled one was dropped from (queue overflow) then cut off (send timeout).
    assert server.stats.dropped_batches_total > 0
    with trio.fail_after(5):
        await server.wait_sessions(lambda s: len(s) == 1)
    assert server.stats.send_timeouts_total >= 1
    # Batches kept arriving at the healthy client at the simulator's pace throughout.
    gaps = np.diff(lags)
    assert gaps.max() < 1.0
    await stalled.aclose()


async def test_plain_http_routes(make_server):
    from .wire import http_get

    server = await make_server(simulate=True)
    r = await http_get(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = r.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"application/json" in head
    health = json.loads(body)
    assert health["status"] == "ok" and {s["id"] for s in health["streams"]} == {"sim/env", "sim/imu", "sim/power"}
    r = await http_get(server.port, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.startswith(b"HTTP/1.1 404")
    r = await http_get(server.port, b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.startswith(b"HTTP/1.1 426")
    r = await http_get(server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.startswith(b"HTTP/1.1 200") and b"sensorstream_stream_batches_total" in r
    r = await http_get(server.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert r.startswith(b"HTTP/1.1 405")
