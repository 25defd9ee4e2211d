"""Alerts in a running server: a pty device crossing a limit, subscribers, /metrics,
the webhook against real receivers on 127.0.0.1 (one that answers, one that fails,
one that hangs), and status alerts on MockClock."""

from __future__ import annotations

import functools
import json
import signal
import subprocess
import sys

import h11
import pytest
import trio

from sensorstream.alerts import parse_rules
from sensorstream.alerts.monitor import AlertMonitor
from sensorstream.alerts.webhook import Webhook
from sensorstream.hub import LocalHub
from sensorstream.protocol import Channel
from sensorstream.sources.serial import alert_rules

from .conftest import eventually
from .httpraw import exchange, get
from .test_cli import start_serve
from .test_serial_e2e import ROOT, collect, pty, spec_for, start_serial, subscribe  # noqa: F401 (pty is a fixture)


class Receiver:
    """A webhook receiver: an h11 server on 127.0.0.1. `mode`: "ok" answers 204,
    "fail:N" answers 500 to the first N requests, "hang" reads the request and never answers."""

    def __init__(self, mode: str = "ok"):
        self.mode = mode
        self.bodies: list[dict] = []
        self.requests = 0
        self.port = 0
        self._send, self.received = trio.open_memory_channel[dict](1000)

    async def start(self, nursery) -> str:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, self._handle, 0, host="127.0.0.1"))
        self.port = listeners[0].socket.getsockname()[1]
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, stream):
        conn = h11.Connection(h11.SERVER)
        body = b""
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return
                conn.receive_data(data)
            elif isinstance(ev, h11.Request):
                assert ev.method == b"POST" and ev.target == b"/hook"
                assert (b"content-type", b"application/json") in ev.headers
            elif isinstance(ev, h11.Data):
                body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                break
        self.requests += 1
        msg = json.loads(body)
        if self.mode == "hang":
            self._send.send_nowait(msg)
            await trio.sleep_forever()
        failing = self.mode.startswith("fail:") and self.requests <= int(self.mode[5:])
        status = 500 if failing else 204
        if not failing:
            self.bodies.append(msg)
        await stream.send_all(conn.send(h11.Response(status_code=status, headers=[("Content-Length", "0")] if failing else []))
                              + conn.send(h11.EndOfMessage()))
        await stream.aclose()
        self._send.send_nowait(msg)


def metric(text: str, name: str, **labels) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return None


async def alerts_until(c, n: int, timeout: float = 10) -> list[dict]:
    got = []
    with trio.fail_after(timeout):
        while len(got) < n:
            kind, m = await c.recv()
            if kind == "text" and m["type"] == "alert":
                got.append(m)
    return got


# --------------------------------------------------------------------------- end to end, as a user runs it


async def test_a_pty_device_crossing_its_profile_limit_fires_then_resolves_everywhere(pty, tmp_path, nursery):
    receiver = Receiver()
    url = await receiver.start(nursery)
    prof = tmp_path / "psu.toml"
    prof.write_text(f"""
[stream]
id = "lab/psu"
[port]
path = "{pty.link}"
[format]
kind = "csv"
[[channels]]
name = "amps"
unit = "A"
[[alerts]]
channel = "amps"
above = 3
severity = "critical"
message = "overcurrent"
""")
    proc, port, _ = await start_serve("--device", str(prof), "--alert-webhook", url)
    try:
        from .wire import connect

        c = await connect(nursery, port)
        await c.send({"type": "subscribe", "ref": 1, "streams": ["lab/psu"]})
        await c.recv_text("subscribed")
        pty.write(b"junk\n1.0\n2.0\n")  # the first line may be a partial one: skipped
        await collect(c, 2)
        pty.write(b"3.5\n4.25\n")
        [firing] = await alerts_until(c, 1)
        pty.write(b"2.5\n")
        [resolved] = await alerts_until(c, 1)
        assert {k: firing[k] for k in ("channel", "state", "severity", "value", "message")} == {
            "channel": "amps", "state": "firing", "severity": "critical", "value": 3.5, "message": "overcurrent"}
        assert resolved["state"] == "resolved" and resolved["value"] == 2.5 and resolved["key"] == firing["key"]
        assert resolved["t"] >= firing["t"] > 1.7e9
        with trio.fail_after(10):
            hooks = [await receiver.received.receive() for _ in range(2)]
        assert [(h["state"], h["value"], h["id"]) for h in hooks] == [
            ("firing", 3.5, "lab/psu:amps>3"), ("resolved", 2.5, "lab/psu:amps>3")]
        with trio.fail_after(10):  # the receiver has both; the server counts the 2nd once it read the answer
            while metric(text := (await exchange(port, get("/metrics", port))).decode(), "sensorstream_alert_webhook_sent_total") != 2:
                await trio.sleep(0.02)
        labels = {"stream": "lab/psu", "alert": "amps>3", "channel": "amps", "severity": "critical"}
        assert metric(text, "sensorstream_alert_fired_total", **labels) == 1
        assert metric(text, "sensorstream_alert_firing", **labels) == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert await proc.wait() == 0


