"""Connection failures, in words: the pure classifier, URL reading and report
rate limit, then `tail` and `open_client` against real servers that refuse,
and real SIGINTs to real processes."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys

import pytest
import trio

from sensorstream.client import (
    BadURL, ConnectFailed, NotFound, NotSensorstream, RetryReport, UnknownStream, Unauthorized, UntrustedCertificate, classify,
    normalize_url, open_client,
)
from trio_websocket import ConnectionRejected

from .test_cli import ROOT, read_all, start_serve

ENV = {**os.environ, "PYTHONPATH": ROOT}


@pytest.mark.parametrize("typed,url", [
    ("ws://h:1/ws", "ws://h:1/ws"),
    ("http://h:8765", "ws://h:8765/ws"),
    ("https://h:8765/?token=a", "wss://h:8765/ws?token=a"),
    ("h:8765", "ws://h:8765/ws"),
    ("localhost:8765/ws", "ws://localhost:8765/ws"),
    ("ws://[::1]:8765", "ws://[::1]:8765/ws"),
])
def test_what_a_user_types_becomes_the_websocket_url(typed, url):
    assert normalize_url(typed) == url


@pytest.mark.parametrize("typed", ["ftp://h/x", "http://:80", "h:99999", "", "ws://h:port/ws"])
def test_a_url_that_cannot_work_is_refused_in_words(typed):
    with pytest.raises(BadURL) as e:
        normalize_url(typed)
    assert "expected ws://HOST:PORT/ws" in str(e.value) and "\n" not in str(e.value)


def test_rejections_become_typed_errors_that_name_the_fix():
    ours = ((b"server", b"sensorstream"),)
    url = "ws://h:1/ws?token=secret"
    e = classify(ConnectionRejected(401, ours, b"token required\n"), url)
    assert isinstance(e, Unauthorized) and "wrong token" in str(e) and "secret" not in str(e)
    e = classify(ConnectionRejected(401, ours, b""), "ws://h:1/ws")
    assert isinstance(e, Unauthorized) and "?token=" in str(e)
    e = classify(ConnectionRejected(404, ours, b""), "ws://h:1/nope")
    assert isinstance(e, NotFound) and "/ws" in str(e)
    e = classify(ConnectionRejected(404, ((b"server", b"nginx"),), b""), "ws://h:1/ws")
    assert isinstance(e, NotSensorstream) and "nginx" in str(e)
    e = classify(ConnectionRejected(503, ours, b"too many connections\n"), "ws://h:1/ws")
    assert type(e) is ConnectFailed and "busy" in str(e)
    try:
        raise OSError("all attempts failed") from ConnectionRefusedError(111, "Connection refused")
    except OSError as err:
        e = classify(err, "ws://h:1/ws")
    assert type(e) is ConnectFailed and "connection refused" in str(e) and "sensorstream serve" in str(e)


def test_retry_reports_are_rate_limited_but_a_new_cause_is_told_at_once():
    r = RetryReport(interval=10)
    assert r.failed("refused", 0.0) == "refused"
    assert r.failed("refused", 1.0) is None
    assert r.failed("refused", 9.9) is None
    assert r.failed("refused", 10.0) == "refused (attempt 4)"
    assert r.failed("unknown host", 10.5) == "unknown host (attempt 5)"
    assert r.connected() == "connected after 5 failed attempts"
    assert r.connected() is None
    assert r.failed("refused", 11.0) == "refused"


# ----------------------------------------------------------------- tail as a real process


async def _tail(*args: str, timeout: float = 30) -> tuple[int, str, str]:
    with trio.fail_after(timeout):
        res = await trio.run_process([sys.executable, "-m", "sensorstream", "tail", *args], capture_stdout=True,
                                     capture_stderr=True, check=False, cwd=ROOT, env=ENV)
    return res.returncode, res.stdout.decode(), res.stderr.decode()


def _one_clear_line(err: str, *words: str) -> None:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for w in words:
        assert w in err, (w, err)


async def _stop(proc) -> None:
    proc.send_signal(signal.SIGTERM)
    with trio.fail_after(10):
        await proc.wait()


async def test_tail_permanent_failures_exit_1_with_one_line(tmp_path):
    from .httpraw import self_signed_cert

    proc, port, _ = await start_serve("--simulate", "--token", "s3cret")
    certfile, keyfile = self_signed_cert(tmp_path)
    tls, tls_port, _ = await start_serve("--certfile", str(certfile), "--keyfile", str(keyfile))
    try:
        rc, out, err = await _tail(f"127.0.0.1:{port}")
        assert rc == 1 and out == ""
        _one_clear_line(err, "401", "?token=")
        rc, _, err = await _tail(f"ws://127.0.0.1:{port}/ws?token=wrong")
        assert rc == 1
        _one_clear_line(err, "401", "wrong token")
        assert "wrong" not in err.replace("wrong token", "")  # the token itself is not echoed
        rc, _, err = await _tail(f"ws://127.0.0.1:{port}/websocket?token=s3cret")
        assert rc == 1
        _one_clear_line(err, "404", "/ws")
        rc, _, err = await _tail(f"ws://127.0.0.1:{port}/ws?token=s3cret", "--stream", "sim/imuu")
        assert rc == 1
        _one_clear_line(err, "sim/imuu", "sim/imu")
        rc, _, err = await _tail(f"wss://127.0.0.1:{tls_port}/ws")
        assert rc == 1
        _one_clear_line(err, "not trusted", "--cafile")
        # http:// and HOST:PORT are understood (the same server, streamed).
        rc, out, err = await _tail(f"http://127.0.0.1:{port}/?token=s3cret", "--count", "2", "--batches")
        assert rc == 0 and len(out.splitlines()) == 2 and " seq=" in out, err
    finally:
        await _stop(proc)
        await _stop(tls)


async def test_tail_to_a_server_that_is_not_sensorstream_exits_1(nursery):
    async def plain_http(stream):
        await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nserver: something-else\r\ncontent-length: 2\r\n\r\nok")
        await stream.aclose()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, plain_http, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    rc, _, err = await _tail(f"127.0.0.1:{port}")
    assert rc == 1
    _one_clear_line(err, "not a sensorstream server", "something-else")


async def _read_until(stream, needle: bytes, timeout: float = 20) -> bytes:
    got = b""
    with trio.fail_after(timeout):
        while needle not in got:
            chunk = await stream.receive_some(4096)
            assert chunk, got
            got += chunk
    return got


async def test_tail_says_why_it_cannot_connect_and_ctrl_c_ends_it_quietly():
    s = trio.socket.socket()
    await s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # a port nobody listens on
    proc = await trio.lowlevel.open_process([sys.executable, "-m", "sensorstream", "tail", f"127.0.0.1:{port}"],
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=ENV)
    err = await _read_until(proc.stderr, b"\n")
    assert b"connection refused" in err and b"retrying" in err and b"sensorstream serve" in err, err
    proc.send_signal(signal.SIGINT)
    with trio.fail_after(10):
        err += await read_all(proc.stderr)
        rc = await proc.wait()
    assert rc == 130
    assert b"Traceback" not in err and b"KeyboardInterrupt" not in err and len(err.splitlines()) <= 2, err


async def test_ctrl_c_on_a_streaming_tail_exits_130_without_a_traceback():
    server, port, _ = await start_serve("--simulate")
    try:
        proc = await trio.lowlevel.open_process([sys.executable, "-m", "sensorstream", "tail", f"127.0.0.1:{port}"],
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=ENV)
        await _read_until(proc.stdout, b"sim/")
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            async with trio.open_nursery() as n:
                n.start_soon(read_all, proc.stdout)  # keep draining so tail never blocks on a full pipe
                err = await read_all(proc.stderr)
            rc = await proc.wait()
        assert rc == 130 and err == b"", err
    finally:
        await _stop(server)


SCRIPT = """
import sys, trio
from sensorstream.client import open_client

