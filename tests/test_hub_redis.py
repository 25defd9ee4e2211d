"""RedisHub against real redis-server processes (hub level: no WebSocket here;
tests/test_bus_e2e.py runs whole servers)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import trio

from sensorstream import protocol
from sensorstream.hub import HubLimits
from sensorstream.protocol import Channel

from . import test_hub
from .conftest import eventually
from .redis_util import RedisCluster, RedisProc

try:
    import coredis  # noqa: F401
except ImportError:  # the test extra installs it; CI must not silently skip the bus
    if os.environ.get("CI") == "true":
        pytest.fail("coredis is required in CI (pip install '.[test]')", pytrace=False)
    pytest.skip("coredis not installed", allow_module_level=True)
from sensorstream.hub.redis import RedisHub, parse_bus_url  # noqa: E402


class Sink(test_hub.Sink):
    def seqs(self, key=None):
        return [f.seq for f in self.frames if key is None or f.key == key]


@pytest.fixture
async def redis(tmp_path):
    r = await RedisProc(tmp_path).start()
    yield r
    r.kill_now()


def batch(i, n=4, c=2):
    ts = np.arange(n, dtype=np.float64) * 0.01 + i
    vals = (np.arange(c * n, dtype=np.float32).reshape(c, n) + i)
    return ts, vals


async def start_hub(nursery, url, **kw):
    kw.setdefault("ttl_s", 1.0)
    hub = RedisHub(url, HubLimits(history_s=60), **kw)
    await nursery.start(hub.run)
    await eventually(lambda: hub.bus.up, timeout=10)
    return hub


async def test_a_gateway_receives_the_publishers_batches_bit_exact_and_catalogs_agree(redis, nursery):
    pub = await start_hub(nursery, redis.url)
    gw = await start_hub(nursery, redis.url)
    h = pub.add_stream("dev/a", [Channel("x"), Channel("y")]).key
    await eventually(lambda: gw.stream_by_id("dev/a") is not None and pub.stream_by_id("dev/a") is not None)
    sink = Sink()
    gw.attach(sink)
    await gw.ready(["dev/*"])
    got = gw.subscribe(sink, ["dev/*"])
    key = got.keys[0]
    sent = []
    for i in range(20):
        ts, vals = batch(i)
        pub.publish(h, i, ts, vals)
        sent.append(protocol.encode_batch(key, i, ts, vals))
    await eventually(lambda: len(sink.frames) == 20)
    assert [bytes(f.payload) for f in sink.frames] == sent
    a, b = pub.stream_by_id("dev/a"), gw.stream_by_id("dev/a")
    assert (a.key, a.epoch) == (b.key, b.epoch) and a.epoch and a.status == b.status == "live"


async def test_history_and_live_meet_without_gap_or_duplicate_and_resume_recovers(redis, nursery):
    pub = await start_hub(nursery, redis.url)
    gw = await start_hub(nursery, redis.url)
    h = pub.add_stream("dev/a", [Channel("x")]).key
    for i in range(30):
        pub.publish(h, i, *batch(i, c=1))
    await eventually(lambda: pub.bus.written == 30)
    await eventually(lambda: gw.stream_by_id("dev/a") is not None)
    info = gw.stream_by_id("dev/a")
    sink = Sink()
    gw.attach(sink)
    await gw.ready(["dev/a"])
    got = gw.subscribe(sink, ["dev/a"], resume={"dev/a": (info.epoch, 24)})
    assert got.resumed["dev/a"].to_json() == {"recovered": True, "batches": 5}
    assert [f.seq for f in got.history] == [25, 26, 27, 28, 29]
    for i in range(30, 40):
        pub.publish(h, i, *batch(i, c=1))
    await eventually(lambda: len(sink.frames) == 10)
    assert sink.seqs() == list(range(30, 40))
    again = gw.subscribe(Sink(), ["dev/a"], resume={"dev/a": ("other", 3)})
    assert again.resumed["dev/a"].reason == "epoch_changed"


async def test_mass_resume_reads_history_once_per_stream(redis, nursery):
    pub = await start_hub(nursery, redis.url)
    gw = await start_hub(nursery, redis.url)
    h = pub.add_stream("dev/a", [Channel("x")]).key
    for i in range(50):
        pub.publish(h, i, *batch(i, c=1))
    await eventually(lambda: pub.bus.written == 50 and gw.stream_by_id("dev/a") is not None)
    epoch = gw.stream_by_id("dev/a").epoch
    reads = gw.bus.history_reads
    sinks = [Sink() for _ in range(200)]
    results = {}

    async def client(i, s):
        gw.attach(s)
        await gw.ready(["dev/a"])
        results[i] = gw.subscribe(s, ["dev/a"], resume={"dev/a": (epoch, 40 + i % 5)})

    async with trio.open_nursery() as n:
        for i, s in enumerate(sinks):
            n.start_soon(client, i, s)
    assert gw.bus.history_reads - reads == 1
    assert all(r.resumed["dev/a"].recovered and [f.seq for f in r.history] == list(range(41 + i % 5, 50))
               for i, r in results.items())


async def test_publisher_death_disconnects_within_ttl_and_the_same_id_continues_key_and_seq(redis, nursery):
    gw = await start_hub(nursery, redis.url)
    with trio.CancelScope() as first:
        async with trio.open_nursery() as pn:
            pub = await start_hub(pn, redis.url)
            h = pub.add_stream("dev/a", [Channel("x")]).key
            for i in range(5):
                pub.publish(h, i, *batch(i, c=1))
            await eventually(lambda: pub.bus.written == 5 and gw.stream_by_id("dev/a") is not None
                             and gw.stream_by_id("dev/a").status == "live")
            key = gw.stream_by_id("dev/a").key
            pn.cancel_scope.cancel()  # the publisher dies: no goodbye, its heartbeat just stops
    died = trio.current_time()
    sink = Sink()
    gw.attach(sink)
    await eventually(lambda: gw.stream_by_id("dev/a").status == "disconnected", timeout=5)
    assert trio.current_time() - died <= 1.0 + 1.0  # TTL + 1 s
    assert {"type": "stream", "stream": gw.stream_by_id("dev/a").to_json()} in sink.texts
    # The same id from a new process: same key, seq continues after 4.
    again = await start_hub(nursery, redis.url)
    h2 = again.add_stream("dev/a", [Channel("x")]).key
    await gw.ready(["dev/a"])
    gw.subscribe(sink, ["dev/a"])
    again.publish(h2, again.next_seq(h2), *batch(5, c=1))
    await eventually(lambda: sink.frames and gw.stream_by_id("dev/a").status == "live")
    assert gw.stream_by_id("dev/a").key == key and sink.frames[-1].seq == 5


def test_bus_urls_parse_and_never_show_the_password():
    u = parse_bus_url("redis://:s3cret@db.example:6380/2")
    assert (u.nodes, u.db, u.password, u.tls) == ((("db.example", 6380),), 2, "s3cret", False)
    assert "s3cret" not in u.shown and "s3cret" not in repr(u) and "***" in u.shown
    u = parse_bus_url("rediss://user:p%40ss@h")
    assert u.tls and u.username == "user" and u.password == "p@ss" and u.nodes == (("h", 6379),)
    u = parse_bus_url("redis+cluster://h1:7000,h2:7001")
    assert u.cluster and u.nodes == (("h1", 7000), ("h2", 7001))
    for bad in ("http://h", "redis://h:port", "redis://h1,h2", "redis+cluster://h:1/3", "redis://:0"):
        with pytest.raises(ValueError):
            parse_bus_url(bad)


async def test_redis_restarted_empty_everything_recovers_and_the_loss_is_reported(redis, nursery):
    pub = await start_hub(nursery, redis.url)
    gw = await start_hub(nursery, redis.url)
    h = pub.add_stream("dev/a", [Channel("x")]).key
    sink = Sink()
    gw.attach(sink)
    await eventually(lambda: gw.stream_by_id("dev/a") is not None)
    await gw.ready(["dev/a"])
    gw.subscribe(sink, ["dev/a"])
    old = gw.stream_by_id("dev/a")
    for i in range(10):
        pub.publish(h, i, *batch(i, c=1))
    await eventually(lambda: len(sink.frames) == 10)
    pub.outbox_batches = 4
    await redis.stop()
    await eventually(lambda: not gw.bus.up and not pub.bus.up)
    assert gw.stream_by_id("dev/a").status == "disconnected"
    assert {"type": "bus", "up": False} in sink.texts
    for i in range(10, 20):  # the device goes on; the publisher holds the newest 4 of these
        pub.publish(h, i, *batch(i, c=1))
    assert pub.bus.outbox_dropped == 6
    await redis.start()  # same port, empty: the history is gone
    t0 = trio.current_time()
    await eventually(lambda: gw.bus.up and pub.bus.up and gw.stream_by_id("dev/a").status == "live", timeout=10)
    pub.outbox_batches = 10_000
    for i in range(20, 25):
        pub.publish(h, i, *batch(i, c=1))
    await eventually(lambda: sink.frames[-1].seq == 24, timeout=10)
    assert trio.current_time() - t0 < 5
    new = gw.stream_by_id("dev/a")
    assert new.key == old.key and new.epoch != old.epoch
    # Every seq arrives once, in order; anything not delivered was announced as dropped.
    assert sink.seqs() == list(range(10)) + list(range(16, 25)), str(sink.seqs())
    assert [t["batches"] for t in sink.texts if t["type"] == "dropped"] == [6]
    # A client that saw seq 9 of the old epoch learns exactly what it lost...
    got = gw.subscribe(Sink(), ["dev/a"], resume={"dev/a": (old.epoch, 9)})
    assert got.resumed["dev/a"].to_json() == {"recovered": False, "reason": "epoch_changed", "lost": 15}
    # ... and one that had everything of the old epoch resumes in the new one.
    got = gw.subscribe(Sink(), ["dev/a"], resume={"dev/a": (old.epoch, 15)})
    assert got.resumed["dev/a"].to_json() == {"recovered": True, "batches": 9}


async def test_after_an_empty_restart_each_stream_continues_from_its_own_first_held_batch(redis, nursery):
    # Two streams' batches interleave in the publisher's outbox: where the new
    # epoch of dev/a starts must come from dev/a's first held batch, even when
    # dev/b's batch is at the head of the outbox.
    pub = await start_hub(nursery, redis.url)
    gw = await start_hub(nursery, redis.url)
    ha = pub.add_stream("dev/a", [Channel("x")]).key
    hb = pub.add_stream("dev/b", [Channel("x")]).key
    await eventually(lambda: gw.stream_by_id("dev/a") is not None and gw.stream_by_id("dev/b") is not None)
    await gw.ready(["dev/*"])
    sink = Sink()
    gw.attach(sink)
    gw.subscribe(sink, ["dev/*"])
    for i in range(10):
        pub.publish(hb, i, *batch(i, c=1))
        pub.publish(ha, i, *batch(i, c=1))
    await eventually(lambda: len(sink.frames) == 20)
    old = gw.stream_by_id("dev/a")
    pub.outbox_batches = 8
    await redis.stop()
    await eventually(lambda: not gw.bus.up and not pub.bus.up)
    for i in range(10, 20):  # held: b16, a16, ... b19, a19 (b at the head)
        pub.publish(hb, i, *batch(i, c=1))
        pub.publish(ha, i, *batch(i, c=1))
    assert pub._outbox[0][0] is not pub._outbox[1][0]
    await redis.start()
    await eventually(lambda: gw.bus.up and pub.bus.up and gw.stream_by_id("dev/a").status == "live", timeout=10)
    await eventually(lambda: max(f.seq for f in sink.frames if f.key == old.key) == 19, timeout=10)
    got = gw.subscribe(Sink(), ["dev/a"], resume={"dev/a": (old.epoch, 15)})
    assert got.resumed["dev/a"].to_json() == {"recovered": True, "batches": 4}


async def test_publisher_outbox_is_bounded_and_drops_the_oldest_while_redis_is_down(redis, nursery):
    pub = await start_hub(nursery, redis.url, outbox_batches=8)
    h = pub.add_stream("dev/a", [Channel("x")]).key
    await redis.stop()
    await eventually(lambda: not pub.bus.up)
    for i in range(20):
        pub.publish(h, i, *batch(i, c=1))  # returns at once: never waits on Redis
    assert len(pub._outbox) == 8 and pub.bus.outbox_dropped == 12
    assert [item[1] for item in pub._outbox] == list(range(12, 20))


@pytest.fixture
async def cluster(tmp_path):
    c = await RedisCluster(tmp_path).start()
    yield c
    c.kill_now()


async def test_cluster_end_to_end_with_sharded_pubsub_and_hash_tags(cluster, nursery):
    pub = await start_hub(nursery, cluster.url)
    gw = await start_hub(nursery, cluster.url)
    handles = [pub.add_stream(f"dev/{i}", [Channel("x")]).key for i in range(6)]
    await eventually(lambda: all(gw.stream_by_id(f"dev/{i}") for i in range(6)), timeout=10)
    sink = Sink()
    gw.attach(sink)
    await gw.ready(["dev/*"])
    got = gw.subscribe(sink, ["dev/*"])
    for seq in range(5):
        for h in handles:
            pub.publish(h, seq, *batch(seq, c=1))
    await eventually(lambda: len(sink.frames) == 30, timeout=10)
    for key in got.keys:
        assert sink.seqs(key) == list(range(5))
    # Each stream's history and channel share a slot; the streams spread over the shards.
    slots = {int(cluster.nodes[0].cli("cluster", "keyslot", f"ss:{{{k}}}:x")) for k in got.keys}
    assert len(slots) == 6
    owners = {n.port for n in cluster.nodes if any(n.cli("exists", f"ss:{{{k}}}:x").strip() == "1" for k in got.keys)}
    assert len(owners) >= 2
    # Sharded pub/sub: the live channels are shard channels on their nodes.
    shard_channels = "".join(n.cli("pubsub", "shardchannels") for n in cluster.nodes)
    assert all(f"ss:{{{k}}}:live" in shard_channels for k in got.keys)


async def test_garbage_on_the_bus_is_skipped_and_the_stream_goes_on(redis, nursery):
    pub = await start_hub(nursery, redis.url)
    gw = await start_hub(nursery, redis.url)
    h = pub.add_stream("dev/a", [Channel("x")]).key
    await eventually(lambda: gw.stream_by_id("dev/a") is not None)
    sink = Sink()
    gw.attach(sink)
    await gw.ready(["dev/a"])
    key = gw.subscribe(sink, ["dev/a"]).keys[0]
    redis.cli("publish", f"ss:{{{key}}}:live", "not a batch")
    redis.cli("publish", "{ss}:events", "{not json")
    redis.cli("publish", "{ss}:events", '{"key": "x"}')
    for i in range(3):
        pub.publish(h, i, *batch(i, c=1))
    await eventually(lambda: sink.seqs() == [0, 1, 2])
    assert gw.bus.up


async def test_a_publishers_streams_stay_live_with_the_staleness_watcher_and_go_stale_when_quiet(redis, nursery):
    """Observers (staleness, alerts) watch the published stream, not the mirror of it."""
    from sensorstream.staleness import StalenessWatcher

    pub = await start_hub(nursery, redis.url)
    watcher = StalenessWatcher(pub, 0.05)
    nursery.start_soon(watcher.run)
    h = pub.add_stream("dev/a", [Channel("x")], rate_hz=100).key
    await eventually(lambda: pub.stream_by_id("dev/a") is not None)
    t_end = trio.current_time() + 2.5  # longer than the 2 s stale limit
    i = 0
    while trio.current_time() < t_end:
        pub.publish(h, i, *batch(i, c=1))
        i += 1
        await trio.sleep(0.05)
    assert pub.stream_by_id("dev/a").status == "live"
    await eventually(lambda: pub.stream_by_id("dev/a").status == "stale", timeout=10)
    pub.publish(h, i, *batch(i, c=1))
    await eventually(lambda: pub.stream_by_id("dev/a").status == "live", timeout=10)


async def test_a_gateway_exports_the_history_it_mirrors_and_starts_mirroring_on_request(redis, nursery):
    pub = await start_hub(nursery, redis.url)
    gw = await start_hub(nursery, redis.url)
    h = pub.add_stream("dev/a", [Channel("x")]).key
    for i in range(5):
        pub.publish(h, i, *batch(i, c=1))
    await eventually(lambda: pub.bus.written == 5 and gw.stream_by_id("dev/a") is not None)
    key = gw.stream_by_id("dev/a").key
    with pytest.raises(NotImplementedError):
        gw.history_frames(key)  # nobody here watched it: not mirrored yet, but now it is being
    await gw.ready(["dev/a"])
    assert [f.seq for f in gw.history_frames(key)] == [0, 1, 2, 3, 4]


async def test_a_bus_that_will_never_accept_us_says_why_once_and_keeps_retrying(tmp_path, caplog):
    from .redis_util import tls_redis

    r, ca = tls_redis(tmp_path, "tls-pw-9")
    # A certificate for another address (127.0.0.2), trusted, but we reach it as 127.0.0.1.
    other, other_ca = tls_redis(tmp_path, "tls-pw-9", hostname="127.0.0.2")
    plain = RedisProc(tmp_path)
    for s in (r, other, plain):
        await s.start()
    try:
        base = f"127.0.0.1:{r.port}/0"
        cases = [
            (f"rediss://:wrong-pw-7@{base}", {"cafile": str(ca)}, "refused the password"),
            (f"redis://:tls-pw-9@{base}", {}, "unreachable"),  # plain Redis on a TLS-only port
            (f"rediss://:tls-pw-9@{base}", {}, "not trusted by the system's trust store"),
            (f"rediss://:tls-pw-9@127.0.0.1:{other.port}/0", {"cafile": str(other_ca)}, "does not name this host"),
            (f"rediss://:tls-pw-9@127.0.0.1:{plain.port}/0", {}, "check that the port serves TLS"),
        ]
        for url, kw, expect in cases:
            caplog.clear()
            hub = RedisHub(url, HubLimits(), backoff_max=0.05, op_timeout=1.0, **kw)
            async with trio.open_nursery() as inner:
                inner.start_soon(hub.run)
                await eventually(lambda: hub.bus.reconnects >= 3, timeout=10)
                inner.cancel_scope.cancel()
            lines = [rec.getMessage() for rec in caplog.records if rec.name == "sensorstream.hub.redis"]
            assert len(lines) == 1 and expect in lines[0], lines
            assert "tls-pw-9" not in lines[0] and "wrong-pw-7" not in lines[0]
            assert not hub.bus.up
    finally:
        for s in (r, other, plain):
            s.kill_now()
