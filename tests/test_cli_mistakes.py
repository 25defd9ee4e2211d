"""Everyday mistakes, each run as a real `python -m sensorstream` process: the
exit code, no traceback, a few lines, and the words that tell the user what
to fix. One row per mistake; the processes of a table run side by side."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Profiles written into tmp dir; "{d}" in an argument is that directory.
PROFILES = {
    "syntax.toml": '[stream]\nid = "x\n',
    "type.toml": '[stream]\nid = "a/b"\nrate_hz = "fast"\n[port]\npath = "/dev/null"\n',
    "kind.toml": '[port]\npath = "/dev/null"\n[format]\nkind = "xml"\n',
    "channels.toml": '[port]\npath = "/dev/null"\n[channels]\nname = "a"\n',
    "empty.toml": "",
    "baudrate.toml": '[port]\npath = "/dev/null"\nbaudrate = 9600\n',
    "streams.toml": '[streams]\nid = "a/b"\n[port]\npath = "/dev/null"\n',
    "rate.toml": 'rate = 100\n[port]\npath = "/dev/null"\n',
    "vidpid.toml": '[port]\nvid_pid = "arduino"\n',
    "spaces.toml": '[stream]\nid = "my sensor"\n[port]\npath = "/dev/null"\n',
    "noport.toml": '[stream]\nid = "a/b"\n',
    "cobs.toml": '[port]\npath = "/dev/null"\n[format]\nkind = "cobs"\n',
    "unit.toml": '[port]\npath = "/dev/null"\n[format]\ntimestamp_unit = "sec"\n',
    "chankey.toml": '[port]\npath = "/dev/null"\n[[channels]]\nname = "a"\nunits = "V"\n',
    "dup1.toml": '[stream]\nid = "same/id"\n[port]\npath = "/dev/null"\n',
    "dup2.toml": '[stream]\nid = "same/id"\n[port]\npath = "/dev/zero"\n',
    "cfg-range.toml": "window_ms = -5\n",
    "cfg-typo.toml": "ping_intervall = 5\n",
    "cfg-dashed.toml": "--window-ms = 0\n",
    "cfg-type.toml": 'port = "eighty"\n',
}

# (argv, exit code, words that must all appear (case-insensitive))
CASES = [
    # numbers, ports, hosts, paths
    ("serve --window-ms 0", 2, ["--window-ms", "> 0"]),
    ("serve --window-ms -5", 2, ["--window-ms", "-5"]),
    ("serve --window-ms nan", 2, ["--window-ms", "nan"]),
    ("serve --window-ms inf", 2, ["--window-ms", "inf"]),
    ("serve --max-batch 0", 2, ["--max-batch"]),
    ("serve --seed -3", 2, ["--seed", "-3"]),
    ("serve --simulate-late X:-3", 2, ["--simulate-late", "-3"]),
    ("serve --simulate-late X", 2, ["--simulate-late", "ID:SECONDS"]),
    ("serve --imu-rate 0", 2, ["--imu-rate"]),
    ("serve --imu-rate -100", 2, ["--imu-rate"]),
    ("serve --port 70000", 2, ["--port", "65535"]),
    ("serve --port -1", 2, ["--port"]),
    ("serve --port http", 2, ["--port", "whole number"]),
    ("serve --heartbeat 0", 2, ["--heartbeat"]),
    ("serve --send-timeout 0", 2, ["--send-timeout"]),
    ("serve --history-s -1", 2, ["--history-s"]),
    ("serve --ping-interval 0", 2, ["--ping-interval"]),
    ("serve --ping-interval -1", 2, ["--ping-interval"]),
    ("serve --ping-timeout 0", 2, ["--ping-timeout"]),
    ("serve --baud -9600", 2, ["--baud"]),
    ("serve --host 999.1.1.1 --insecure", 2, ["--host", "not a valid ip address"]),
    ("serve --host 'my host'", 2, ["--host"]),
    ("serve --dashboard-dir /nonexistent", 2, ["--dashboard-dir", "no such directory"]),
    ("serve --certfile /nonexistent.pem", 2, ["--certfile", "no such file"]),
    ("serve --config /nonexistent.toml", 2, ["--config", "no such file"]),
    ("serve --simulate-wide 0:10", 2, ["--simulate-wide", "channels"]),
    ("serve --simulate-late 'my stream:2'", 2, ["--simulate-late", "no spaces"]),
    ("serve --serial /dev/ttyUSB0@fast", 2, ["--serial", "PORT@BAUD", "whole number"]),
    ("serve --serial /dev/ttyUSB0@-9600", 2, ["--serial", "PORT@BAUD"]),
    ("serve --allow-origin grafana.example.com", 2, ["--allow-origin", "https://"]),
    ("serve --keyfile {d}/empty.toml", 2, ["--keyfile needs --certfile"]),
    ("serve --imu-rate 500", 2, ["--imu-rate", "--simulate"]),
    ("serve --bus rediss://127.0.0.1 --bus-cafile /nonexistent.pem", 2, ["--bus-cafile", "no such file"]),
    ("serve --bus redis://127.0.0.1 --bus-cafile {d}/empty.toml", 2, ["--bus-cafile", "rediss://"]),
    ("serve --bus 'rediss://127.0.0.1?ca=/nonexistent.pem'", 2, ["?ca=", "no such file"]),
    ("serve --bus rediss://127.0.0.1 --bus-cafile {d}/empty.toml --port 0", 2, ["--bus", "empty.toml", "PEM certificate"]),
    ("serve --device devices/sim-imu.toml", 2, ["sim-imu.toml", "simulator profile", "simulate --pty"]),
    ("nosuchcommand", 2, ["invalid choice", "serve"]),
    ("record", 2, ["-o/--output", "required"]),
    ("replay", 2, ["FILE.mcap", "required"]),
    ("export", 2, ["--format", "required"]),
    ("replay {d}/nothing.mcap --speed -2", 2, ["--speed"]),
    ("simulate --pty --rate -5", 2, ["--rate"]),
    ("simulate --pty --profile nope", 2, ["nope", "sim-imu"]),
    ("simulate --pty --profile sim-imuu", 2, ["did you mean", "sim-imu"]),
    ("simulate --pty --link /missing-dir/x", 2, ["--link", "/missing-dir"]),
    ("tail --count -1", 2, ["--count"]),
    ("tail ftp://127.0.0.1/ws", 2, ["bad url", "ftp", "ws://HOST:PORT/ws"]),
    ("tail 127.0.0.1:99999", 2, ["bad url", "port"]),
    ("tail --history nan", 2, ["--history"]),
    # the port is taken
    ("serve --port {busy}", 1, ["cannot listen", "already in use", "--port"]),
    ("serve --host 10.254.254.254 --insecure --port 0", 1, ["cannot listen", "no such address"]),
    # device profiles
    ("serve --device {d}/syntax.toml", 2, ["syntax.toml", "not valid toml", "line 2"]),
    ("serve --device {d}/missing.toml", 2, ["missing.toml", "no such file"]),
    ("serve --device {d}", 2, ["is a directory"]),
    ("serve --device {d}/empty.toml", 2, ["empty.toml", "[port]", "empty"]),
    ("serve --device {d}/type.toml", 2, ["type.toml", "[stream] rate_hz", "number", "'fast'"]),
    ("serve --device {d}/kind.toml", 2, ["[format] kind", "auto, csv, labels, json, cobs", "'xml'"]),
    ("serve --device {d}/channels.toml", 2, ["[[channels]]"]),
    ("serve --device {d}/baudrate.toml", 2, ["[port]", "'baudrate'", "did you mean 'baud'"]),
    ("serve --device {d}/streams.toml", 2, ["[streams]", "did you mean 'stream'"]),
    ("serve --device {d}/rate.toml", 2, ["'rate'", "rate_hz under [stream]"]),
    ("serve --device {d}/vidpid.toml", 2, ["vid_pid", "'arduino'", "2341:0043"]),
    ("serve --device {d}/spaces.toml", 2, ["[stream] id", "no spaces", "'my sensor'"]),
    ("serve --device {d}/noport.toml", 2, ["missing [port]", "path, vid_pid or serial_number"]),
    ("serve --device {d}/cobs.toml", 2, ["cobs", "struct"]),
    ("serve --device {d}/unit.toml", 2, ["timestamp_unit", "s, ms, us, ns", "'sec'"]),
    ("serve --device {d}/chankey.toml", 2, ["[[channels]] #1", "'units'", "did you mean 'unit'"]),
    ("serve --device {d}/dup1.toml --device {d}/dup2.toml", 2, ["same/id", "both"]),
    # config files: the flags' own rules
    ("serve --config {d}/cfg-range.toml", 2, ["cfg-range.toml", "window_ms", "-5"]),
    ("serve --config {d}/cfg-typo.toml", 2, ["ping_intervall", "did you mean 'ping_interval'"]),
    ("serve --config {d}/cfg-dashed.toml", 2, ["window-ms", "> 0"]),
    ("serve --config {d}/cfg-type.toml", 2, ["port", "eighty"]),
]

MAX_LINES = 3


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every row's process, started together (they are independent) and waited for."""
    d = tmp_path_factory.mktemp("profiles")
    for name, text in PROFILES.items():
        (d / name).write_text(text)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    env = {**os.environ, "PYTHONPATH": ROOT}
    env.pop("SENSORSTREAM_TOKEN", None)
    procs = {}
    for argv, _, _ in CASES:
        cmd = argv.format(d=d, busy=busy.getsockname()[1])
        procs[argv] = subprocess.Popen(f"{sys.executable} -m sensorstream {cmd}", shell=True, cwd=ROOT, env=env,
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = {}
    try:
        for argv, p in procs.items():
            try:
                text, _ = p.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                text = p.communicate()[0] + "\n<<still running after 60 s>>"
            out[argv] = (p.returncode, text)
    finally:
        busy.close()
    return out


@pytest.mark.parametrize("argv,code,words", CASES, ids=[c[0] for c in CASES])
def test_a_mistake_gets_one_clear_line_and_the_right_exit_code(results, argv, code, words):
    rc, text = results[argv]
    assert "Traceback" not in text, text
    assert rc == code, text
    lines = [l for l in text.splitlines() if l.strip()]
    assert 1 <= len(lines) <= MAX_LINES, text
    for w in words:
        assert w.lower() in text.lower(), f"{w!r} not in {text!r}"


def test_serve_help_has_no_empty_defaults_and_says_every_unit():
    text = subprocess.run([sys.executable, "-m", "sensorstream", "serve", "--help"], capture_output=True, text=True, cwd=ROOT).stdout
    for bad in ("(default: None)", "(default: [])", "(default: False)"):
        assert bad not in text
    # No flag's help holds two defaults.
    blocks = text.split("\n  --")
    assert not [b for b in blocks if b.count("default") > 1], [b for b in blocks if b.count("default") > 1]
    for flag, unit in [("window-ms", "milliseconds"), ("history-s", "seconds"), ("history-mb", "MiB"), ("ping-interval", "seconds"),
                       ("ping-timeout", "seconds"), ("send-timeout", "seconds"), ("heartbeat", "seconds"), ("imu-rate", "Hz"),
                       ("queue-mb", "MiB"), ("max-head-bytes", "bytes"), ("max-message-bytes", "bytes"), ("baud", "bits per second"),
                       ("handshake-timeout", "seconds"), ("close-timeout", "seconds"), ("unhealthy-after", "seconds"),
                       ("control-rate", "a second"), ("queue-batches", "batches")]:
        block = next(b for b in blocks if b.startswith(flag + " "))
        assert unit in " ".join(block.split()), (flag, block)
    usage = text.split("\n\n", 1)[0]
    assert len(usage.splitlines()) <= 2, usage


def test_tail_help_shows_the_default_url_and_what_count_counts():
    text = subprocess.run([sys.executable, "-m", "sensorstream", "tail", "--help"], capture_output=True, text=True, cwd=ROOT).stdout
    text = " ".join(text.split())
    assert "ws://127.0.0.1:8765/ws" in text
    assert "--batches" in text and "samples, or batches with --batches" in text


def test_every_command_names_itself_in_its_usage():
    """A usage= on the top parser becomes the prefix of every subcommand's usage; it
    must stay `sensorstream <command>`."""
    from sensorstream.cli import build_parser

    p = build_parser()
    sub = next(a for a in p._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        assert parser.format_usage().startswith(f"usage: sensorstream {name} "), parser.format_usage()
