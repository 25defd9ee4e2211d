"""`sensorstream serve --allow-commands/--control-token` and `sensorstream send`, as
real processes: exit codes, one-line mistakes, bytes arriving at a real pty."""

from __future__ import annotations

import os
import socket
import sys
import tty

import trio

from .test_cli import ROOT, start_serve


async def send(*args: str, env: dict | None = None) -> tuple[int, str, str]:
    r = await trio.run_process([sys.executable, "-m", "sensorstream", "send", *args], capture_stdout=True,
                               capture_stderr=True, check=False, cwd=ROOT, env={**os.environ, **(env or {})})
    return r.returncode, r.stdout.decode(), r.stderr.decode()


async def stop(proc: trio.Process) -> None:
    proc.terminate()
    with trio.fail_after(10):
        await proc.wait()


async def test_send_with_the_control_token_by_flag_or_environment():
    proc, port, _ = await start_serve("--simulate", "--control-token", "s3cret")
    url = f"ws://127.0.0.1:{port}/ws"
    try:
        rc, out, err = await send(url, "--stream", "sim/imu", "rate 500", "--control-token", "s3cret")
        assert (rc, out.strip(), err) == (0, "sent 9 bytes to sim/imu", "")
        rc, out, _ = await send(url, "--stream", "sim/power", "spike", "--eol", "crlf", env={"SENSORSTREAM_CONTROL_TOKEN": "s3cret"})
        assert (rc, out.strip()) == (0, "sent 7 bytes to sim/power")
        rc, out, err = await send(url, "--stream", "sim/imu", "rate 5")
        assert rc == 1 and err.startswith("sensorstream send: refused: forbidden:") and err.count("\n") == 1
        rc, _, err = await send(url, "--stream", "nope/x", "hi", "--control-token", "s3cret")
        assert rc == 1 and "not_commandable" in err and "Traceback" not in err
        # Text with a colon is still text, and --hex takes the one positional as the URL.
        rc, out, err = await send(url, "--stream", "sim/env", "SET a:1", "--control-token", "s3cret")
        assert (rc, out.strip()) == (0, "sent 8 bytes to sim/env"), err
        rc, out, err = await send(url, "--stream", "sim/env", "--hex", "0a", "--control-token", "s3cret")
        assert (rc, out.strip()) == (0, "sent 1 byte to sim/env"), err
    finally:
        await stop(proc)


async def test_send_reaches_a_serial_device_byte_exact(tmp_path):
    master, slave = os.openpty()
    tty.setraw(slave)
    link = str(tmp_path / "ttyARDUINO")
    os.symlink(os.ttyname(slave), link)
    os.close(slave)
    proc, port, _ = await start_serve("--serial", link, "--allow-commands")
    try:
        rc, out, err = await send(f"ws://127.0.0.1:{port}/ws", "--stream", "serial/ttyARDUINO", "--hex", "01 03 00 0a")
        assert rc == 0, err
        # `send TEXT` with the default URL would be port 8765: give it explicitly here.
        rc, out, err = await send(f"127.0.0.1:{port}", "--stream", "serial/ttyARDUINO", "LED 1", "--eol", "cr")
        assert rc == 0, err
        got = b""
        os.set_blocking(master, False)
        with trio.fail_after(10):
            while len(got) < 10:
                await trio.lowlevel.wait_readable(master)
                got += os.read(master, 100)
        assert got == b"\x01\x03\x00\x0aLED 1\r"
    finally:
        await stop(proc)
        os.close(master)


async def test_send_mistakes_are_one_line_with_the_right_exit_code():
    rc, _, err = await send("--stream", "sim/imu")
    assert rc == 2 and "give the text to send" in err and err.count("\n") == 1
    rc, _, err = await send("ws://127.0.0.1:8765/ws", "--stream", "sim/imu", "x", "--hex", "01")
    assert rc == 2 and "one of them" in err
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    rc, _, err = await send(f"ws://127.0.0.1:{free}/ws", "--stream", "sim/imu", "x", "--timeout", "5")
    assert rc == 1 and err.startswith("sensorstream send: error:") and "Traceback" not in err, err
    rc, _, err = await send("--stream", "sim/imu", "x", "--timeout", "-1")
    assert rc == 2 and "--timeout" in err


async def test_serve_refuses_bad_command_settings_in_one_line():
    for args, words in [
        (["--host", "0.0.0.0", "--token", "reader", "--allow-commands"], "control token"),
        (["--command-rate", "0"], "--command-rate"),
        (["--max-command-bytes", "70000"], "--max-command-bytes"),
    ]:
        r = await trio.run_process([sys.executable, "-m", "sensorstream", "serve", "--port", "0", *args],
                                   capture_stdout=True, capture_stderr=True, check=False, cwd=ROOT)
        err = r.stderr.decode()
        assert r.returncode == 2 and words in err and "Traceback" not in err, err
