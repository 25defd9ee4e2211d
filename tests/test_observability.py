"""/metrics, /healthz, structured and rate-limited logs, `serve --help` and the TOML config file."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from sensorstream import logs
from sensorstream.cli import build_parser, config_from_args, main, parse_serve_args
from sensorstream.config import ServerConfig
from sensorstream.protocol import Channel

from .conftest import eventually
from .httpraw import exchange, get, status_of
from .wire import connect, upgrade_request

ROOT = Path(__file__).resolve().parents[1]


def _families(text: bytes) -> dict:
    out = {}
    for fam in text_string_to_metric_families(text.decode()):
        out[fam.name] = {tuple(sorted(s.labels.items())) + ((s.name,) if s.name.endswith("_created") else ()): s.value
                         for s in fam.samples if not s.name.endswith("_created")}
    return out


def _value(fams, name, **labels):
    return fams[name][tuple(sorted(labels.items()))]


# ----------------------------------------------------------------- /metrics


async def test_metrics_exposition_covers_the_server(make_server, nursery):
    server = await make_server(simulate=True)
    port = server.port
    env_key = server.hub.stream_by_id("sim/env").key
    server.hub.stats(env_key).source.update(parse_errors=3, reconnects=1)
    c = await connect(nursery, port)
    await c.send({"type": "subscribe", "streams": ["sim/env", "sim/power"]})
    await c.recv_text("subscribed")
    for _ in range(4):
        await c.recv_batch()
    await c.send("{bad json")
    await c.recv_text("error")
    assert status_of(await exchange(port, upgrade_request(port, extra="Origin: http://evil.example\r\n"))) == 403
    other = await connect(nursery, port)
    await other.ws.aclose()
    with trio.fail_after(2):
        await server.wait_sessions(lambda s: len(s) == 1)

    r = await exchange(port, get("/metrics", port))
    assert status_of(r) == 200 and b"text/plain; version=0.0.4" in r
    fams = _families(r.partition(b"\r\n\r\n")[2])
    assert _value(fams, "sensorstream_connections") == 2  # counters lose _total in the family name
    assert _value(fams, "sensorstream_connections_open") == 1
    assert _value(fams, "sensorstream_tcp_connections_open") >= 1
    assert _value(fams, "sensorstream_subscriptions") == 2
    assert _value(fams, "sensorstream_connections_behind") == 0  # the one client keeps up
    assert _value(fams, "sensorstream_queued_frames") == 0
    assert _value(fams, "sensorstream_frames_sent") >= 4
    assert _value(fams, "sensorstream_bytes_sent") > 0
    assert _value(fams, "sensorstream_protocol_errors") == 1
    for name in ("sensorstream_dropped_batches", "sensorstream_ping_timeouts", "sensorstream_send_timeouts",
                 "sensorstream_slow_control_closed", "sensorstream_rate_limited", "sensorstream_http_requests"):
        assert () in fams[name], name
    assert _value(fams, "sensorstream_rejected_connections", reason="origin") == 1
    assert _value(fams, "sensorstream_ws_closed", code="1000") == 1
    for sid in ("sim/env", "sim/imu", "sim/power"):
        assert _value(fams, "sensorstream_stream_batches", stream=sid) > 0
        assert _value(fams, "sensorstream_stream_samples", stream=sid) > 0
        assert _value(fams, "sensorstream_stream_live", stream=sid) == 1
    assert _value(fams, "sensorstream_stream_subscribers", stream="sim/env") == 1
    assert _value(fams, "sensorstream_stream_subscribers", stream="sim/imu") == 0
    assert _value(fams, "sensorstream_stream_frames_out", stream="sim/env") >= 1
    assert _value(fams, "sensorstream_stream_samples_out", stream="sim/env") >= 1
    assert _value(fams, "sensorstream_stream_bytes_out", stream="sim/power") > 0
    assert _value(fams, "sensorstream_stream_frames_out", stream="sim/imu") == 0
    assert _value(fams, "sensorstream_source_events", stream="sim/env", event="parse_errors") == 3
    assert _value(fams, "sensorstream_source_events", stream="sim/env", event="reconnects") == 1
    assert _value(fams, "sensorstream_uptime_seconds") >= 0


async def test_client_close_codes_cannot_add_metric_series(make_server, nursery):
    """Close codes 3000-4999 are the client's to pick: each would otherwise be a
    `sensorstream_ws_closed` series that never goes away."""
    server = await make_server()
    port = server.port
    for code in [*range(3000, 3020), *range(4000, 4020), 1000]:
        c = await connect(nursery, port)
        await c.ws.aclose(code=code)
    with trio.fail_after(5):
        await server.wait_sessions(lambda s: not s)
    await eventually(lambda: sum(server.stats.closed.values()) == 41)
    assert server.stats.closed == {"3xxx": 20, "4xxx": 20, 1000: 1}
    fams = _families((await exchange(port, get("/metrics", port))).partition(b"\r\n\r\n")[2])
    assert len(fams["sensorstream_ws_closed"]) == 3
    assert _value(fams, "sensorstream_ws_closed", code="4xxx") == 20


# ----------------------------------------------------------------- /healthz


async def test_healthz_turns_503_when_a_source_stays_disconnected(make_server):
    server = await make_server(unhealthy_after_s=1.5)
    port = server.port
    info = server.hub.add_stream("dev/a", [Channel("x")])
    t0 = trio.current_time()
    server.hub.update_stream(info.key, status="disconnected")

    async def health():
        r = await exchange(port, get("/healthz", port))
        return status_of(r), json.loads(r.partition(b"\r\n\r\n")[2])

    status, body = await health()
    assert status == 200 and body["status"] == "ok"  # not disconnected long enough yet
    assert body["streams"][0]["status"] == "disconnected" and body["streams"][0]["last_batch_age_s"] is None
    with trio.fail_after(10):
        while status == 200:
            await trio.sleep(0.05)
            status, body = await health()
    assert trio.current_time() - t0 >= 1.5 - 0.1  # not before it was disconnected that long (wall vs monotonic)
    assert status == 503 and body["status"] == "degraded" and body["unhealthy_streams"] == ["dev/a"]
    server.hub.update_stream(info.key, status="live")
    status, body = await health()
    assert status == 200 and "unhealthy_streams" not in body and body["uptime_s"] > 0


def test_unhealthy_after_flag():
    a = parse_serve_args(build_parser(), ["serve", "--unhealthy-after", "7.5"])
    assert config_from_args(a).unhealthy_after_s == 7.5


def test_queue_limit_flags(tmp_path, capsys):
    a = parse_serve_args(build_parser(), ["serve", "--queue-mb", "2.5", "--queue-batches", "64"])
    cfg = config_from_args(a)
    assert (cfg.queue_mb, cfg.queue_batches) == (2.5, 64)
    f = tmp_path / "s.toml"
    f.write_text("queue_mb = 4\n")
    assert config_from_args(parse_serve_args(build_parser(), ["serve", "--config", str(f)])).queue_mb == 4
    for bad in (["--queue-mb", "0"], ["--queue-batches", "-1"]):
        with pytest.raises(SystemExit):
            parse_serve_args(build_parser(), ["serve", *bad])


# ----------------------------------------------------------------- logging


@pytest.fixture
def captured_logs():
    """logs.setup() on a StringIO; the root logger is restored afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    buf = io.StringIO()
    yield buf
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_rate_limit_filter_suppresses_and_counts():
    now = [0.0]
    f = logs.RateLimitFilter(rate=1.0, burst=5, clock=lambda: now[0])

    def rec(msg, *args):
        return logging.LogRecord("x", logging.INFO, __file__, 1, msg, args, None)

    passed = [f.filter(rec("conn %s", i)) for i in range(100)]
    assert sum(passed) == 5
    assert f.filter(rec("other %s", 1))  # another template has its own bucket
    now[0] = 1.0
    r = rec("conn %s", 100)
    assert f.filter(r) and "(95 similar messages suppressed)" in r.getMessage() and r.suppressed == 95
    assert not f.filter(rec("conn %s", 101))


