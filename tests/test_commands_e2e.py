"""Commands end to end, over real pseudo-terminals and real WebSockets: what a client
sends arrives byte-exact at the device side of the pty; device replies come back as
console lines; permissions, rate limits, a device that never reads, unplugging,
polls on schedule; simulators and `simulate --pty` answer commands."""

from __future__ import annotations

import functools
import json
import logging
import os
import tty

import pytest
import trio
import trio_websocket

from sensorstream import protocol
from sensorstream.client import CommandRefused, open_client
from sensorstream.commands.registry import CommandPolicy, CommandRegistry
from sensorstream.hub import LocalHub
from sensorstream.server.security import ConfigError
from sensorstream.sources.pty_sim import run_pty_device
from sensorstream.sources.serial import SerialSpec, run_serial
from sensorstream.sources.simulator import default_profiles

from .httpraw import exchange, get
from .wire import WireClient, connect


class Device:
    """The device end of a pty: the server opens the slave, the test reads and writes the master."""

    def __init__(self, link: str):
        self.link = link
        self.master, slave = os.openpty()
        tty.setraw(slave)
        os.symlink(os.ttyname(slave), link)
        os.close(slave)  # only the server holds the slave side open
        os.set_blocking(self.master, False)
        self.got = b""

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    async def read_until(self, n: int, timeout: float = 10) -> bytes:
        """At least n bytes read from the master in total; returns all of them."""
        with trio.fail_after(timeout):
            while len(self.got) < n:
                await trio.lowlevel.wait_readable(self.master)
                try:
                    self.got += os.read(self.master, 65536)
                except BlockingIOError:
                    pass
        return self.got

    def unplug(self) -> None:
        os.close(self.master)
        os.unlink(self.link)
        self.master = -1


@pytest.fixture
def device(tmp_path):
    d = Device(str(tmp_path / "ttyCMD0"))
    yield d
    if d.master >= 0:
        os.close(d.master)


async def serial_source(nursery, server, device: Device, sid="serial/dev", profile: dict | None = None):
    """A serial source for `device`, with a write side in the server's command registry."""
    spec = SerialSpec(stream_id=sid, path=device.link, profile=profile or {"format": {"kind": "csv"}})
    port = server.commands.port_for(sid)
    feed = await nursery.start(functools.partial(run_serial, server.hub, spec, port=port, window_s=0.02))
    # The port opens right after the stream is announced; a command needs it open.
    with trio.fail_after(10):
        await port.wait_connected()
    return feed


async def client(nursery, server, query: str = "", headers=None) -> WireClient:
    if headers is None:
        return await connect(nursery, server.port, "/ws" + query)
    ws = await trio_websocket.connect_websocket(nursery, "127.0.0.1", server.port, "/ws" + query, use_ssl=False,
                                                extra_headers=headers)
    c = WireClient(ws)
    c.hello = await c.recv_text("hello")
    return c


async def command(c: WireClient, ref, **msg) -> dict:
    """Send a command; the answer with its ref (command_sent or error)."""
    await c.send({"type": "command", "ref": ref, **msg})
    with trio.fail_after(10):
        while True:
            m = await c.recv_text()
            if m["type"] in ("command_sent", "error") and m.get("ref") == ref:
                return m


# ----------------------------------------------------------------- bytes on the wire


@pytest.mark.parametrize("msg, wire", [
    ({"text": "LED 1", "eol": "none"}, b"LED 1"),
    ({"text": "LED 1", "eol": "lf"}, b"LED 1\n"),
    ({"text": "LED 1", "eol": "cr"}, b"LED 1\r"),
    ({"text": "LED 1", "eol": "crlf"}, b"LED 1\r\n"),
    ({"text": "µ"}, "µ\n".encode()),
    ({"hex": "01 03 00 00 00 0a c5 cd"}, bytes.fromhex("01030000000ac5cd")),
    ({"hex": "00ff"}, b"\x00\xff"),
])
async def test_a_command_reaches_the_device_byte_exact(make_server, nursery, device, msg, wire):
    server = await make_server(allow_commands=True)
    await serial_source(nursery, server, device)
    c = await client(nursery, server)
    info = next(s for s in c.hello["streams"] if s["id"] == "serial/dev") if c.hello["streams"] else None
    assert info is None or info["commands"] is True
    reply = await command(c, "r1", stream="serial/dev", **msg)
    assert reply == {"type": "command_sent", "ref": "r1", "bytes": len(wire)}
    assert await device.read_until(len(wire)) == wire


