"""The sans-I/O parts of commands: checksums, decoding, the write queue, the console
limiter, profile [[actions]]/[[poll]] and the poll schedule, the simulators' replies."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

from sensorstream import protocol
from sensorstream.commands.checksum import CHECKSUMS, append_checksum, crc8, crc16_modbus, sum8, xor8
from sensorstream.commands.console import ConsoleLimiter
from sensorstream.commands.encoding import CommandError, render_template
from sensorstream.commands.port import DevicePort
from sensorstream.commands.profile import Poll, PollSchedule, parse_actions, parse_polls
from sensorstream.commands.writequeue import WriteQueue

CHECK = b"123456789"  # the catalogue's check input


# ----------------------------------------------------------------- checksums


def test_checksums_match_the_catalogue_check_values():
    assert crc8(CHECK) == 0xF4  # CRC-8 (SMBus)
    assert crc16_modbus(CHECK) == 0x4B37  # CRC-16/MODBUS
    assert xor8(CHECK) == 0x31
    assert sum8(CHECK) == 0xDD
    assert crc8(b"") == 0 and crc16_modbus(b"") == 0xFFFF and xor8(b"") == 0 and sum8(b"") == 0


def test_modbus_request_gets_its_crc_low_byte_first():
    # Read 10 holding registers from slave 1: the frame every Modbus tutorial shows.
    assert append_checksum(bytes.fromhex("01030000000a"), "crc16-modbus") == bytes.fromhex("01030000000ac5cd")
    assert append_checksum(bytes.fromhex("010300000001"), "crc16-modbus") == bytes.fromhex("010300000001840a")


def test_one_byte_checksums_are_appended_and_unknown_ones_refused():
    assert append_checksum(CHECK, "crc8") == CHECK + b"\xf4"
    assert append_checksum(CHECK, "xor") == CHECK + b"\x31"
    assert append_checksum(CHECK, "sum8") == CHECK + b"\xdd"
    assert append_checksum(CHECK, None) == CHECK
    with pytest.raises(ValueError, match="crc16-modbus"):
        append_checksum(CHECK, "crc32")
    assert set(CHECKSUMS) == {"crc8", "crc16-modbus", "xor", "sum8"}


# ----------------------------------------------------------------- the command message


def parse(**msg):
    return protocol.parse_client_message(json.dumps({"type": "command", "ref": 7, **msg}))


@pytest.mark.parametrize("eol, tail", [("none", b""), ("lf", b"\n"), ("cr", b"\r"), ("crlf", b"\r\n")])
def test_text_commands_get_the_line_ending_asked_for(eol, tail):
    cmd = parse(stream="serial/x", text="LED 1", eol=eol)
    assert cmd == protocol.Command(7, "serial/x", b"LED 1" + tail)


def test_text_without_eol_ends_with_lf_and_is_utf8():
    assert parse(stream="s", text="µ").data == "µ\n".encode()


@pytest.mark.parametrize("text, data", [("01 03 00 00 00 0a", b"\x01\x03\x00\x00\x00\x0a"), ("0103", b"\x01\x03"),
                                        ("DE:AD-be ef", b"\xde\xad\xbe\xef"), ("", b"")])
def test_hex_commands_decode_with_separators(text, data):
    assert parse(stream="s", hex=text).data == data


@pytest.mark.parametrize("msg, code", [
    ({"stream": "s", "hex": "0g"}, "bad_hex"),
    ({"stream": "s", "hex": "123"}, "bad_hex"),
    ({"stream": "s", "hex": 5}, "bad_hex"),
    ({"stream": "s", "text": "a", "hex": "01"}, "bad_field"),
    ({"stream": "s"}, "bad_field"),
    ({"stream": "s", "text": "a", "eol": "lfcr"}, "bad_field"),
    ({"stream": "s", "text": 5}, "bad_field"),
    ({"stream": "", "text": "a"}, "bad_field"),
    ({"text": "a"}, "bad_field"),
    ({"stream": "s", "text": "\ud800"}, "bad_field"),
])
def test_bad_commands_get_a_typed_error_with_the_ref(msg, code):
    with pytest.raises(protocol.ProtocolError) as e:
        parse(**msg)
    assert e.value.code == code and e.value.ref == 7


def test_client_builders_round_trip():
    text = protocol.command("serial/x", text="RATE 5", eol="crlf", ref="a")
    assert protocol.parse_client_message(text) == protocol.Command("a", "serial/x", b"RATE 5\r\n")
    assert protocol.parse_client_message(protocol.command("s", hex="ff 00")).data == b"\xff\x00"
    sub = protocol.parse_client_message(protocol.subscribe(["*"], console=True))
    assert sub.console is True
    assert protocol.parse_client_message(protocol.subscribe(["*"])).console is False
    with pytest.raises(ValueError):
        protocol.command("s", text="a", hex="01")
    with pytest.raises(protocol.ProtocolError):
        protocol.parse_client_message(json.dumps({"type": "subscribe", "streams": ["*"], "console": 1}))


def test_stream_objects_carry_commands_only_when_true():
    plain = protocol.StreamInfo(1, "sim/a", (protocol.Channel("x"),))
    assert "commands" not in plain.to_json() and "actions" not in plain.to_json()
    info = protocol.StreamInfo(1, "sim/a", (protocol.Channel("x"),), commands=True, actions=({"name": "Go", "template": "go\n"},))
    d = info.to_json()
    assert d["commands"] is True and d["actions"] == [{"name": "Go", "template": "go\n"}]
    back = protocol.StreamInfo.from_json(json.loads(json.dumps(d)))
    assert back.commands is True and back.actions == info.actions


# ----------------------------------------------------------------- the write queue


def test_write_queue_completes_each_command_after_its_last_byte():
    q = WriteQueue(10)
    assert q.offer(b"abc", "a") and q.offer(b"defg", "b")
    assert not q.offer(b"hijk", "c")  # 7 + 4 > 10: refused whole, nothing queued
    assert bytes(q.head()) == b"abc"
    assert q.wrote(2) == [] and bytes(q.head()) == b"c"
    assert q.wrote(1) == ["a"] and bytes(q.head()) == b"defg"
    assert q.offer(b"hij", "c")
    assert q.wrote(4) == ["b"]
    assert q.queued_bytes == 3
    assert q.clear() == ["c"] and q.head() is None and q.queued_bytes == 0


def test_a_device_port_refuses_when_disconnected_and_fails_what_is_queued_on_unplug():
    port = DevicePort("serial/x", max_queue_bytes=8)
    results = []
    with pytest.raises(CommandError) as e:
        port.submit(b"x", lambda code, n: results.append((code, n)))
    assert e.value.code == "disconnected"
    port.set_connected(True)
    port.submit(b"12345", lambda code, n: results.append((code, n)))
    with pytest.raises(CommandError) as e:
        port.submit(b"6789", lambda code, n: results.append((code, n)))
    assert e.value.code == "rate_limited"
    port.wrote(5)
    assert results == [(None, 5)]
    port.submit(b"abc", lambda code, n: results.append((code, n)))
    port.set_connected(False)
    assert results == [(None, 5), ("disconnected", 0)]


async def test_wait_connected_returns_when_the_source_opens_the_device_and_not_after_it_closed():
    port = DevicePort("serial/x")
    woke = []

    async def waiter():
        await port.wait_connected()
        woke.append(port.connected)

    for opens in (1, 2):  # the first open, and again after the device went away
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert woke == [True] * (opens - 1)
            port.set_connected(True)
        assert woke == [True] * opens
        port.set_connected(False)


# ----------------------------------------------------------------- console


def test_console_lines_are_cut_and_rate_limited_and_drops_are_reported():
    lim = ConsoleLimiter(rate=10, burst=3, max_line=5)
    assert lim.take([b"hello world", b"\xffok"], 0.0) == (["hello", "\ufffdok"], 0)
    # One token left: one line out; the two after it are reported with the next lines out.
    assert lim.take([b"a", b"b", b"c"], 0.0) == (["a"], 0)
    assert lim.take([b"d"], 0.0) == ([], 0)  # no token: dropped, remembered
    assert lim.take([b"e", b"f"], 0.2) == (["e", "f"], 3)  # 0.2 s at 10/s: 2 tokens


# ----------------------------------------------------------------- profiles


def test_actions_parse_buttons_and_sliders():
    acts = parse_actions({"actions": [{"name": "LED on", "template": "LED 1\n"},
                                      {"name": "Rate", "template": "RATE {value}\n", "min": 1, "max": 1000}]})
    assert [a.is_slider for a in acts] == [False, True]
    assert acts[1].to_json() == {"name": "Rate", "template": "RATE {value}\n", "min": 1, "max": 1000}
    assert render_template(acts[1].template, 250.0) == b"RATE 250\n"
    assert render_template(acts[1].template, 0.5) == b"RATE 0.5\n"
    assert render_template("{{x}}", None) == b"{x}"


@pytest.mark.parametrize("entry, match", [
    ({"name": "x"}, "template"),
    ({"name": "x", "template": "a", "min": 1}, "both min and max"),
    ({"name": "x", "template": "a", "min": 5, "max": 1}, "below"),
    ({"name": "x", "template": "RATE {value}"}, "needs min and max"),
    ({"name": "x", "template": "{nope}", "min": 0, "max": 1}, "template"),
    ({"name": "x", "template": "a", "colour": "red"}, "colour"),
])
def test_bad_actions_are_refused_with_the_reason(entry, match):
    with pytest.raises(ValueError, match=match):
        parse_actions({"actions": [entry]})


def test_polls_parse_with_checksums():
    polls = parse_polls({"poll": [{"every_ms": 500, "hex": "01 03 00 00 00 0a", "checksum": "crc16-modbus"},
                                  {"every_ms": 100, "data": "READ?\r\n"}]})
    assert polls == (Poll(0.5, bytes.fromhex("01030000000ac5cd")), Poll(0.1, b"READ?\r\n"))


@pytest.mark.parametrize("entry, match", [
    ({"every_ms": 1, "data": "x"}, "every_ms"),
    ({"data": "x"}, "every_ms"),
    ({"every_ms": 100}, "exactly one"),
    ({"every_ms": 100, "data": "x", "hex": "01"}, "exactly one"),
    ({"every_ms": 100, "hex": "zz"}, "hex"),
    ({"every_ms": 100, "data": "x", "checksum": "crc32"}, "checksum"),
])
def test_bad_polls_are_refused_with_the_reason(entry, match):
    with pytest.raises(ValueError, match=match):
        parse_polls({"poll": [entry]})


def test_poll_schedule_keeps_multiples_of_the_period_and_skips_what_a_stall_missed():
    s = PollSchedule((Poll(0.1, b"a"), Poll(0.25, b"b")), start=10.0)
    assert s.next_at() == pytest.approx(10.1)
    assert s.due(10.1) == [b"a"]
    assert s.next_at() == pytest.approx(10.2)
    assert s.due(10.2) == [b"a"]
    assert s.due(10.25) == [b"b"]
    # A stall of a second: each poll goes out once, then back on its grid.
    assert s.due(11.27) == [b"a", b"b"]
    assert s.next_at() == pytest.approx(11.3)
    assert PollSchedule((), 0.0).next_at() is None


async def test_polls_are_submitted_on_schedule_with_mockclock(autojump_clock):
    port = DevicePort("serial/x", polls=(Poll(0.2, b"P"),))
    port.set_connected(True)
    t0 = trio.current_time()
    got = []
    async with trio.open_nursery() as n:
        n.start_soon(port.run_polls)
        for _ in range(3):
            await port.wait_for_work()
            got.append(trio.current_time() - t0)
            port.wrote(1)
        n.cancel_scope.cancel()
    assert got == pytest.approx([0.2, 0.4, 0.6])
    assert port.polls_sent == 3


# ----------------------------------------------------------------- simulators


def test_simulators_answer_rate_and_spike_commands():
    from sensorstream.sources.simulator import Pacer, SignalModel, SimCommands, default_profiles

    async def main():
        imu = next(p for p in default_profiles() if p.id == "sim/imu")
        model, pacer = SignalModel(imu, 0), Pacer(imu.rate_hz, 0.05)
        dev = SimCommands(model, pacer)
        assert dev.feed(b"rate 500\r\n") == ["OK rate 500"]
        assert pacer.rate == 500 and model.rate == 500
        assert dev.feed(b"spike") == ["OK spike"]
        assert model.spikes_owed == 1
        calm = SignalModel(imu, 0).generate(0, 1)
        assert (model.generate(0, 1) - calm).max() > 1.0 and model.spikes_owed == 0
        assert dev.feed(b"rate 0.5\n") == ["ERR rate must be 1 to 100000 Hz"] and pacer.rate == 500
        assert dev.feed(b"fly\nhelp\n") == ["ERR unknown command 'fly' (try help)", "commands: rate <Hz>, spike, help"]

    trio.run(main)
