"""Alert rules and their evaluation, without I/O: explicit timestamps in, transitions out."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensorstream.alerts import AlertEngine, RuleError, parse_rules
from sensorstream.alerts.engine import _scan
from sensorstream.protocol import Channel, StreamInfo

POWER = StreamInfo(key=7, id="sim/power", channels=(Channel("voltage", "V"), Channel("current", "A")))


def engine(*entries, info=POWER):
    e = AlertEngine(parse_rules(list(entries), "test", stream=info.id))
    assert e.on_stream(info, 0.0, 0.0) == []
    return e


def batch(t0, currents, dt=0.01, volts=12.0):
    t = t0 + dt * np.arange(len(currents))
    v = np.vstack([np.full(len(currents), volts, np.float32), np.asarray(currents, np.float32)])
    return t, v


def states(trs):
    return [(tr.state, round(tr.t, 6), tr.value) for tr in trs]


# --------------------------------------------------------------------------- thresholds


def test_a_limit_fires_at_the_first_sample_above_it_and_resolves_at_the_first_below():
    e = engine({"channel": "current", "above": 3.0, "severity": "critical", "message": "inrush"})
    trs = e.on_batch(7, *batch(100.0, [1, 2, 3.5, 4, 2, 1]))
    assert states(trs) == [("firing", 100.02, 3.5), ("resolved", 100.04, 2.0)]
    assert trs[0].rule.severity == "critical" and trs[0].to_json()["message"] == "inrush"
    assert trs[0].to_json()["channel"] == "current" and trs[0].key == 7 and trs[0].id == "sim/power:current>3"


def test_a_value_equal_to_the_limit_is_not_a_breach():
    e = engine({"channel": "current", "above": 3.0})
    assert e.on_batch(7, *batch(0.0, [3.0, 3.0])) == []


def test_above_and_below_together_fire_outside_the_band():
    e = engine({"channel": "current", "above": 3.0, "below": 1.0})
    trs = e.on_batch(7, *batch(0.0, [2, 0.5, 2])) + e.on_batch(7, *batch(0.03, [2, 3.5]))
    assert [t.state for t in trs] == ["firing", "resolved", "firing"]
    assert [t.value for t in trs] == [0.5, 2.0, 3.5]


def test_a_firing_alert_stays_firing_across_batches_and_is_listed():
    e = engine({"channel": "current", "above": 3.0})
    assert len(e.on_batch(7, *batch(0.0, [4, 4]))) == 1
    assert e.on_batch(7, *batch(0.02, [5, 5])) == []
    [f] = e.firing()
    assert f.value == 4.0 and e.firing(keys=[8]) == []
    assert [t.state for t in e.on_batch(7, *batch(0.04, [1]))] == ["resolved"]
    assert e.firing() == []


# --------------------------------------------------------------------------- for_ms / clear_ms


def test_for_ms_needs_the_breach_to_hold_that_long_without_a_break():
    e = engine({"channel": "current", "above": 3.0, "for_ms": 30})
    # 20 ms above, a break, then 30 ms above: fires at the sample 30 ms into the second run.
    trs = e.on_batch(7, *batch(0.0, [4, 4, 4, 1, 4, 4, 4, 4, 1]))
    assert states(trs)[0] == ("firing", 0.07, 4.0)


def test_for_ms_counts_a_run_that_started_in_an_earlier_batch():
    e = engine({"channel": "current", "above": 3.0, "for_ms": 50})
    assert e.on_batch(7, *batch(0.0, [1, 4, 4])) == []  # run starts at 0.01
    assert e.on_batch(7, *batch(0.03, [4, 4])) == []  # 0.04: held 30 ms
    trs = e.on_batch(7, *batch(0.05, [4, 4, 4]))
    assert states(trs) == [("firing", 0.06, 4.0)]


def test_clear_ms_keeps_a_firing_alert_through_short_dips():
    e = engine({"channel": "current", "above": 3.0, "clear_ms": 30})
    trs = e.on_batch(7, *batch(0.0, [4, 1, 1, 4, 1, 1, 1, 1]))
    assert states(trs) == [("firing", 0.0, 4.0), ("resolved", 0.07, 1.0)]


def test_no_samples_no_change():
    e = engine({"channel": "current", "above": 3.0, "for_ms": 10})
    assert e.on_batch(7, np.empty(0), np.empty((2, 0), np.float32)) == []


# --------------------------------------------------------------------------- NaN, channels


def test_nan_neither_breaks_nor_extends_a_run():
    e = engine({"channel": "current", "above": 3.0, "for_ms": 30})
    nan = float("nan")
    # above at 0, 0.01, (NaN at 0.02), 0.03: 30 ms of breach without a clear sample.
    trs = e.on_batch(7, *batch(0.0, [4, 4, nan, 4]))
    assert states(trs) == [("firing", 0.03, 4.0)]
    # Only NaNs: nothing happens, the alert stays firing.
    assert e.on_batch(7, *batch(0.04, [nan, nan])) == [] and len(e.firing()) == 1


def test_an_infinite_value_breaches_and_is_reported_without_a_value():
    e = engine({"channel": "current", "above": 3.0})
    [tr] = e.on_batch(7, *batch(0.0, [float("inf")]))
    assert tr.firing and tr.value is None


def test_a_channel_added_later_is_evaluated_from_then_on():
    info = StreamInfo(key=3, id="serial/x", channels=(Channel("a"),))
    e = engine({"channel": "b", "above": 1.0}, info=info)
    one = (np.array([0.0]), np.array([[5.0]], np.float32))
    assert e.on_batch(3, *one) == []  # no channel b yet
    e.on_stream(StreamInfo(key=3, id="serial/x", channels=(Channel("a"), Channel("b"))), 1.0, 1.0)
    assert e.on_batch(3, *one) == []  # an old-layout batch (C=1) still carries no b
    trs = e.on_batch(3, np.array([1.0]), np.array([[0.0], [2.0]], np.float32))
    assert [t.state for t in trs] == ["firing"] and trs[0].value == 2.0


def test_rules_apply_to_every_stream_their_glob_matches_and_to_rules_added_later():
    e = AlertEngine(parse_rules([{"stream": "lab/*", "channel": "x", "above": 0}], "cfg"))
    infos = [StreamInfo(key=k, id=f"lab/{k}", channels=(Channel("x"),)) for k in (1, 2)]
    other = StreamInfo(key=9, id="sim/x", channels=(Channel("x"),))
    for i in infos + [other]:
        e.on_stream(i, 0, 0)
    e.add_rules(parse_rules([{"stream": "sim/x", "channel": "x", "below": 0}], "late"))
    one = (np.array([0.0]), np.array([[1.0]], np.float32))
    assert [t.stream for k in (1, 2, 9) for t in e.on_batch(k, *one)] == ["lab/1", "lab/2"]
    assert [t.stream for t in e.on_batch(9, np.array([0.0]), np.array([[-1.0]], np.float32))] == ["sim/x"]


def test_rule_bindings_are_capped_and_the_skipped_ones_counted(monkeypatch):
    from sensorstream.alerts import engine as eng

    monkeypatch.setattr(eng, "MAX_INSTANCES", 3)
    e = AlertEngine(parse_rules([{"stream": "*", "channel": "x", "above": 0}, {"stream": "*", "channel": "x", "below": -1}], "cfg"))
    for k in (1, 2):
        e.on_stream(StreamInfo(key=k, id=f"s/{k}", channels=(Channel("x"),)), 0, 0)
    assert len(e.instances()) == 3 and e.unbound == 1
    e.on_removed(1, 0)
    e.on_stream(StreamInfo(key=3, id="s/3", channels=(Channel("x"),)), 0, 0)   # room again
    assert len(e.instances()) == 3 and e.unbound == 1


def test_a_removed_stream_resolves_its_firing_alerts():
    e = engine({"channel": "current", "above": 3.0})
    e.on_batch(7, *batch(0.0, [4]))
    [tr] = e.on_removed(7, 123.0)
    assert tr.state == "resolved" and tr.t == 123.0 and e.firing() == []


def test_flapping_within_one_batch_is_summarised_but_counted():
    e = engine({"channel": "current", "above": 3.0})
    trs = e.on_batch(7, *batch(0.0, [4, 1] * 50 + [4]))
    assert [t.state for t in trs] == ["firing"]  # first flip; the final state equals it
    trs = e.on_batch(7, *batch(1.0, [1, 4] * 50 + [1]))
    assert [t.state for t in trs] == ["resolved"]
    assert e.instances()[0].fired == 51 + 50


# --------------------------------------------------------------------------- status rules


def test_a_status_alert_fires_after_for_ms_and_resolves_after_clear_ms():
    e = engine({"status": ["disconnected", "stale"], "for_ms": 2000, "clear_ms": 500, "severity": "critical"})
    down = StreamInfo(key=7, id="sim/power", channels=POWER.channels, status="disconnected")
    assert e.on_stream(down, 10.0, 1000.0) == []
    assert e.next_deadline() == 12.0
    assert e.tick(11.9, 1001.9) == []
    [tr] = e.tick(12.0, 1002.0)
    assert tr.firing and tr.t == 1002.0 and tr.value is None and tr.rule.channel is None
    # Live again, briefly: nothing; live for clear_ms: resolved.
    assert e.on_stream(POWER, 20.0, 1010.0) == []
    stale = StreamInfo(key=7, id="sim/power", channels=POWER.channels, status="stale")
    assert e.on_stream(stale, 20.2, 1010.2) == [] and e.next_deadline() is None
    e.on_stream(POWER, 21.0, 1011.0)
    [tr] = e.tick(21.5, 1011.5)
    assert tr.state == "resolved"


def test_a_status_alert_without_hold_fires_at_once():
    e = engine({"status": "disconnected"})
    [tr] = e.on_stream(StreamInfo(key=7, id="sim/power", channels=(), status="disconnected"), 1.0, 5.0)
    assert tr.firing and tr.to_json()["channel"] is None
    assert e.on_batch(7, *batch(0.0, [9])) == []  # status rules ignore data


# --------------------------------------------------------------------------- the scan against a sample-by-sample reference


def reference(t, breach, firing, run_start, for_s, clear_s):
    flips = []
    for i, (ti, b) in enumerate(zip(t, breach)):
        if b != firing:
            if run_start is None:
                run_start = ti
            if ti - run_start >= (clear_s if firing else for_s):
                firing = not firing
                flips.append((i, firing))
                run_start = None
        else:
            run_start = None
    return flips, run_start


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.booleans()), max_size=60),
    st.booleans(),
    st.sampled_from([0, 0.001, 0.002, 0.005]),
    st.sampled_from([0, 0.001, 0.003]),
    st.integers(1, 5),
)
def test_the_vectorised_scan_equals_a_sample_by_sample_reference(samples, firing0, for_s, clear_s, n_parts):
    t = np.cumsum([dt / 1000 for dt, _ in samples]) if samples else np.empty(0)
    breach = np.array([b for _, b in samples], dtype=bool)
    want, _ = reference(t, breach, firing0, None, for_s, clear_s)
    # Any split into batches gives the same flips.
    cuts = sorted({len(t) * k // n_parts for k in range(n_parts + 1)})
    got, firing, run = [], firing0, None
    for a, b in zip(cuts, cuts[1:]):
        at, states, run = _scan(t[a:b], breach[a:b], firing, run, for_s, clear_s)
        if len(at):
            firing = bool(states[-1])
        got += [(a + int(i), bool(f)) for i, f in zip(at, states)]
    assert got == want


# --------------------------------------------------------------------------- rule checking


@pytest.mark.parametrize("entry, words", [
    ({"channel": "x"}, "needs a limit"),
    ({"above": 1}, "needs channel"),
    ({"channel": "x", "above": 1, "colour": "red"}, "unknown key 'colour'"),
    ({"channel": "x", "above": "3"}, "finite number"),
    ({"channel": "x", "above": 1, "below": 2}, "always fire"),
    ({"channel": "x", "above": 1, "severity": "fatal"}, "severity must be warning or critical"),
    ({"channel": "x", "above": 1, "for_ms": -5}, "for_ms must be"),
    ({"status": "gone"}, "status must be one of"),
    ({"status": "stale", "channel": "x"}, "whole stream"),
])
def test_bad_rules_are_refused_with_the_reason(entry, words):
    with pytest.raises(RuleError, match=words):
        parse_rules([entry], "devices/x.toml", stream="x")


def test_config_rules_need_a_stream_and_names_are_unique():
    with pytest.raises(RuleError, match="needs stream"):
        parse_rules([{"channel": "x", "above": 1}], "cfg")
    with pytest.raises(RuleError, match="second alert named"):
        parse_rules([{"channel": "x", "above": 1}] * 2, "cfg", stream="s")
    [r] = parse_rules([{"channel": "x", "below": -1}], "cfg", stream="s")
    assert (r.name, r.message, r.severity, r.for_ms) == ("x<-1", "x < -1", "warning", 0.0)
