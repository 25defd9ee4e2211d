"""Stream statuses that tell the truth: live -> stale -> live (the sans-I/O rule,
then on MockClock through a real hub, then a real silent pty), failed sources,
/healthz and /metrics."""

from __future__ import annotations

import json
import os
import tty

import numpy as np
import pytest
import trio
import trio.testing

from sensorstream import protocol
from sensorstream.hub import LocalHub
from sensorstream.protocol import Channel, StreamInfo
from sensorstream.staleness import StalenessWatcher, StaleTracker, stale_after


def info(key=1, status="live", rate=None):
    return StreamInfo(key=key, id=f"s/{key}", channels=(Channel("a"),), rate_hz=rate, status=status)


@pytest.mark.parametrize("rate,window,expected", [
    (None, 0.05, 2.0),      # the floor
    (100, 0.05, 2.0),
    (1, 0.05, 5.0),         # 5 periods of a 1 Hz stream
    (0.1, 0.05, 50.0),      # 5 periods of a 0.1 Hz stream
    (100, 1.0, 3.0),        # 3 batch windows
])
def test_stale_after_is_the_largest_of_the_floor_the_periods_and_the_windows(rate, window, expected):
    assert stale_after(rate, window) == pytest.approx(expected)


def test_tracker_goes_stale_once_after_the_limit_and_live_with_the_next_batch():
    t = StaleTracker(window_s=0.05)
    t.on_stream(info(1, rate=100), now=0.0)
    assert t.next_deadline() == 2.0
    assert t.due(1.99) == []
    assert t.on_batch(1, now=1.5) is False  # a batch pushes the deadline
    assert t.next_deadline() == 3.5
    assert t.due(3.49) == []
    assert t.due(3.5) == [1]
    assert t.due(10.0) == []  # reported once
    t.on_stream(info(1, "stale", rate=100), now=3.5)  # (the hub's announcement of it)
    assert t.next_deadline() is None
    assert t.on_batch(1, now=11.0) is True  # the caller makes it live
    t.on_stream(info(1, "live", rate=100), now=11.0)
    assert t.next_deadline() == 13.0


def test_tracker_leaves_disconnected_and_failed_streams_alone_and_restarts_the_clock_when_live_again():
    t = StaleTracker(window_s=0.05)
    t.on_stream(info(1), now=0.0)
    t.on_stream(info(1, "disconnected"), now=1.0)
    assert t.due(100.0) == [] and t.on_batch(1, 100.0) is False
    t.on_stream(info(1, "live"), now=100.0)
    assert t.due(101.9) == [] and t.due(102.0) == [1]
    t.on_stream(info(2, "failed"), now=0.0)
    assert t.due(1e9) == []
    t.on_removed(1)
    assert t.next_deadline() is None


class Announcements:
    """A hub subscriber that records stream statuses in order."""

    def __init__(self):
        self.statuses: list[tuple[float, str]] = []
        self._changed = trio.Event()

    def deliver(self, frame):
        pass

    def notify(self, text):
        msg = json.loads(text)
        if msg["type"] == "stream":
            self.statuses.append((trio.current_time(), msg["stream"]["status"]))
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for(self, status: str) -> None:
        while not self.statuses or self.statuses[-1][1] != status:
            await self._changed.wait()


def _publish(hub, key, seq):
    hub.publish(key, seq, np.array([trio.current_time()]), np.zeros((1, 1), np.float32))