async def test_commands_to_one_device_arrive_in_order(make_server, nursery, device):
    server = await make_server(allow_commands=True, command_rate=1000, command_burst=1000)
    await serial_source(nursery, server, device)
    c = await client(nursery, server)
    for i in range(20):
        await c.send({"type": "command", "ref": i, "stream": "serial/dev", "text": f"SET {i}"})
    want = b"".join(f"SET {i}\n".encode() for i in range(20))
    assert await device.read_until(len(want)) == want


async def test_stream_objects_say_which_streams_take_commands(make_server, nursery, device):
    server = await make_server(allow_commands=True, simulate=True)
    await serial_source(nursery, server, device)
    c = await client(nursery, server)
    streams = {s["id"]: s for s in c.hello["streams"]}
    assert streams["serial/dev"]["commands"] is True and streams["serial/dev"]["actions"] == []
    assert streams["sim/imu"]["commands"] is True
    assert [a["name"] for a in streams["sim/imu"]["actions"]] == ["Rate"]
    off = await make_server(simulate=True)  # commands not allowed: nothing says they are
    c2 = await client(nursery, off)
    assert "sim/imu" in {s["id"] for s in c2.hello["streams"]}  # else the next line could not fail
    assert all("commands" not in s for s in c2.hello["streams"])


# ----------------------------------------------------------------- console


async def test_device_replies_show_up_as_console_lines(make_server, nursery, device):
    server = await make_server(allow_commands=True)
    await serial_source(nursery, server, device)
    listener = await client(nursery, server)
    await listener.send({"type": "subscribe", "ref": 1, "streams": ["serial/*"], "console": True})
    await listener.recv_text("subscribed")
    plain = await client(nursery, server)
    await plain.send({"type": "subscribe", "ref": 1, "streams": ["serial/*"]})
    await plain.recv_text("subscribed")
    assert (await command(listener, "c", stream="serial/dev", text="VERSION"))["type"] == "command_sent"
    assert await device.read_until(8) == b"VERSION\n"
    # The device answers between data lines; the answer is not data.
    device.write(b"junk\n1,2,3\nOK v1.2\r\n4,5,6\nERR bad\n")
    lines = []
    with trio.fail_after(10):
        while lines[-2:] != ["OK v1.2", "ERR bad"]:
            kind, m = await listener.recv()
            if kind == "text" and m["type"] == "console":
                assert m["key"] == server.hub.stream_by_id("serial/dev").key
                lines += m["lines"]
    # Data still flows as numbers, and a client that did not ask gets no console.
    seen_console = False
    with trio.fail_after(10):
        n = 0
        while n < 2:
            kind, m = await plain.recv()
            if kind == "batch":
                n += len(m["t"])
            elif m["type"] == "console":
                seen_console = True
    assert not seen_console


async def test_console_is_rate_limited_per_stream(make_server, nursery, device):
    server = await make_server(allow_commands=True)
    await serial_source(nursery, server, device)
    port = server.commands.ports["serial/dev"]
    # Five lines at once, refilled fast (so the test need not wait for tokens).
    port.console.rate, port.console.burst, port.console._tokens = 100_000.0, 5, 5.0
    c = await client(nursery, server)
    await c.send({"type": "subscribe", "ref": 1, "streams": ["serial/dev"], "console": True})
    await c.recv_text("subscribed")
    # Lines without a number in them are not CSV data: all of them are console lines.
    device.write(b"first\n" + b"".join(b"spam %s\n" % bytes([97 + i % 26]) for i in range(100)))
    with trio.fail_after(10):
        m = await c.recv_text("console")
    assert m["lines"] == [f"spam {chr(97 + i)}" for i in range(5)] and "dropped" not in m
    device.write(b"last\n")
    shown, dropped = 5, 0
    with trio.fail_after(10):
        while True:
            m = await c.recv_text("console")
            assert len(m["lines"]) <= 5
            shown += len(m["lines"])
            dropped += m.get("dropped", 0)
            if m["lines"][-1] == "last":
                break
    # Every line is either shown or counted, and most were dropped.
    assert shown + dropped == 101 and dropped >= 90


# ----------------------------------------------------------------- permissions