def test_a_bad_alert_in_a_profile_or_config_is_one_line_and_exit_2(tmp_path):
    prof = tmp_path / "bad.toml"
    prof.write_text('[port]\npath = "/dev/null"\n[[alerts]]\nchannel = "x"\n')
    cfg = tmp_path / "cfg.toml"
    cfg.write_text('[[alerts]]\nstream = "sim/power"\nchannel = "current"\nabove = "high"\n')
    for args, words in ((["--config", str(cfg)], "above must be a finite number"),
                        (["--alert-webhook", "ftp://x/"], "expected http://HOST")):
        r = subprocess.run([sys.executable, "-m", "sensorstream", "serve", "--port", "0", *args],
                           capture_output=True, text=True, cwd=ROOT, timeout=30)
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr


# --------------------------------------------------------------------------- in process


async def start_device(make_server, nursery, pty, entries, **server_kw):
    server = await make_server(**server_kw)
    server.alerts.add_rules(alert_rules({"alerts": entries}, "dev/test", "test"))
    await start_serial(nursery, server, spec_for(pty, {"format": {"kind": "csv"}, "channels": [{"name": "v"}]}))
    return server


async def test_a_client_subscribing_later_gets_the_alerts_firing_now(make_server, nursery, pty):
    server = await start_device(make_server, nursery, pty, [{"channel": "v", "below": 0, "message": "frozen"}])
    first = await subscribe(nursery, server, "dev/test")
    pty.write(b"junk\n1\n-5\n")
    [fired] = await alerts_until(first, 1)
    late = await connect_and_subscribe(nursery, server)
    assert late[0]["type"] == "subscribed" and late[1] == fired  # the same message, right after `subscribed`


async def connect_and_subscribe(nursery, server):
    from .wire import connect

    c = await connect(nursery, server.port)
    await c.send({"type": "subscribe", "ref": 2, "streams": ["dev/*"]})
    out = []
    with trio.fail_after(5):
        while len(out) < 2:
            kind, m = await c.recv()
            if kind == "text" and m["type"] in ("subscribed", "alert"):
                out.append(m)
    return out


async def test_a_hanging_webhook_does_not_slow_the_stream(make_server, nursery, pty):
    receiver = Receiver("hang")
    url = await receiver.start(nursery)
    server = await start_device(make_server, nursery, pty, [{"channel": "v", "above": 3}], alert_webhook=url)
    c = await subscribe(nursery, server, "dev/test")
    pty.write(b"junk\n5\n")
    await alerts_until(c, 1)
    with trio.fail_after(10):
        await receiver.received.receive()  # the webhook's POST is in, and will never be answered
    # While it hangs, data and alerts keep flowing: 40 more transitions, every sample.
    for i in range(40):
        pty.write(b"1\n" if i % 2 == 0 else b"5\n")
        await alerts_until(c, 1, timeout=5)
    assert server.alerts.webhook.stats.sent == 0 and receiver.requests == 1
    assert server.hub.stats(server.hub.stream_by_id("dev/test").key).samples == 41