async def test_a_quiet_stream_is_announced_stale_on_time_and_live_with_its_next_batch(autojump_clock):
    hub = LocalHub()
    watcher = StalenessWatcher(hub, window_s=0.05)
    rec = Announcements()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watcher.run)
        s = hub.add_stream("dev/x", [Channel("a")], rate_hz=10)
        hub.attach(rec)
        for seq in range(10):  # 10 Hz, batches every 0.1 s: never stale
            await trio.sleep(0.1)
            _publish(hub, s.key, seq)
        last = trio.current_time()
        assert rec.statuses == [] and hub.stream_by_id("dev/x").status == "live"
        await trio.sleep(5)  # silent
        assert [st for _, st in rec.statuses] == ["stale"]
        went_stale_at = rec.statuses[0][0]
        assert last + 2.0 <= went_stale_at <= last + 2.0 + 0.25 + 1e-6
        _publish(hub, s.key, 10)
        assert [st for _, st in rec.statuses] == ["stale", "live"]
        assert rec.statuses[1][0] == trio.current_time()  # with the batch, not at the next look
        await trio.sleep(1.9)
        assert len(rec.statuses) == 2
        await trio.sleep(0.5)
        assert [st for _, st in rec.statuses] == ["stale", "live", "stale"]
        # A disconnected stream is not also stale.
        hub.update_stream(s.key, status="disconnected")
        await trio.sleep(60)
        assert [st for _, st in rec.statuses][-1] == "disconnected"
        nursery.cancel_scope.cancel()


async def test_a_silent_serial_port_becomes_stale_and_live_again_when_it_talks():
    """A real pty that is open but says nothing (a device that hangs, or prints
    in a format nobody reads), read by the real serial source."""
    from sensorstream.sources.serial import run_serial, spec_from_arg

    master, slave = os.openpty()
    tty.setraw(slave)
    hub = LocalHub()
    StalenessWatcher(hub, window_s=0.05)
    rec = Announcements()
    hub.attach(rec)
    watcher = hub.observers[-1]
    spec = spec_from_arg(os.ttyname(slave))
    spec.profile = {"format": {"kind": "labels"}, "channels": [{"name": "a"}]}
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watcher.run)
            await nursery.start(run_serial, hub, spec)
            key = hub.stream_by_id(spec.stream_id).key
            os.write(master, b"a:1\r\na:2\r\na:3\r\n")
            with trio.fail_after(20):
                await rec.wait_for("stale")
                assert hub.stats(key).samples >= 2  # (the first line after opening may be cut: discarded)
                os.write(master, b"a:4\r\na:5\r\n")
                await rec.wait_for("live")
            assert hub.stats(key).samples >= 4
            assert [st for _, st in rec.statuses[-2:]] == ["stale", "live"]
            nursery.cancel_scope.cancel()
    finally:
        os.close(master)
        os.close(slave)


# ----------------------------------------------------------------- failed sources


async def test_a_source_that_dies_marks_its_streams_failed_and_is_restarted_with_backoff(autojump_clock):
    from sensorstream.sources.supervisor import SourceStreams, supervise

    hub = LocalHub()
    hub.add_observer(SourceStreams())
    hub.add_stream("other/stream", [Channel("a")])  # not the source's: left alone
    rec = Announcements()
    hub.attach(rec)
    starts = []
    failures = []

    async def source():
        starts.append(trio.current_time())
        feed_key = hub.add_stream("dev/a", [Channel("a")]).key
        hub.add_stream("dev/b", [Channel("a")])
        _publish(hub, feed_key, len(starts))
        await trio.sleep(0.5)
        raise RuntimeError("the device said\nsomething odd")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: supervise(hub, source, on_failure=lambda: failures.append(1)))
        await trio.sleep(0.6)
        a, b = hub.stream_by_id("dev/a"), hub.stream_by_id("dev/b")
        assert (a.status, b.status) == ("failed", "failed")
        assert a.error == "RuntimeError: the device said something odd"  # one line
        assert "error" in json.loads(protocol.stream_msg(a))["stream"]
        assert hub.stream_by_id("other/stream").status == "live"
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    # Restarts after 1, 2, 4 s of backoff (each run lasts 0.5 s); every run failed once.
    gaps = [round(t1 - t0, 3) for t0, t1 in zip(starts, starts[1:])]
    assert gaps[:3] == [1.5, 2.5, 4.5]
    assert len(failures) == len(starts)
    # Added live, failed, then live again on restart: the reason goes with the failure.
    seen = [st for _, st in rec.statuses]
    assert seen[:6] == ["live", "live", "failed", "failed", "live", "live"]
    assert hub.stream_by_id("dev/a").error is not None  # (the clock stopped in a failed spell)
    hub.add_stream("dev/a", [Channel("a")])  # what a restart does
    assert hub.stream_by_id("dev/a").error is None and "error" not in json.loads(protocol.stream_msg(hub.stream_by_id("dev/a")))["stream"]