def test_json_and_text_formats(captured_logs):
    logs.setup("debug", "json", captured_logs)
    logging.getLogger("sensorstream.test").info("ws %s: open", "1.2.3.4:5", extra={"event": "ws_open", "peer": "1.2.3.4:5"})
    line = json.loads(captured_logs.getvalue().splitlines()[-1])
    assert line["msg"] == "ws 1.2.3.4:5: open" and line["event"] == "ws_open" and line["level"] == "info"
    assert line["logger"] == "sensorstream.test" and re.match(r"\d{4}-\d\d-\d\dT", line["ts"])
    logs.setup("info", "text", captured_logs)
    logging.getLogger("sensorstream.test").debug("hidden")
    logging.getLogger("sensorstream.test").warning("shown %d", 1, extra={"code": 1008})
    last = captured_logs.getvalue().splitlines()[-1]
    assert "WARNING sensorstream.test: shown 1" in last and "code=1008" in last and "hidden" not in captured_logs.getvalue()
    with pytest.raises(ValueError):
        logs.setup("info", "xml", captured_logs)


async def test_connection_logs_are_structured_and_a_flood_is_rate_limited(make_server, nursery, captured_logs):
    # A refill rate of ~0 makes the count independent of how long the flood takes
    # on a loaded machine (at the default 2/s a slow run let 26 lines through):
    # the burst of 20 passes, then nothing. Unlimited, all 300 would be logged.
    logs.setup("debug", "json", captured_logs, rate=1e-3)
    server = await make_server(token="t", control_rate=1000, control_burst=1000)
    port = server.port
    from trio_websocket import connect_websocket

    ws = await connect_websocket(nursery, "127.0.0.1", port, "/ws?token=t", use_ssl=False)
    await ws.get_message()
    await ws.aclose()
    with trio.fail_after(2):
        await server.wait_sessions(lambda s: not s)
    for _ in range(300):  # a flood of refused upgrades
        assert status_of(await exchange(port, upgrade_request(port))) == 401
    lines = [json.loads(x) for x in captured_logs.getvalue().splitlines()]
    opened = [x for x in lines if x.get("event") == "ws_open"]
    closed = [x for x in lines if x.get("event") == "ws_close"]
    assert len(opened) == 1 and opened[0]["session"] and opened[0]["peer"].startswith("127.0.0.1:")
    assert len(closed) == 1 and closed[0]["code"] == 1000 and "reason" in closed[0] and closed[0]["open_s"] >= 0
    assert opened[0]["level"] == "debug" and closed[0]["level"] == "info"
    refused = [x for x in lines if x.get("reason") == "token"]
    assert 1 <= len(refused) <= 20
    assert server.stats.rejected["token"] == 300
    assert "token=t" not in captured_logs.getvalue()  # the secret never reaches a log