async def test_a_device_that_goes_quiet_fires_its_stale_alert_and_data_resolves_it(make_server, nursery, pty):
    """The status alert builds on the server's own `stale` status (staleness.py: no
    sample for max(2 s, ...)); real time, as the staleness watcher runs on trio's clock."""
    server = await start_device(make_server, nursery, pty, [{"status": ["stale", "disconnected"], "severity": "critical",
                                                              "message": "device silent"}])
    c = await subscribe(nursery, server, "dev/test")
    pty.write(b"junk\n1\n")
    await collect(c, 1)
    [fired] = await alerts_until(c, 1, timeout=10)   # ~2 s of silence
    assert (fired["state"], fired["channel"], fired["value"], fired["message"]) == ("firing", None, None, "device silent")
    assert server.hub.stream_by_id("dev/test").status == "stale"
    pty.write(b"2\n")
    [resolved] = await alerts_until(c, 1, timeout=10)
    assert resolved["state"] == "resolved" and resolved["id"] == fired["id"]


async def test_the_webhook_retries_with_backoff_until_the_receiver_accepts(nursery):
    receiver = Receiver("fail:2")
    url = await receiver.start(nursery)
    hook = Webhook(url, backoff=0.01)
    nursery.start_soon(hook.run)
    hook.offer({"type": "alert", "state": "firing", "n": 1})
    with trio.fail_after(10):
        got = [await receiver.received.receive() for _ in range(3)]
    assert [g["n"] for g in got] == [1, 1, 1] and receiver.bodies == [got[0]]
    await eventually(lambda: hook.stats.sent == 1)  # counted once the webhook has read the answer
    assert (hook.stats.failed, hook.stats.sent, hook.stats.given_up) == (2, 1, 0)


async def test_a_hanging_webhook_times_out_gives_up_and_its_full_queue_drops(nursery):
    receiver = Receiver("hang")
    url = await receiver.start(nursery)
    hook = Webhook(url, queue=2, attempts=2, timeout=0.3, backoff=0.01)
    nursery.start_soon(hook.run)
    hook.offer({"n": 0})
    with trio.fail_after(10):
        await receiver.received.receive()
    for n in range(1, 5):  # one is being delivered, two fit the queue, the rest are dropped
        hook.offer({"n": n})
    assert hook.stats.dropped == 2
    with trio.fail_after(10):
        seen = [(await receiver.received.receive())["n"] for _ in range(5)]
    assert seen == [0, 1, 1, 2, 2]
    await eventually(lambda: hook.stats.given_up == 3)
    assert hook.stats.failed == 6 and hook.stats.sent == 0


async def test_a_webhook_nobody_listens_on_is_counted_not_raised(nursery):
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now: connection refused
    hook = Webhook(f"http://127.0.0.1:{port}/", attempts=3, backoff=0.001)
    nursery.start_soon(hook.run)
    hook.offer({"n": 1})
    await eventually(lambda: hook.stats.given_up == 1)
    assert hook.stats.failed == 3


# --------------------------------------------------------------------------- status alerts on MockClock


class Recorder:
    def __init__(self):
        self.texts: list[dict] = []

    def deliver(self, frame):
        pass

    def notify(self, text):
        msg = json.loads(text)
        if msg["type"] == "alert":
            self.texts.append(msg)


async def test_a_disconnected_stream_alert_waits_for_its_hold_on_the_clock(autojump_clock):
    hub = LocalHub()
    mon = AlertMonitor(hub, parse_rules([{"stream": "dev/*", "status": "disconnected", "for_ms": 2000, "clear_ms": 1000,
                                          "severity": "critical", "message": "device gone"}], "cfg"), wall=trio.current_time)
    rec = Recorder()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(mon.run)
        info = hub.add_stream("dev/a", [Channel("x")])
        hub.attach(rec)
        hub.subscribe(rec, ["dev/a"])
        t0 = trio.current_time()
        hub.update_stream(info.key, status="disconnected")
        await trio.sleep(1.999)
        assert rec.texts == []
        await trio.sleep(0.002)
        assert [(m["state"], m["channel"], m["value"], m["message"]) for m in rec.texts] == [("firing", None, None, "device gone")]
        assert rec.texts[0]["t"] == pytest.approx(t0 + 2.0)
        hub.update_stream(info.key, status="live")
        await trio.sleep(0.5)
        hub.update_stream(info.key, status="disconnected")  # back before clear_ms: still firing, nothing sent
        await trio.sleep(5)
        assert len(rec.texts) == 1
        hub.update_stream(info.key, status="live")
        await trio.sleep(1.001)
        assert [m["state"] for m in rec.texts] == ["firing", "resolved"]
        nursery.cancel_scope.cancel()
