"""Hypothesis fuzz of the WebSocket control protocol, over real sockets.

One server (in a thread, see server_thread.py) takes every example; each
example is a fresh connection that sends its frames, then a sentinel `ping`.
What comes back must be typed: one reply per message (an `error` with a known
code, or the right answer), or a close with the right code. Meanwhile a
watcher client follows sim/imu: it must see no seq gap and no drop.
"""

from __future__ import annotations

import json
import math
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .server_thread import Closed, ServerThread, SyncClient, client_frame

FUZZ = settings(max_examples=120, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ERROR_CODES = {"invalid_json", "invalid_message", "missing_type", "unknown_type", "bad_field", "unknown_stream",
               "binary_not_supported", "too_large", "rate_limited", "too_many_subscriptions"}
REPLIES = {"error", "pong", "subscribed", "unsubscribed"}
MAX_MESSAGE = 16 * 1024
SENTINEL = "__sentinel__"


@pytest.fixture(scope="module")
def srv():
    # A generous rate limit (the fuzz is not about it) and a small message cap (so "too big" is reachable).
    with ServerThread(simulate=True, control_burst=100_000, control_rate=100_000, max_message_bytes=MAX_MESSAGE) as s:
        yield s
        s.check_healthy()
        assert s.watch_batches > 0


# ----------------------------------------------------------------- strategies

scalars = st.one_of(
    st.none(), st.booleans(), st.text(max_size=30),
    st.integers(min_value=-(10**30), max_value=10**30), st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
)
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=15)
patterns = st.one_of(st.sampled_from(["sim/*", "sim/imu", "*", "sim/env", "no/such", "[", "**", "sim/[!i]*", ""]),
                     st.text(max_size=300))
control = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(["subscribe", "unsubscribe", "ping", "launch", ""]), json_values)},
    optional={
        "ref": json_values,
        "streams": st.one_of(st.lists(patterns, max_size=6), json_values),
        "history_s": st.one_of(st.floats(), st.integers(), json_values, st.just(1e308)),
    },
)


def _dumps(obj) -> str:
    # Python's json writes NaN/Infinity, which is not JSON; the server must call that invalid.
    return json.dumps(obj)


texts = st.one_of(
    control.map(_dumps),
    json_values.map(_dumps),
    st.text(max_size=200),
    st.builds(lambda n, c: c * n, st.integers(1, 15_000), st.sampled_from(["[", "{\"a\":", "[{\"b\":"])),
    st.builds(lambda d: '{"type": "ping", "ref": %s}' % d, st.sampled_from(["1e999999", "-1e999999", "1" * 5000, "NaN", "Infinity", "-0.0e-99999"])),
)


def _expect_replies(c: SyncClient, n: int) -> list[dict]:
    """Send the sentinel and collect the typed replies that came before it."""
    c.send(client_frame(json.dumps({"type": "ping", "ref": SENTINEL}).encode()))
    texts, _ = c.until_pong(SENTINEL)
    replies = [m for m in texts if m.get("type") in REPLIES]
    assert len(replies) == n, texts
    for m in replies:
        if m["type"] == "error":
            assert m["code"] in ERROR_CODES, m
            assert isinstance(m["message"], str)
    return replies


def _check_close(c: SyncClient, expected: set[int]) -> None:
    with pytest.raises(Closed) as e:
        c.send(client_frame(json.dumps({"type": "ping", "ref": SENTINEL}).encode()))
        c.until_pong(SENTINEL)
    assert e.value.code in expected


# ----------------------------------------------------------------- tests


@FUZZ
@given(msgs=st.lists(texts, min_size=1, max_size=4))
def test_random_text_messages_get_one_typed_reply_each(srv, msgs):
    c = SyncClient(srv.port)
    try:
        big = next((i for i, m in enumerate(msgs) if len(m.encode()) > MAX_MESSAGE), None)
        if big is not None:
            # Replies to the messages before the big one may come first; then 1009.
            # (Nothing is sent after it: the server closes without reading on.)
            for m in msgs[: big + 1]:
                c.send(client_frame(m.encode()))
            with pytest.raises(Closed) as e:
                while True:
                    c.recv_frame()
            assert e.value.code == 1009
            return
        for m in msgs:
            c.send(client_frame(m.encode()))
        replies = _expect_replies(c, len(msgs))
        for m, r in zip(msgs, replies):
            try:
                obj = json.loads(m)
            except (ValueError, RecursionError):
                assert r == {**r, "type": "error", "code": "invalid_json"}
                continue
            if not isinstance(obj, dict):
                assert r["type"] == "error"
            elif r["type"] == "error" and r["ref"] is not None:
                assert r["ref"] == obj.get("ref")  # refs are echoed (or dropped), never invented
            if isinstance(obj, dict) and obj.get("type") == "ping" and r["type"] == "pong":
                ref = obj.get("ref")
                assert r["ref"] == ref or r["ref"] is None or (isinstance(ref, float) and not math.isfinite(ref))
    finally:
        c.close()
    srv.check_healthy()