# ----------------------------------------------------------------- /healthz and /metrics


async def test_healthz_lists_failed_and_stale_streams_at_once_and_metrics_carry_each_status(make_server):
    from prometheus_client.parser import text_string_to_metric_families

    from .httpraw import exchange, get, status_of

    server = await make_server(unhealthy_after_s=3600)
    port = server.port
    live = server.hub.add_stream("dev/live", [Channel("x")])
    failed = server.hub.add_stream("dev/failed", [Channel("x")])
    server.hub.update_stream(failed.key, status="failed", error="RuntimeError: boom")
    gone = server.hub.add_stream("dev/gone", [Channel("x")])
    server.hub.update_stream(gone.key, status="disconnected")  # not yet past --unhealthy-after
    stale = server.hub.add_stream("dev/stale", [Channel("x")])
    server.hub.update_stream(stale.key, status="stale")

    r = await exchange(port, get("/healthz", port))
    body = json.loads(r.partition(b"\r\n\r\n")[2])
    assert status_of(r) == 503 and body["status"] == "degraded"
    assert sorted(body["unhealthy_streams"]) == ["dev/failed", "dev/stale"]
    by_id = {s["id"]: s for s in body["streams"]}
    assert by_id["dev/failed"]["error"] == "RuntimeError: boom" and "error" not in by_id["dev/live"]

    r = await exchange(port, get("/metrics", port))
    fams = {f.name: f for f in text_string_to_metric_families(r.partition(b"\r\n\r\n")[2].decode())}
    now = {(s.labels["stream"], s.labels["status"]): s.value for s in fams["sensorstream_stream_status"].samples}
    for sid, status in [("dev/live", "live"), ("dev/failed", "failed"), ("dev/gone", "disconnected"), ("dev/stale", "stale")]:
        assert now[(sid, status)] == 1
        assert sum(v for (s, _), v in now.items() if s == sid) == 1
    del live


async def test_a_port_another_reader_holds_is_refused_and_the_log_says_why(caplog):
    """Two readers of one port would each get part of its bytes: whichever opens it
    second is refused (disconnected, retrying) and the log says why."""
    from sensorstream.sources.serial import run_serial, spec_from_arg

    master, slave = os.openpty()
    tty.setraw(slave)
    hub = LocalHub()
    rec = Announcements()
    hub.attach(rec)
    first = spec_from_arg(os.ttyname(slave))
    second = spec_from_arg(os.ttyname(slave))
    second.stream_id = "serial/second"
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(run_serial, hub, first)
            await nursery.start(run_serial, hub, second)
            with trio.fail_after(20):
                await rec.wait_for("disconnected")
            statuses = sorted(hub.stream_by_id(s.stream_id).status for s in (first, second))
            assert statuses == ["disconnected", "live"]
            assert any("in use by another program" in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
            nursery.cancel_scope.cancel()
    finally:
        os.close(master)
        os.close(slave)


def test_a_stream_without_a_nominal_rate_is_judged_by_its_own_pace():
    """A `--serial` device with no profile that prints every 5 s is not stale after
    2 s of its ordinary silence; silent for 5 of its intervals, it is."""
    t = StaleTracker(window_s=0.05)
    t.on_stream(info(1, rate=None), now=0.0)
    now = 1.5  # its first line, 1.5 s after the port opened: a first guess of its pace
    t.on_batch(1, now)
    for _ in range(10):
        now += 5.0
        assert t.due(now - 0.01) == []
        t.on_batch(1, now)
    assert t.due(now + 23.0) == []  # (its average interval is ~4.8 s by now)
    assert t.due(now + 25.0) == [1]
    # A fast stream without a rate keeps the 2 s floor.
    t.on_stream(info(2, rate=None), now=0.0)
    for i in range(1, 50):
        t.on_batch(2, i * 0.05)
    assert t.due(2.45 + 1.99) == [] and t.due(2.45 + 2.0) == [2]
