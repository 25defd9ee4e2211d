import dataclasses
import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from sensorstream import protocol as p


def test_header_layout_is_exactly_the_documented_one():
    ts = np.array([1.5, 2.5])
    vals = np.array([[1, 2], [3, 4], [5, 6]], dtype=np.float32)
    b = p.encode_batch(7, 2**40 + 3, ts, vals)
    assert len(b) == 24 + 8 * 2 + 4 * 3 * 2
    assert struct.unpack_from("<BBHIIIQ", b) == (1, 0, 3, 7, 2, 0, 2**40 + 3)
    assert struct.unpack_from("<2d", b, 24) == (1.5, 2.5)
    # channel-major: channel 0's samples first
    assert struct.unpack_from("<6f", b, 40) == (1, 2, 3, 4, 5, 6)


def test_decode_is_zero_copy_and_round_trips():
    ts = np.linspace(0, 1, 5)
    vals = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    b = p.encode_batch(1, 9, ts, vals, flags=p.FLAG_REPLAYED)
    d = p.decode_batch(b)
    assert d.key == 1 and d.seq == 9 and d.replayed
    np.testing.assert_array_equal(d.timestamps, ts)
    np.testing.assert_array_equal(d.values, vals)
    assert not d.values.flags.owndata  # a view into the frame


def test_nan_survives_and_empty_batch_encodes():
    vals = np.array([[np.nan, 1.0]], dtype=np.float32)
    d = p.decode_batch(p.encode_batch(1, 0, np.array([0.0, 1.0]), vals))
    assert np.isnan(d.values[0, 0]) and d.values[0, 1] == 1
    e = p.decode_batch(p.encode_batch(2, 0, np.zeros(0), np.zeros((3, 0), np.float32)))
    assert e.values.shape == (3, 0)


@pytest.mark.parametrize("frame", [b"", b"\x01" * 23, p.encode_batch(1, 0, np.zeros(2), np.zeros((1, 2)))[:-1],
                                   b"\x02" + p.encode_batch(1, 0, np.zeros(1), np.zeros((1, 1)))[1:]])
def test_bad_frames_raise_frame_error(frame):
    with pytest.raises(p.FrameError):
        p.decode_batch(frame)


def test_mark_replayed_sets_only_the_flag():
    b = p.encode_batch(3, 4, np.zeros(1), np.ones((1, 1)))
    r = p.mark_replayed(b)
    assert r[1] == 1 and r[:1] == b[:1] and r[2:] == b[2:]


@settings(max_examples=60, deadline=None)
@given(c=st.integers(0, 8), n=st.integers(0, 50), key=st.integers(0, 2**32 - 1), seq=st.integers(0, 2**64 - 1))
def test_round_trip_property(c, n, key, seq):
    rng = np.random.default_rng(c * 100 + n)
    ts = rng.random(n) * 1e9
    vals = rng.standard_normal((c, n)).astype(np.float32)
    d = p.decode_batch(p.encode_batch(key, seq, ts, vals))
    assert (d.key, d.seq, d.values.shape) == (key, seq, (c, n))
    np.testing.assert_array_equal(d.values, vals)
    np.testing.assert_array_equal(d.timestamps, ts)


def test_server_messages_are_compact_json_with_type():
    info = p.StreamInfo(3, "sim/imu", (p.Channel("ax", "m/s²"),), 200.0)
    h = json.loads(p.hello("sensorstream/x", "s1", 2.0, [info]))
    assert h == {"type": "hello", "protocol": 1, "server": "sensorstream/x", "session": "s1", "heartbeat_s": 2.0,
                 "streams": [{"key": 3, "id": "sim/imu", "device": "sim", "channels": [{"name": "ax", "unit": "m/s²"}],
                              "rate_hz": 200.0, "status": "live", "epoch": ""}]}
    assert p.StreamInfo.from_json(h["streams"][0]) == p.StreamInfo(3, "sim/imu", (p.Channel("ax", "m/s²"),), 200.0, device="sim")
    assert json.loads(p.dropped(3, 5)) == {"type": "dropped", "key": 3, "batches": 5}


def test_parse_valid_messages():
    assert p.parse_client_message('{"type":"subscribe","ref":1,"streams":["sim/*"],"history_s":5}') == p.Subscribe(1, ("sim/*",), 5.0)
    assert p.parse_client_message('{"type":"unsubscribe","streams":["a"]}') == p.Unsubscribe(None, ("a",))
    assert p.parse_client_message('{"type":"ping","ref":"x"}') == p.Ping("x")


