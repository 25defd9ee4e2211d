import json

import numpy as np
import pytest

from sensorstream.hub import FRAME_OVERHEAD, HubError, HubLimits, LocalHub
from sensorstream.protocol import Channel, decode_batch


class Sink:
    def __init__(self):
        self.frames = []
        self.texts = []

    def deliver(self, frame):
        self.frames.append(frame)

    def notify(self, text):
        self.texts.append(json.loads(text))


def pub(hub, key, seq, t):
    hub.publish(key, seq, np.array([t], dtype=np.float64), np.array([[seq]], dtype=np.float32))


def test_fan_out_hands_every_subscriber_the_same_bytes_object():
    hub = LocalHub()
    info = hub.add_stream("sim/a", [Channel("x")])
    subs = [Sink() for _ in range(5)]
    for s in subs:
        hub.attach(s)
        hub.subscribe(s, ["sim/a"])
    pub(hub, info.key, 0, 1.0)
    frames = [s.frames[0] for s in subs]
    assert all(f is frames[0] for f in frames)
    assert decode_batch(frames[0].payload).seq == 0


def test_glob_subscription_covers_streams_added_later_and_catalog_updates_are_announced():
    hub = LocalHub()
    s = Sink()
    hub.attach(s)
    keys = hub.subscribe(s, ["dev/*"]).keys
    assert keys == []
    other = hub.add_stream("other", [Channel("x")])
    info = hub.add_stream("dev/b", [Channel("x")])
    pub(hub, other.key, 0, 1.0)
    pub(hub, info.key, 0, 1.0)
    assert [f.key for f in s.frames] == [info.key]
    assert [t["type"] for t in s.texts] == ["stream", "stream"]
    hub.update_stream(info.key, status="disconnected")
    assert s.texts[-1]["stream"]["status"] == "disconnected"
    hub.remove_stream(info.key)
    assert s.texts[-1] == {"type": "stream_removed", "key": info.key}


def test_unknown_stream_is_an_error_and_changes_nothing():
    hub = LocalHub()
    a = hub.add_stream("a", [Channel("x")])
    s = Sink()
    hub.attach(s)
    with pytest.raises(HubError) as e:
        hub.subscribe(s, ["a", "missing"])
    assert e.value.code == "unknown_stream"
    pub(hub, a.key, 0, 0.0)
    assert s.frames == []


def test_history_is_bounded_in_seconds_and_bytes_and_meets_live_exactly():
    hub = LocalHub(HubLimits(history_s=10, history_bytes=10_000))
    info = hub.add_stream("a", [Channel("x")])
    for seq in range(100):
        pub(hub, info.key, seq, float(seq))  # one batch per second
    s = Sink()
    hub.attach(s)
    hist = hub.subscribe(s, ["a"], history_s=1000).history  # asks for more than is kept
    assert [f.seq for f in hist] == list(range(89, 100))  # the last 10 s (t >= 99 - 10)
    pub(hub, info.key, 100, 100.0)
    assert [f.seq for f in s.frames] == [100]  # live continues at the next seq: no gap, no duplicate
    # byte cap: 60 bytes per frame here
    small = LocalHub(HubLimits(history_s=1e9, history_bytes=600))
    k = small.add_stream("a", [Channel("x")]).key
    for seq in range(100):
        pub(small, k, seq, float(seq))
    hist = small.subscribe(Sink(), ["a"], history_s=1e9).history
    assert sum(len(f.payload) for f in hist) <= 600 and hist[-1].seq == 99


def test_readding_a_stream_keeps_key_and_seq():
    hub = LocalHub()
    a = hub.add_stream("a", [Channel("x")])
    pub(hub, a.key, 0, 0.0)
    pub(hub, a.key, 1, 1.0)
    hub.update_stream(a.key, status="disconnected")
    again = hub.add_stream("a", [Channel("x")])
    assert again.key == a.key and again.status == "live" and hub.next_seq(a.key) == 2


def test_limits_on_streams_and_channels():
    hub = LocalHub(HubLimits(max_streams=2, max_channels=3))
    hub.add_stream("a", [Channel("x")])
    with pytest.raises(HubError):
        hub.add_stream("b", [Channel(str(i)) for i in range(4)])
    hub.add_stream("b", [Channel("x")])
    with pytest.raises(HubError):
        hub.add_stream("c", [Channel("x")])