@FUZZ
@given(payload=st.binary(min_size=1, max_size=2000), valid_prefix=st.text(max_size=40))
def test_invalid_utf8_text_closes_1007(srv, payload, valid_prefix):
    data = valid_prefix.encode() + payload
    try:
        data.decode("utf-8")
        return  # valid after all: covered by the JSON fuzz
    except UnicodeDecodeError:
        pass
    c = SyncClient(srv.port)
    try:
        c.send(client_frame(data))
        _check_close(c, {1007})
    finally:
        c.close()
    srv.check_healthy()


@FUZZ
@given(payloads=st.lists(st.binary(max_size=3000), min_size=1, max_size=3))
def test_binary_frames_are_a_typed_error(srv, payloads):
    c = SyncClient(srv.port)
    try:
        for p in payloads:
            c.send(client_frame(p, opcode=2))
        replies = _expect_replies(c, len(payloads))
        assert all(r["code"] == "binary_not_supported" for r in replies)
    finally:
        c.close()
    srv.check_healthy()


@FUZZ
@given(msg=control.map(_dumps), cuts=st.lists(st.integers(0, 10_000), max_size=5),
       pings=st.lists(st.binary(max_size=125), max_size=3), binary=st.booleans())
def test_fragmented_messages_with_interleaved_control_frames(srv, msg, cuts, pings, binary):
    """A message split into continuation frames, with pings between the fragments,
    is the same message; each ping gets its pong with the same payload."""
    data = msg.encode()
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    pieces = [data[a:b] for a, b in zip(bounds, bounds[1:])] or [b""]
    wire = b""
    for i, piece in enumerate(pieces):
        wire += client_frame(piece, opcode=(2 if binary else 1) if i == 0 else 0, fin=i == len(pieces) - 1)
        if i < len(pings):
            wire += client_frame(pings[i], opcode=9)
    c = SyncClient(srv.port)
    try:
        c.send(wire)
        c.send(client_frame(json.dumps({"type": "ping", "ref": SENTINEL}).encode()))
        texts, pongs = c.until_pong(SENTINEL)
        replies = [m for m in texts if m.get("type") in REPLIES]
        assert len(replies) == 1
        if binary:
            assert replies[0]["code"] == "binary_not_supported"
        assert pongs == pings[: len(pieces)]
    finally:
        c.close()
    srv.check_healthy()


def _violations():
    good = b'{"type":"ping"}'
    return st.one_of(
        st.builds(lambda p, r: client_frame(p, rsv=r), st.binary(max_size=20), st.integers(1, 7)),
        st.builds(lambda p, op: client_frame(p, opcode=op), st.binary(max_size=20), st.sampled_from([3, 4, 5, 6, 7, 11, 12, 13, 14, 15])),
        st.builds(lambda p: client_frame(p, opcode=0), st.binary(max_size=20)),  # continuation with nothing to continue
        st.builds(lambda p: client_frame(good[:3], fin=False) + client_frame(p, opcode=1), st.binary(max_size=20)),
        st.builds(lambda p: client_frame(good[:3], fin=False) + client_frame(p, opcode=2), st.binary(max_size=20)),
        st.builds(lambda p, op: client_frame(p, opcode=op), st.binary(min_size=126, max_size=300), st.sampled_from([8, 9, 10])),
        st.builds(lambda p, op: client_frame(p, opcode=op, fin=False), st.binary(max_size=50), st.sampled_from([8, 9, 10])),
        st.builds(lambda p: client_frame(p, mask=False), st.binary(max_size=50)),
        st.builds(lambda code: client_frame(struct.pack("!H", code), opcode=8),
                  st.one_of(st.integers(0, 999), st.sampled_from([1004, 1005, 1006, 1015]), st.integers(1016, 2999), st.integers(5000, 65535))),
        st.just(client_frame(b"\x03", opcode=8)),
    )


@FUZZ
@given(frame=_violations())
def test_protocol_violations_close_1002(srv, frame):
    c = SyncClient(srv.port)
    try:
        c.send(frame)
        _check_close(c, {1002})
    finally:
        c.close()
    srv.check_healthy()


@settings(max_examples=60, deadline=None, database=None)
@given(code=st.one_of(st.sampled_from([1000, 1001, 1003, 1008, 1011]), st.integers(3000, 4999)),
       reason=st.text(max_size=40))
def test_valid_close_codes_are_echoed(srv, code, reason):
    c = SyncClient(srv.port)
    try:
        c.send(client_frame(struct.pack("!H", code) + reason.encode()[:100], opcode=8))
        with pytest.raises(Closed) as e:
            while True:
                c.recv_frame()
        assert e.value.code == code
    finally:
        c.sock.close()
    srv.check_healthy()