@pytest.mark.parametrize("text, code", [
    ("not json", "invalid_json"),
    ("[1,2]", "invalid_message"),
    ('{"ref":1}', "missing_type"),
    ('{"type":"dance"}', "unknown_type"),
    ('{"type":"subscribe"}', "bad_field"),
    ('{"type":"subscribe","streams":"sim/*"}', "bad_field"),
    ('{"type":"subscribe","streams":[1]}', "bad_field"),
    ('{"type":"subscribe","streams":[""]}', "bad_field"),
    ('{"type":"subscribe","streams":["a"],"history_s":-1}', "bad_field"),
    ('{"type":"subscribe","streams":["a"],"history_s":"5"}', "bad_field"),
    ('{"type":"subscribe","streams":["a"],"history_s":1e999}', "bad_field"),
    ('{"type":"ping","x":' + "[" * 100 + "]" * 100 + "}", "invalid_message"),
    ("[" * 100000 + "]" * 100000, "too_large"),
    ("[" * 30000, "invalid_json"),
])
def test_bad_messages_get_typed_errors(text, code):
    with pytest.raises(p.ProtocolError) as e:
        p.parse_client_message(text)
    assert e.value.code == code
    msg = json.loads(e.value.to_message())
    assert msg["type"] == "error" and msg["code"] == code and msg["message"]


def test_many_brackets_are_not_deep_nesting():
    # The depth walk is skipped when the text has no more brackets than the limit
    # allows; more brackets than that (glob character classes) but shallow: fine.
    pats = [f"dev{i}/[xyz]" for i in range(p.MAX_JSON_DEPTH + 4)]
    msg = p.parse_client_message(json.dumps({"type": "subscribe", "streams": pats}))
    assert msg.streams == tuple(pats)
    deep = '{"type":"ping","x":' + "[" * (p.MAX_JSON_DEPTH) + "]" * (p.MAX_JSON_DEPTH) + "}"
    with pytest.raises(p.ProtocolError) as e:
        p.parse_client_message(deep)  # one level more than the limit
    assert e.value.code == "invalid_message"
    ok = '{"type":"ping","x":' + "[" * (p.MAX_JSON_DEPTH - 1) + "]" * (p.MAX_JSON_DEPTH - 1) + "}"
    assert isinstance(p.parse_client_message(ok), p.Ping)


def test_binary_from_client_is_an_error_and_refs_are_echoed_safely():
    with pytest.raises(p.ProtocolError) as e:
        p.parse_client_message(b"\x00")
    assert e.value.code == "binary_not_supported"
    with pytest.raises(p.ProtocolError) as e:
        p.parse_client_message('{"type":"nope","ref":7}')
    assert e.value.ref == 7
    with pytest.raises(p.ProtocolError) as e:
        p.parse_client_message('{"type":"nope","ref":{"big":[1,2,3]}}')
    assert e.value.ref is None  # not echoed: errors never amplify input


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=200), st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
                                                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                                                     max_leaves=30).map(lambda o: json.dumps(o))))
def test_parser_never_raises_anything_but_protocol_error(text):
    try:
        p.parse_client_message(text)
    except p.ProtocolError as e:
        json.loads(e.to_message())


def test_hello_is_the_json_of_its_fields_whether_or_not_the_catalog_json_is_reused():
    """hello() builds its text by hand around a cached catalog: it must say exactly
    what json.dumps of the message would, and notice a changed catalog at once."""
    def reference(server, session, hb, streams, bus=None):
        msg = {"type": "hello", "protocol": p.PROTOCOL_VERSION, "server": server, "session": session,
               "heartbeat_s": hb, "streams": [s.to_json() for s in streams]}
        if bus is not None:
            msg["bus"] = {"up": bus}
        return json.dumps(msg, separators=(",", ":"), allow_nan=False)

    a = p.StreamInfo(1, "a/b", (p.Channel("x", "V"),))
    b = p.StreamInfo(2, 'q"\u00e9/\\', (p.Channel("y", ""),), rate_hz=3.5)
    b_stale = dataclasses.replace(b, status=p.STALE)
    for bus in (None, True, False):
        for streams in ([], [a, b], [a, b], [a, b_stale], [a], [b_stale, a]):
            for hb in (2.0, 2, 0.25):
                text = p.hello('sensor"stream/1', "abc", hb, streams, bus)
                assert text == reference('sensor"stream/1', "abc", hb, streams, bus)
                assert json.loads(text)["streams"] == [s.to_json() for s in streams]