# ----------------------------------------------------------------- serve --help and the config file


def _serve_actions():
    sp = next(a for a in build_parser()._actions if a.dest == "command").choices["serve"]
    return [a for a in sp._actions if a.option_strings and a.dest != "help"]


def test_serve_help_documents_every_flag_and_the_docs_list_them():
    h = subprocess.run([sys.executable, "-m", "sensorstream", "serve", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert h.returncode == 0
    doc = (ROOT / "docs" / "configuration.md").read_text()
    for a in _serve_actions():
        flag = a.option_strings[-1]
        assert flag in h.stdout, flag
        assert a.help and a.help != "==SUPPRESS==", f"{flag} has no help"
        assert f"`{flag}`" in doc, f"docs/configuration.md does not describe {flag}"
    for flag in ("--token", "--allow-origin", "--certfile", "--max-connections", "--control-rate", "--log-format", "--config"):
        assert flag in h.stdout


def test_config_file_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("SENSORSTREAM_TOKEN", raising=False)
    f = tmp_path / "s.toml"
    f.write_text('ping_interval = 3\nmax_connections = 10\nallow_origin = ["https://a.example"]\ntoken = "from-file"\n'
                 'log_format = "json"\nsimulate = true\nsimulate_late = ["x/y:2"]\nwindow_ms = 20\nmax-subscriptions = 9\n')
    cfg = config_from_args(parse_serve_args(build_parser(), ["serve", "--config", str(f)]))
    assert (cfg.ping_interval, cfg.max_connections, cfg.allow_origins, cfg.token, cfg.log_format) == (3, 10, ["https://a.example"], "from-file", "json")
    assert cfg.simulate and cfg.simulate_late == [("x/y", 2.0)] and cfg.window_s == 0.02 and cfg.max_subscriptions == 9
    assert cfg.ping_timeout == ServerConfig().ping_timeout  # untouched settings keep their defaults
    # Flags beat the file, lists included (replaced, not appended to).
    cfg = config_from_args(parse_serve_args(build_parser(), [
        "serve", "--config", str(f), "--max-connections", "5", "--allow-origin", "https://b.example", "--log-format", "text"]))
    assert (cfg.ping_interval, cfg.max_connections, cfg.allow_origins, cfg.log_format) == (3, 5, ["https://b.example"], "text")
    # The environment beats the file; a flag beats the environment.
    monkeypatch.setenv("SENSORSTREAM_TOKEN", "from-env")
    assert config_from_args(parse_serve_args(build_parser(), ["serve", "--config", str(f)])).token == "from-env"
    assert config_from_args(parse_serve_args(build_parser(), ["serve", "--config", str(f), "--token", "flag"])).token == "flag"
    assert config_from_args(parse_serve_args(build_parser(), ["serve"])).token == "from-env"


@pytest.mark.parametrize("content,message", [
    ("nope = 1\n", "unknown setting 'nope'"),
    ("ping_interval = \"soon\"\n", "ping_interval"),
    ("max_connections = 2.5\n", "integer"),
    ("max_connections = 0\n", "must be a whole number >= 1"),
    ("simulate = 1\n", "true or false"),
    ("log_format = \"xml\"\n", "not one of"),
    ("config = \"other.toml\"\n", "unknown setting"),
    ("ping_interval = [\n", "config file"),
])
def test_bad_config_files_exit_2(tmp_path, capsys, content, message):
    f = tmp_path / "bad.toml"
    f.write_text(content)
    assert main(["serve", "--config", str(f)]) == 2
    assert message in capsys.readouterr().err
    assert main(["serve", "--config", str(tmp_path / "missing.toml")]) == 2


async def test_serve_reads_the_config_file_end_to_end(tmp_path):
    """A real `sensorstream serve --config`: token and JSON logs from the file, port from the flag."""
    f = tmp_path / "s.toml"
    f.write_text('token = "abc"\nlog_format = "json"\nsimulate = true\nport = 1\n')
    env = {k: v for k, v in os.environ.items() if k != "SENSORSTREAM_TOKEN"}
    proc = await trio.lowlevel.open_process([sys.executable, "-m", "sensorstream", "serve", "--config", str(f), "--port", "0"],
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env)
    try:
        out = b""
        with trio.fail_after(20):
            while b"dashboard at" not in out:
                chunk = await proc.stdout.receive_some(4096)
                assert chunk, "server exited early"
                out += chunk
        port = int(re.search(rb"http://127\.0\.0\.1:(\d+)/", out).group(1))
        assert status_of(await exchange(port, get("/metrics", port))) == 401
        assert status_of(await exchange(port, get("/metrics?token=abc", port))) == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            await proc.wait()
    err = (await proc.stderr.receive_some(1 << 20)).decode()
    lines = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    assert any(x.get("event") == "listening" for x in lines) and all("ts" in x for x in lines)


async def test_metrics_count_clients_that_fall_behind(make_server, nursery):
    """A client that stops reading gets a backlog: the gauges show it (bounded by
    queue_batches) while the healthy client next to it has none."""
    from .wire import stalled_and_healthy

    server = await make_server(simulate=True, imu_rate=20_000, queue_batches=8, send_timeout=60, ping_interval=60)
    stalled, healthy = await stalled_and_healthy(nursery, server.port, "sim/imu")
    with trio.fail_after(10):
        while server.stats.dropped_batches_total == 0:  # the stalled client's queue is full
            await healthy.recv_batch()
    # The healthy client keeps reading during the scrape: at 20 kHz a pause of
    # half a second would put it behind too, on a loaded machine.
    async with trio.open_nursery() as n:
        async def drain():
            while True:
                await healthy.recv_batch()

        n.start_soon(drain)
        fams = _families((await exchange(server.port, get("/metrics", server.port))).partition(b"\r\n\r\n")[2])
        n.cancel_scope.cancel()
    assert _value(fams, "sensorstream_connections_behind") == 1
    assert 1 <= _value(fams, "sensorstream_queued_frames") <= 8
    await stalled.aclose()
