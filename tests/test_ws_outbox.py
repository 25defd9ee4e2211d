"""The per-client queue policy (server/ws/outbox.py), with no socket and no task."""

import gc

from sensorstream.hub import Frame
from sensorstream.server.ws import Framed, History, Outbox
from sensorstream.server.ws.outbox import CONTROL, DATA, NOTICES, REPLAY


def framed(key: int, size: int = 10, tag: bytes = b"") -> Framed:
    return Framed(key, b"\x82" + tag + b"." * (size - len(tag)), size, 0.0)


def drain(o: Outbox) -> list:
    out = []
    while o:
        out.append(o.take())
    return out


def test_oldest_data_dropped_past_the_frame_cap_and_announced_before_the_next_data():
    o = Outbox(max_frames=3, max_bytes=10**9, max_control=10)
    frames = [framed(1 + i % 2, tag=b"%d" % i) for i in range(6)]
    dropped = [o.push_frame(f) for f in frames]
    assert dropped == [0, 0, 0, 1, 1, 1] and o.n_data == 3
    kind, counts, _ = o.take()
    assert kind == NOTICES and counts == {1: 2, 2: 1}
    kind, data, n = o.take()
    assert kind == DATA and n == 3 and data == b"".join(f.wire for f in frames[3:])
    assert not o and o.n_data == 0 and o.n_bytes == 0


def test_byte_cap_drops_oldest_but_the_newest_frame_always_stays():
    o = Outbox(max_frames=100, max_bytes=25, max_control=10)
    o.push_frame(framed(1, 10))
    o.push_frame(framed(1, 10))
    assert o.push_frame(framed(1, 10)) == 1 and o.n_bytes == 20
    assert o.push_frame(framed(2, 1000)) == 2  # alone over the cap: still kept
    assert o.n_data == 1 and o.n_bytes == 1000 and o.dropped == {1: 3}


def test_control_messages_are_never_dropped_and_overflow_is_reported():
    o = Outbox(max_frames=1, max_bytes=10**9, max_control=2)
    assert o.push_control("a") and o.push_control("b")
    o.push_frame(framed(1))
    o.push_frame(framed(1))  # drops the older frame, never a control message
    assert not o.push_control("c")  # the third: too slow to keep
    kinds = [(k, v) for k, v, _ in drain(o)]
    assert kinds[0] == (NOTICES, {1: 1})
    assert [v for k, v in kinds if k == CONTROL] == ["a", "b", "c"]
    assert o.n_control == 0


def test_order_is_kept_and_runs_of_frames_coalesce_up_to_max_write():
    o = Outbox(max_frames=100, max_bytes=10**9, max_control=10, max_write=25)
    for i in range(4):
        o.push_frame(framed(1, 10))
    o.push_control("x")
    o.push_frame(framed(1, 10))
    steps = [(k, n) for k, _, n in drain(o)]
    assert steps == [(DATA, 3), (DATA, 1), (CONTROL, 0), (DATA, 1)]


def test_purge_forgets_frames_notices_and_replays_of_unsubscribed_streams():
    o = Outbox(max_frames=2, max_bytes=10**9, max_control=10)
    keep = Frame(2, 0, 0.0, 1, b"k")
    gone = Frame(1, 0, 0.0, 1, b"g")
    o.push_history(History.of([gone, keep]))
    o.push_history(History.of([gone]))
    for f in (framed(1), framed(1), framed(2)):
        o.push_frame(f)
    o.purge([1])
    assert o.dropped == {} and o.n_data == 1
    kinds = drain(o)
    assert [k for k, _, _ in kinds] == [REPLAY, DATA]
    assert [key for key, _ in kinds[0][1].frames] == [2]


def test_a_replay_holds_its_frames_weakly():
    f = Frame(1, 0, 0.0, 1, b"p")
    o = Outbox(max_frames=2, max_bytes=10**9, max_control=10)
    o.push_history(History.of([f]))
    del f
    gc.collect()
    (kind, h, _), = drain(o)
    assert kind == REPLAY and h.frames[0][1]() is None