async def test_forbidden_when_commands_are_not_allowed(make_server, nursery, device):
    server = await make_server()
    await serial_source(nursery, server, device)
    c = await client(nursery, server)
    reply = await command(c, 1, stream="serial/dev", text="LED 1")
    assert reply["type"] == "error" and reply["code"] == "forbidden"
    assert "--allow-commands" in reply["message"]


@pytest.mark.parametrize("query, headers, code", [
    ("", None, "forbidden"),
    ("?control_token=wrong", None, "forbidden"),
    ("?control_token=s3cret", None, None),
    ("", [("Sensorstream-Control-Token", "s3cret")], None),
    ("", [("Sensorstream-Control-Token", "nope")], "forbidden"),
])
async def test_control_token_by_query_or_header(make_server, nursery, device, query, headers, code):
    server = await make_server(control_token="s3cret")
    await serial_source(nursery, server, device)
    c = await client(nursery, server, query, headers)
    reply = await command(c, 1, stream="serial/dev", text="LED 1")
    if code is None:
        assert reply["type"] == "command_sent"
        assert await device.read_until(6) == b"LED 1\n"
    else:
        assert reply["code"] == code


async def test_the_read_token_alone_may_read_but_not_send(make_server, nursery, device):
    server = await make_server(token="reader", control_token="writer")
    await serial_source(nursery, server, device)
    reader = await client(nursery, server, "?token=reader")
    assert (await command(reader, 1, stream="serial/dev", text="x"))["code"] == "forbidden"
    writer = await client(nursery, server, "?token=reader&control_token=writer")
    assert (await command(writer, 2, stream="serial/dev", text="x"))["type"] == "command_sent"
    # The control token does not replace the read token.
    with pytest.raises(trio_websocket.HandshakeError):
        async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{server.port}/ws?control_token=writer"):
            pass


def test_a_public_bind_with_commands_needs_a_control_token():
    from sensorstream.config import ServerConfig
    from sensorstream.server.app import Server

    with pytest.raises(ConfigError, match="control token"):
        Server(ServerConfig(host="0.0.0.0", port=0, token="reader", allow_commands=True))
    Server(ServerConfig(host="0.0.0.0", port=0, token="reader", control_token="writer"))
    Server(ServerConfig(host="0.0.0.0", port=0, token="reader", allow_commands=True, insecure=True))


# ----------------------------------------------------------------- refusals


async def test_typed_errors_for_bad_commands(make_server, nursery, device):
    server = await make_server(allow_commands=True, max_command_bytes=16, simulate=True)
    await serial_source(nursery, server, device)
    c = await client(nursery, server)
    assert (await command(c, 1, stream="serial/dev", text="x" * 16))["code"] == "too_large"  # 17 with its LF
    assert (await command(c, 2, stream="serial/dev", hex="0g"))["code"] == "bad_hex"
    assert (await command(c, 3, stream="nope/x", text="x"))["code"] == "not_commandable"
    assert (await command(c, 4, stream="serial/dev", text="x" * 15))["type"] == "command_sent"
    assert await device.read_until(16) == b"x" * 15 + b"\n"


async def test_per_client_command_rate_limit_leaves_other_clients_alone(make_server, nursery, device):
    server = await make_server(allow_commands=True, command_rate=0.5, command_burst=2)
    await serial_source(nursery, server, device)
    a, b = await client(nursery, server), await client(nursery, server)
    got = [(await command(a, i, stream="serial/dev", text="a"))["type"] for i in range(3)]
    assert got == ["command_sent", "command_sent", "error"]
    assert (await command(b, 9, stream="serial/dev", text="b"))["type"] == "command_sent"