def test_detach_and_unsubscribe_stop_delivery():
    hub = LocalHub()
    a = hub.add_stream("a", [Channel("x")])
    s1, s2 = Sink(), Sink()
    for s in (s1, s2):
        hub.attach(s)
        hub.subscribe(s, ["*"])
    assert hub.unsubscribe(s1, ["a"]) == [a.key]
    hub.detach(s2)
    pub(hub, a.key, 0, 0.0)
    assert s1.frames == [] and s2.frames == [] and hub.subscriber_count() == 0


def test_client_glob_patterns_live_only_as_long_as_their_subscription():
    """Clients choose glob patterns. fnmatch would keep each one compiled for the
    life of the process (up to 32,768 of them, KiBs each); the hub's matchers
    go with the subscription, and still cover streams added later."""
    import fnmatch
    import gc
    import weakref

    hub = LocalHub()
    hub.add_stream("sim/a", [Channel("x")])
    cached = fnmatch._compile_pattern.cache_info().currsize
    s = Sink()
    hub.attach(s)
    pats = [f"sim/{i}*" for i in range(600)]  # more than re's own cache keeps (512)
    for i in range(0, len(pats), 16):
        hub.subscribe(s, pats[i:i + 16])
    first = weakref.ref(hub._patterns[s]["sim/0*"].__self__)
    later = hub.add_stream("sim/42x", [Channel("x")])
    pub(hub, later.key, 0, 1.0)
    assert len(s.frames) == 1  # a glob picked up a stream added after it
    assert fnmatch._compile_pattern.cache_info().currsize == cached
    hub.unsubscribe(s, pats[300:])
    assert len(hub._patterns[s]) == 300
    hub.detach(s)
    gc.collect()
    assert s not in hub._patterns and first() is None


def test_history_of_several_streams_arrives_oldest_first_across_them():
    # docs/protocol.md: a subscription's history comes oldest first. Per stream,
    # seq order is kept even where a device's clock stepped back (b's third batch).
    hub = LocalHub()
    a = hub.add_stream("dev/a", [Channel("x")]).key
    b = hub.add_stream("dev/b", [Channel("x")]).key
    for key, seq, t in [(b, 0, 1.0), (a, 0, 1.5), (a, 1, 2.0), (b, 1, 2.5), (a, 2, 3.0), (b, 2, 2.2), (a, 3, 4.0)]:
        pub(hub, key, seq, t)
    hist = hub.subscribe(Sink(), ["dev/*"], history_s=60).history
    # b's third batch (t 2.2) comes before a's (t 3.0), but after b's second (t 2.5).
    assert [(f.key, f.seq) for f in hist] == [(b, 0), (a, 0), (a, 1), (b, 1), (b, 2), (a, 2), (a, 3)]
    # With resume points too (the batches after each point).
    hist = hub.subscribe(Sink(), ["dev/*"], resume={"dev/a": (hub.catalog()[0].epoch, 0), "dev/b": (hub.catalog()[1].epoch, 0)}).history
    assert [(f.key, f.seq) for f in hist] == [(a, 1), (b, 1), (b, 2), (a, 2), (a, 3)]


@pytest.mark.parametrize("samples", [1, 500])
async def test_history_memory_is_what_its_byte_cap_says(samples):
    """Measured, not counted: history of a stream with a subscriber (so every frame
    also got its WebSocket framing) stays within its byte cap, for tiny batches
    (object overhead dominates) and big ones (a framed copy kept with each frame
    would double it)."""
    import gc
    import tracemalloc

    from sensorstream.server.ws import Framer

    framer = Framer()

    class Wire(Sink):
        def deliver(self, frame):
            framer.of(frame)

    cap = 1024 * 1024
    hub = LocalHub(HubLimits(history_s=1e9, history_bytes=cap))
    info = hub.add_stream("s", [Channel(c) for c in "abcd"])
    sub = Wire()
    hub.attach(sub)
    hub.subscribe(sub, ["s"])
    ts, vals = np.arange(samples, dtype=np.float64), np.ones((4, samples), np.float32)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for seq in range(2 * cap // (24 + 24 * samples + FRAME_OVERHEAD)):  # two caps' worth
            hub.publish(info.key, seq, ts + seq, vals)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(hub._streams[info.key].history) > 50
    assert used <= 1.1 * cap, f"{used / 2**20:.2f} MiB for a {cap / 2**20:.0f} MiB cap"