async def main():
    async with open_client(sys.argv[1], ["sim/*"]) as client:
        async for batch in client:
            print("streaming", flush=True)

try:
    trio.run(main)
except KeyboardInterrupt:
    print("caught KeyboardInterrupt", flush=True)
    sys.exit(7)
except BaseException as e:
    print("got", type(e).__name__, flush=True)
    sys.exit(9)
"""


async def test_ctrl_c_in_a_script_using_open_client_is_a_plain_keyboard_interrupt(tmp_path):
    script = tmp_path / "user_script.py"
    script.write_text(SCRIPT)
    server, port, _ = await start_serve("--simulate")
    try:
        proc = await trio.lowlevel.open_process([sys.executable, str(script), f"ws://127.0.0.1:{port}/ws"],
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=ENV)
        out = await _read_until(proc.stdout, b"streaming")
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            out += await read_all(proc.stdout)
            rc = await proc.wait()
        assert rc == 7 and b"caught KeyboardInterrupt" in out, out[-300:]
    finally:
        await _stop(server)


async def test_open_client_lets_cancellation_and_typed_errors_out_unwrapped(make_server):
    server = await make_server(simulate=True, token="t0k")
    url = f"ws://127.0.0.1:{server.port}/ws"
    seen = []
    with trio.move_on_after(30) as outer:
        with trio.CancelScope() as scope:
            try:
                async with open_client(url + "?token=t0k", ["sim/*"]) as client:
                    async for _ in client:
                        scope.cancel()
                        await trio.sleep(5)
            except BaseException as e:
                seen.append(e)
                raise
    assert not outer.cancelled_caught
    assert len(seen) == 1 and isinstance(seen[0], trio.Cancelled), seen
    with pytest.raises(Unauthorized):
        async with open_client(url, ["sim/*"]):
            pass
    with pytest.raises(UnknownStream), trio.fail_after(20):
        async with open_client(url + "?token=t0k", ["no/such"]) as client:
            async for _ in client.events():
                pass
    with pytest.raises(NotFound):
        async with open_client(f"http://127.0.0.1:{server.port}/wss?token=t0k"):
            pass
    s = trio.socket.socket()
    await s.bind(("127.0.0.1", 0))
    closed_port = s.getsockname()[1]
    s.close()
    with pytest.raises(ConnectFailed) as failed:
        async with open_client(f"127.0.0.1:{closed_port}", reconnect=False):
            pass
    assert "connection refused" in str(failed.value)
    assert issubclass(UntrustedCertificate, Exception) and issubclass(NotSensorstream, Exception)