async def test_a_device_that_never_reads_gets_rate_limited_and_nothing_else_stalls(make_server, nursery, device):
    server = await make_server(allow_commands=True, simulate=True, command_rate=1000, command_burst=1000,
                               max_command_bytes=8192, command_queue_bytes=16384)
    await serial_source(nursery, server, device)
    c = await client(nursery, server)
    watcher = await client(nursery, server)
    await watcher.send({"type": "subscribe", "ref": 1, "streams": ["sim/imu", "serial/dev"]})
    await watcher.recv_text("subscribed")
    chunk = "x" * 8000
    # 20 x 8 KB: the kernel's pty buffer (the master is never read) fills, then our
    # 16 KB queue, then commands are refused at once.
    for i in range(20):
        await c.send({"type": "command", "ref": i, "stream": "serial/dev", "text": chunk})
    answers = {}
    with trio.fail_after(10):
        while 19 not in answers:  # refusals are immediate: the last one's answer comes last
            m = await c.recv_text()
            if m["type"] in ("command_sent", "error"):
                answers[m["ref"]] = m.get("code", m["type"])
    sent = sorted(r for r, a in answers.items() if a == "command_sent")
    assert sent == list(range(len(sent))) and 0 < len(sent) < 18
    assert answers[19] == "rate_limited"
    assert server.commands.ports["serial/dev"].queue.queued_bytes > 0
    # Other streams and other clients go on: fresh batches of the simulator and of the
    # stuck device itself (its reads do not wait on its writes).
    device.write(b"1,2\n3,4\n5,6\n")
    keys = {server.hub.stream_by_id(s).key: s for s in ("sim/imu", "serial/dev")}
    seen = set()
    with trio.fail_after(10):
        while seen != {"sim/imu", "serial/dev"}:
            seen.add(keys[(await watcher.recv_batch())["key"]])
    assert (await command(c, "ping?", stream="nope", text="x"))["code"] == "not_commandable"  # the session answers
    # The device reads again: what was queued goes out, and is confirmed.
    queued = [i for i in range(20) if i not in answers]
    assert queued
    total = sum(8001 for r, a in answers.items() if a == "command_sent") + 8001 * len(queued)
    await device.read_until(total)
    with trio.fail_after(10):
        while queued:
            m = await c.recv_text("command_sent")
            queued.remove(m["ref"])


async def test_unplugged_device_refuses_commands(make_server, nursery, device):
    server = await make_server(allow_commands=True)
    await serial_source(nursery, server, device)
    c = await client(nursery, server)
    await c.send({"type": "subscribe", "ref": 1, "streams": ["serial/dev"]})
    await c.recv_text("subscribed")
    device.unplug()
    with trio.fail_after(10):
        while True:
            m = await c.recv_text("stream")
            if m["stream"]["status"] == "disconnected":
                break
    reply = await command(c, "late", stream="serial/dev", text="LED 1")
    assert reply["type"] == "error" and reply["code"] == "disconnected"


# ----------------------------------------------------------------- logs and metrics


async def test_commands_are_logged_and_counted(make_server, nursery, device, caplog):
    server = await make_server(allow_commands=True)
    await serial_source(nursery, server, device)
    c = await client(nursery, server)
    with caplog.at_level(logging.INFO, logger="sensorstream.commands"):
        assert (await command(c, 1, stream="serial/dev", text="LED 1"))["type"] == "command_sent"
        assert (await command(c, 2, stream="serial/dev", hex="zz"))["code"] == "bad_hex"
        assert (await command(c, 3, stream="serial/other", text="x"))["code"] == "not_commandable"
    sent = [r for r in caplog.records if getattr(r, "event", None) == "command"]
    assert len(sent) == 1 and sent[0].stream == "serial/dev" and sent[0].bytes == 6 and sent[0].head == b"LED 1\n".hex()
    assert sent[0].peer.startswith("127.0.0.1")
    body = (await exchange(server.port, get("/metrics", server.port))).partition(b"\r\n\r\n")[2].decode()
    assert 'sensorstream_commands_total{result="sent",stream="serial/dev"} 1.0' in body
    assert 'sensorstream_commands_total{result="not_commandable",stream=""} 1.0' in body
    assert 'sensorstream_command_bytes_total{stream="serial/dev"} 6.0' in body


# ----------------------------------------------------------------- polls (MockClock)


