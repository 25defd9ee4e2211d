"""The commands a user types, run as real processes."""

import os
import re
import signal
import subprocess
import sys

import pytest
import trio
import trio_websocket

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


async def start_serve(*args: str) -> tuple[trio.Process, int, list[bytes]]:
    """`python -m sensorstream serve --port 0 ...`; returns once it printed its URL."""
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "sensorstream", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
    )
    out = b""
    with trio.fail_after(20):
        while b"dashboard at" not in out:
            chunk = await proc.stdout.receive_some(4096)
            assert chunk, f"server exited early: {out!r}"
            out += chunk
    port = int(re.search(rb"https?://127\.0\.0\.1:(\d+)/", out).group(1))
    return proc, port, [out]


async def read_all(stream) -> bytes:
    buf = b""
    while chunk := await stream.receive_some(65536):
        buf += chunk
    return buf


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_serve_shuts_down_cleanly_on_signal_and_closes_clients_with_1001(sig):
    proc, port, _ = await start_serve("--simulate")
    async with trio_websocket.open_websocket("127.0.0.1", port, "/ws", use_ssl=False) as ws:
        hello = await ws.get_message()
        assert '"type":"hello"' in hello
        proc.send_signal(sig)
        with trio.fail_after(10):
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                while True:
                    await ws.get_message()
        assert closed.value.reason.code == 1001
    with trio.fail_after(10):
        err = await read_all(proc.stderr)
        rc = await proc.wait()
    assert rc == 0
    assert b"Traceback" not in err
    assert b"shutting down" in err


async def test_tail_prints_live_samples():
    proc, port, _ = await start_serve("--simulate", "--seed", "1")
    try:
        with trio.fail_after(20):
            res = await trio.run_process(
                [sys.executable, "-m", "sensorstream", "tail", f"ws://127.0.0.1:{port}/ws", "--stream", "sim/*", "--count", "20"],
                capture_stdout=True, capture_stderr=True, cwd=ROOT,
            )
        lines = res.stdout.decode().splitlines()
        assert len(lines) == 20
        assert all(re.match(r"^\d{4}-\d\d-\d\dT\S+ sim/(env|imu|power) \w+=", l) for l in lines), lines[:3]
    finally:
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            await proc.wait()


async def test_tail_into_a_reader_that_stops_early_exits_quietly():
    """`sensorstream tail ... | head -3`: once head has its lines and leaves, tail
    must stop with status 0 and no traceback (it used to print an ExceptionGroup
    with a BrokenPipeError)."""
    proc, port, _ = await start_serve("--simulate", "--seed", "1")
    try:
        tail = await trio.lowlevel.open_process(
            [sys.executable, "-m", "sensorstream", "tail", f"ws://127.0.0.1:{port}/ws", "--stream", "sim/*"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
        )
        with trio.fail_after(20):
            got = b""
            while got.count(b"\n") < 3:
                got += await tail.stdout.receive_some(4096)
            await tail.stdout.aclose()  # head has what it wanted
            err = await read_all(tail.stderr)
            rc = await tail.wait()
        assert rc == 0, err.decode()[-2000:]
        assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()[-2000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            await proc.wait()


def test_console_script_and_module_agree():
    a = subprocess.run([sys.executable, "-m", "sensorstream", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert a.returncode == 0 and a.stdout.startswith("sensorstream ")
    h = subprocess.run([sys.executable, "-m", "sensorstream", "serve", "--help"], capture_output=True, text=True, cwd=ROOT)
    for flag in ("--simulate", "--ping-interval", "--ping-timeout", "--send-timeout", "--seed", "--imu-rate"):
        assert flag in h.stdout


async def test_tail_over_wss_with_a_self_signed_certificate(tmp_path):
    from .httpraw import self_signed_cert

    certfile, keyfile = self_signed_cert(tmp_path)
    proc, port, _ = await start_serve("--simulate", "--certfile", str(certfile), "--keyfile", str(keyfile), "--token", "s3cret")
    try:
        with trio.fail_after(20):
            res = await trio.run_process(
                [sys.executable, "-m", "sensorstream", "tail", f"wss://127.0.0.1:{port}/ws?token=s3cret", "--stream", "sim/env",
                 "--count", "3", "--cafile", str(certfile)],
                capture_stdout=True, capture_stderr=True, cwd=ROOT,
            )
        assert len(res.stdout.decode().splitlines()) == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            await proc.wait()
