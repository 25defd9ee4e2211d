"""Resume by (epoch, seq) and deterministic keys, on the in-process hub (no sockets)."""

import random

import numpy as np
import pytest

from sensorstream import protocol
from sensorstream.hub import HubLimits, LocalHub, Resumed
from sensorstream.protocol import Channel

from .test_hub import Sink, pub


def _hub_with(n, limits=HubLimits()):
    hub = LocalHub(limits)
    info = hub.add_stream("sim/a", [Channel("x")])
    for seq in range(n):
        pub(hub, info.key, seq, float(seq))
    return hub, hub.stream_by_id("sim/a")


def test_resume_replays_exactly_the_batches_after_the_point_then_live_follows():
    hub, info = _hub_with(10)
    s = Sink()
    hub.attach(s)
    got = hub.subscribe(s, ["sim/*"], resume={"sim/a": (info.epoch, 6)})
    assert [f.seq for f in got.history] == [7, 8, 9]
    assert got.resumed == {"sim/a": Resumed(True, 3)}
    pub(hub, info.key, 10, 10.0)
    assert [f.seq for f in s.frames] == [10]


def test_resume_at_the_newest_batch_recovers_nothing_to_replay():
    hub, info = _hub_with(5)
    got = hub.subscribe(Sink(), ["sim/a"], resume={"sim/a": (info.epoch, 4)})
    assert got.history == [] and got.resumed["sim/a"].to_json() == {"recovered": True, "batches": 0}


def test_resume_from_another_epoch_continues_live_and_says_why():
    hub, info = _hub_with(5)
    got = hub.subscribe(Sink(), ["sim/a"], resume={"sim/a": ("an-old-epoch", 3)})
    assert got.history == []
    assert got.resumed["sim/a"].to_json() == {"recovered": False, "reason": "epoch_changed"}


def test_resume_older_than_history_reports_exactly_how_many_batches_are_lost():
    # 10 seconds of history, one batch a second: batches 0..9 are gone after seq 20.
    hub, info = _hub_with(21, HubLimits(history_s=10))
    first = hub.subscribe(Sink(), ["sim/a"], history_s=1e9).history[0].seq
    assert first > 3
    got = hub.subscribe(Sink(), ["sim/a"], resume={"sim/a": (info.epoch, 2)})
    assert got.history == []
    assert got.resumed["sim/a"] == Resumed(False, reason="too_old", lost=21 - 3)


def test_resume_wins_over_history_for_its_stream_and_history_serves_the_others():
    hub = LocalHub()
    a = hub.add_stream("a", [Channel("x")])
    b = hub.add_stream("b", [Channel("x")])
    for seq in range(4):
        pub(hub, a.key, seq, float(seq))
        pub(hub, b.key, seq, float(seq))
    got = hub.subscribe(Sink(), ["a", "b"], history_s=100, resume={"a": (a.epoch, 2)})
    # Oldest first across both (docs/protocol.md); a tie keeps the subscription's stream order.
    assert [(f.key, f.seq) for f in got.history] == [(b.key, 0), (b.key, 1), (b.key, 2), (a.key, 3), (b.key, 3)]
    assert list(got.resumed) == ["a"]


def test_keys_are_the_same_whatever_order_streams_arrive_in_and_epochs_are_not():
    ids = [f"dev/{i}" for i in range(50)] + ["sim/env", "sim/imu", "sim/power"]
    first = LocalHub()
    for i in ids:
        first.add_stream(i, [Channel("x")])
    shuffled = ids[:]
    random.Random(1).shuffle(shuffled)
    second = LocalHub()
    for i in shuffled:
        second.add_stream(i, [Channel("x")])
    assert {s.id: s.key for s in first.catalog()} == {s.id: s.key for s in second.catalog()}
    assert len({s.key for s in first.catalog()}) == len(ids)
    assert not {s.epoch for s in first.catalog()} & {s.epoch for s in second.catalog()}
    assert all(0 < s.key < 2**31 for s in first.catalog())


def test_a_stream_removed_and_added_again_gets_a_new_epoch():
    hub, info = _hub_with(3)
    hub.remove_stream(info.key)
    again = hub.add_stream("sim/a", [Channel("x")])
    assert again.key == info.key and again.epoch != info.epoch
    got = hub.subscribe(Sink(), ["sim/a"], resume={"sim/a": (info.epoch, 2)})
    assert got.resumed["sim/a"].reason == "epoch_changed"


@pytest.mark.parametrize("raw, ok", [
    ({"a": {"epoch": "e", "seq": 3}}, True),
    ({"a": {"epoch": "e", "seq": -1}}, True),
    ({"a": {"epoch": 1, "seq": 3}}, False),
    ({"a": {"epoch": "e", "seq": True}}, False),
    ({"a": {"epoch": "e", "seq": 2**64}}, False),
    ({"a": {"epoch": "e" * 65, "seq": 1}}, False),
    ({"a": 3}, False),
    ([1], False),
])
def test_subscribe_resume_field_is_validated(raw, ok):
    import json
    text = json.dumps({"type": "subscribe", "streams": ["a"], "resume": raw})
    if ok:
        assert protocol.parse_client_message(text).resume == {"a": (raw["a"]["epoch"], raw["a"]["seq"])}
    else:
        with pytest.raises(protocol.ProtocolError) as e:
            protocol.parse_client_message(text)
        assert e.value.code == "bad_field"


def test_subscribed_carries_resumed_only_when_asked():
    import json
    assert "resumed" not in json.loads(protocol.subscribed(1, [2]))
    msg = json.loads(protocol.subscribed(1, [2], {"a": Resumed(False, reason="too_old", lost=4).to_json()}))
    assert msg["resumed"] == {"a": {"recovered": False, "reason": "too_old", "lost": 4}}
    assert json.loads(protocol.subscribe(["a"], resume={"a": ("e", 5)}))["resume"] == {"a": {"epoch": "e", "seq": 5}}


def test_without_a_bus_the_redis_client_is_never_imported():
    import subprocess
    import sys
    code = ("import sys; from sensorstream.config import ServerConfig; from sensorstream.server.app import Server; "
            "import sensorstream.cli, sensorstream.client; Server(ServerConfig(port=0, simulate=True)); "
            "assert 'coredis' not in sys.modules and 'sensorstream.hub.redis' not in sys.modules, 'imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