async def test_polls_arrive_on_schedule_with_their_checksum(device, mock_clock):
    # Virtual time jumps once every task has waited 50 ms of real time: a pty hands
    # written bytes to its other side asynchronously (a kernel work queue), so with
    # no real-time cushion the clock could jump before the bytes are readable.
    mock_clock.autojump_threshold = 0.05
    hub = LocalHub()
    registry = CommandRegistry(CommandPolicy(enabled=True))
    profile = {"format": {"kind": "csv"},
               "poll": [{"every_ms": 100, "hex": "01 03 00 00 00 0a", "checksum": "crc16-modbus"},
                        {"every_ms": 250, "data": "T?", "checksum": "xor"}]}
    from sensorstream.commands.profile import parse_polls

    spec = SerialSpec(stream_id="serial/poll", path=device.link, profile=profile)
    port = registry.port_for("serial/poll", polls=parse_polls(profile))
    modbus = bytes.fromhex("01030000000ac5cd")
    temp = b"T?" + bytes([ord("T") ^ ord("?")])
    arrivals: dict[float, bytes] = {}  # virtual time since the port opened -> bytes read then
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(run_serial, hub, spec, port=port, window_s=0.02))
        await port.wait_connected()
        t0 = trio.current_time()
        while max(arrivals, default=0) < 0.75:
            await trio.lowlevel.wait_readable(device.master)
            t = round(trio.current_time() - t0, 6)
            arrivals[t] = arrivals.get(t, b"") + os.read(device.master, 4096)
        nursery.cancel_scope.cancel()
    # Every 100 ms the Modbus request (CRC low byte first), every 250 ms the query with
    # its XOR byte; at 500 ms both, in the order of the profile.
    assert arrivals == {0.1: modbus, 0.2: modbus, 0.25: temp, 0.3: modbus, 0.4: modbus, 0.5: modbus + temp,
                        0.6: modbus, 0.7: modbus, 0.75: temp}
    assert port.polls_sent >= 9 and port.polls_skipped == 0


# ----------------------------------------------------------------- simulators


async def test_simulators_take_commands_and_answer_on_the_console(make_server, nursery):
    server = await make_server(simulate=True, allow_commands=True)
    c = await client(nursery, server)
    await c.send({"type": "subscribe", "ref": 1, "streams": ["sim/*"], "console": True})
    await c.recv_text("subscribed")
    assert (await command(c, "r", stream="sim/imu", text="rate 500"))["type"] == "command_sent"
    m = await c.recv_text("console")
    assert m["lines"] == ["OK rate 500"] and m["key"] == server.hub.stream_by_id("sim/imu").key
    assert (await command(c, "s", stream="sim/power", text="spike"))["type"] == "command_sent"
    assert (await c.recv_text("console"))["lines"] == ["OK spike"]
    # 500 Hz now: a second of sim/imu brings ~500 samples, not ~200.
    key = server.hub.stream_by_id("sim/imu").key
    start = None
    n = 0
    with trio.fail_after(10):
        while True:
            b = await c.recv_batch()
            if b["key"] != key:
                continue
            start = b["t"][0] if start is None else start
            n += len(b["t"])
            if b["t"][-1] - start >= 1.0:
                break
    assert 400 <= n <= 600


async def test_simulate_pty_answers_commands_on_its_pty(nursery, tmp_path):
    imu = next(p for p in default_profiles() if p.id == "sim/imu")
    path = await nursery.start(functools.partial(run_pty_device, imu, "labels", link=str(tmp_path / "sim")))
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(fd)
    try:
        os.write(fd, b"rate 50\r\nbogus\nhelp\n")
        got = b""
        with trio.fail_after(10):
            while b"commands: rate" not in got:
                await trio.lowlevel.wait_readable(fd)
                got += os.read(fd, 65536)
        lines = got.split(b"\r\n")
        assert b"OK rate 50" in lines and b"ERR unknown command 'bogus' (try help)" in lines
    finally:
        os.close(fd)


# ----------------------------------------------------------------- the Python client


async def test_python_client_send_command_and_console(make_server, nursery, device):
    server = await make_server(control_token="tok")
    await serial_source(nursery, server, device)
    url = f"ws://127.0.0.1:{server.port}/ws"
    async with open_client(url, ["serial/*"], console=True, control_token="tok") as cl:
        await cl.connected.wait()
        assert cl.streams[server.hub.stream_by_id("serial/dev").key].commands is True
        assert await cl.send_command("serial/dev", text="LED 1", eol="crlf") == 7
        assert await cl.send_command("serial/dev", hex="01 02") == 2
        assert await device.read_until(9) == b"LED 1\r\n\x01\x02"
        device.write(b"(the first line after connecting is dropped)\nok\n")
        with trio.fail_after(10):
            async for ev in cl.events():
                if isinstance(ev, dict) and ev["type"] == "console":
                    assert ev["lines"] == ["ok"]
                    break
    async with open_client(url, ["serial/*"]) as anon:
        with pytest.raises(CommandRefused) as e:
            await anon.send_command("serial/dev", text="LED 1")
        assert e.value.code == "forbidden"
