"""Recording end to end: a real server records while real clients watch; files
are compared with what the clients received, batch by batch, by seq."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import numpy as np
import trio
from mcap.reader import make_reader

from sensorstream import recording
from sensorstream.client import open_client
from sensorstream.config import ServerConfig
from sensorstream.recording.export import export
from sensorstream.recording.writer import Recorder, RecorderConfig
from sensorstream.server.app import Server

from .test_cli import ROOT, read_all, start_serve
from .test_recording import _stream_reader_messages


async def collect(client, until, got=None) -> dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Batches by stream id and seq (copied out of the frames) until `until(got)` holds."""
    got = {} if got is None else got
    async for b in client:
        sid = client.streams[b.key].id
        got.setdefault(sid, {})[b.seq] = (b.timestamps.copy(), b.values.copy())
        if until(got):
            return got
    return got


def by_seq(stream) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    return {b.seq: (b.timestamps, b.values) for b in stream.batches()}


async def test_serve_record_round_trip_equals_what_a_live_client_received(make_server, tmp_path):
    server = await make_server(simulate=True, seed=5, record=str(tmp_path))
    async with open_client(f"ws://127.0.0.1:{server.port}/ws", ["sim/*"]) as client:
        with trio.fail_after(20):
            live = await collect(client, lambda g: len(g) == 3 and all(len(v) >= 12 for v in g.values()))
    await server.shutdown()
    with trio.fail_after(10):
        await server.recorder.closed.wait()
    [path] = server.recorder.stats.files
    with recording.open(path) as rec:
        assert rec.complete and rec.drops == {}
        for sid, batches in live.items():
            s = rec.stream(sid)
            recorded = by_seq(s)
            assert set(batches) <= set(recorded)
            for seq, (t, v) in batches.items():
                rt, rv = recorded[seq]
                assert np.array_equal(rt, t) and np.array_equal(rv.view(np.uint32), v.view(np.uint32)), (sid, seq)
            # The exports hold the same samples: find the live client's seqs among them.
            seqs = sorted(recorded)
            first = sum(len(recorded[q][0]) for q in seqs if q < min(batches))
            lt = np.concatenate([batches[q][0] for q in sorted(batches)])
            lv = np.concatenate([batches[q][1] for q in sorted(batches)], axis=1)
            assert sorted(batches) == list(range(min(batches), max(batches) + 1))
            [npz] = export(rec, "npz", tmp_path / "e.npz", patterns=[sid])
            z = np.load(npz)
            assert np.array_equal(z[f"{sid}/t"][first: first + len(lt)], lt)
            assert np.array_equal(z[f"{sid}/values"][:, first: first + len(lt)], lv)
            [csv] = export(rec, "csv", tmp_path / f"{sid.replace('/', '_')}.csv", patterns=[sid])
            rows = [r.split(",") for r in csv.read_text().splitlines()[2:]][first: first + len(lt)]
            assert np.array_equal(np.array([float(r[1]) for r in rows]), lt)
            assert np.array_equal(np.array([[np.float32(x) for x in r[2:]] for r in rows]).T, lv)
    with open(path, "rb") as f:
        assert {c.topic for c in make_reader(f).get_summary().channels.values()} == {"sim/env", "sim/imu", "sim/power"}


async def test_record_streams_glob_chooses_what_is_recorded(make_server, tmp_path):
    server = await make_server(simulate=True, record=str(tmp_path), record_streams=["sim/e*"])
    async with open_client(f"ws://127.0.0.1:{server.port}/ws", ["sim/env"]) as client:
        with trio.fail_after(20):
            await collect(client, lambda g: len(g.get("sim/env", {})) >= 3)
    await server.shutdown()
    with trio.fail_after(10):
        await server.recorder.closed.wait()
    with recording.open(server.recorder.stats.files[0]) as rec:
        assert [s.id for s in rec.streams] == ["sim/env"]


async def test_a_blocked_recording_target_costs_the_recording_not_the_clients(nursery, tmp_path):
    fifo = tmp_path / "frozen"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # and never read: writes block once the pipe is full
    try:
        server = Server(ServerConfig(host="127.0.0.1", port=0, simulate=True, imu_rate=5000, record=str(tmp_path)))
        server.recorder = Recorder(RecorderConfig(directory=tmp_path, opener=lambda p: open(fifo, "wb"), queue_bytes=256 * 1024,
                                                  chunk_bytes=32 * 1024, close_timeout_s=0.5), hub=server.hub)
        await nursery.start(server.run)
        seqs = []
        drops_at = None
        async with open_client(f"ws://127.0.0.1:{server.port}/ws", ["sim/imu"]) as client:
            with trio.fail_after(30):
                async for b in client:
                    seqs.append(b.seq)
                    if drops_at is None and server.recorder.stats.dropped > 0:
                        drops_at = len(seqs)
                    # Keep watching well after the recorder started dropping.
                    if drops_at is not None and len(seqs) >= drops_at + 40:
                        break
            assert client.state.dropped == {}
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap for the client
        assert server.recorder.stats.dropped > 0 and server.recorder.drops["sim/imu"] > 0
        metrics = server.metrics_text().decode()
        assert re.search(r'sensorstream_recording_dropped_batches_total\{stream="sim/imu"\} [1-9]', metrics), metrics[-2000:]
        await server.shutdown()
    finally:
        os.close(reader)


async def test_serve_record_refuses_an_unwritable_directory_in_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    proc = await trio.run_process([sys.executable, "-m", "sensorstream", "serve", "--record", str(tmp_path / "file" / "runs")],
                                  capture_stdout=True, capture_stderr=True, check=False, cwd=ROOT)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "Traceback" not in err
    assert "--record" in err and "writable directory" in err and len(err.strip().splitlines()) == 1


async def test_sigkill_of_serve_record_keeps_all_but_the_last_second(tmp_path):
    proc, port, _ = await start_serve("--simulate", "--record", str(tmp_path))
    try:
        async with open_client(f"ws://127.0.0.1:{port}/ws", ["sim/imu"]) as client:
            with trio.fail_after(30):
                live = await collect(client, lambda g: len(g.get("sim/imu", {})) >= 60)  # 3 s of 20 batches/s
            proc.send_signal(signal.SIGKILL)
            last_live_t = max(float(t[-1]) for t, _ in live["sim/imu"].values())
    finally:
        with trio.fail_after(10):
            await proc.wait()
    [path] = list(tmp_path.glob("*.mcap"))
    with recording.open(path) as rec:
        assert not rec.complete
        recorded = by_seq(rec.stream("sim/imu"))
        common = set(recorded) & set(live["sim/imu"])
        assert len(common) >= 20
        for seq in common:
            assert np.array_equal(recorded[seq][1], live["sim/imu"][seq][1])
        # What a crash loses: the open chunk (< 1 s of data) and one write interval (0.2 s).
        last_recorded_t = max(float(t[-1]) for t, _ in recorded.values())
        assert last_recorded_t >= last_live_t - 1.2 - 0.5  # (+0.5 s: the client saw the kill late)
        n = sum(1 for _ in rec.messages())
    assert len(_stream_reader_messages(path.read_bytes())) == n  # mcap's own reader gets every complete chunk
    out = await trio.run_process([sys.executable, "-m", "sensorstream", "recover", str(path)], capture_stdout=True,
                                 capture_stderr=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    assert b"batches" in out.stdout
    with open(path, "rb") as f:
        assert sum(1 for _ in make_reader(f).iter_messages()) == n


async def test_record_command_writes_what_the_server_sent(make_server, tmp_path):
    server = await make_server(simulate=True)
    url = f"ws://127.0.0.1:{server.port}/ws"
    out = tmp_path / "run.mcap"
    async with open_client(url, ["sim/imu"]) as client:
        rec = await trio.lowlevel.open_process(
            [sys.executable, "-m", "sensorstream", "record", url, "--stream", "sim/i*", "-o", str(out), "--duration", "2"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
        live: dict = {}
        with trio.fail_after(30):
            async with trio.open_nursery() as n:
                n.start_soon(collect, client, lambda g: False, live)
                await rec.wait()
                n.cancel_scope.cancel()
        stdout, stderr = await read_all(rec.stdout), await read_all(rec.stderr)
    assert rec.returncode == 0, stderr
    assert b"1 streams" in stdout and b"Traceback" not in stderr
    with recording.open(out) as r:
        assert r.complete
        recorded = by_seq(r.stream("sim/imu"))
    common = set(recorded) & set(live["sim/imu"])
    assert len(common) >= 20
    for seq in common:
        assert np.array_equal(recorded[seq][0], live["sim/imu"][seq][0]) and np.array_equal(recorded[seq][1], live["sim/imu"][seq][1])
    # An existing file is not overwritten by accident.
    again = await trio.run_process([sys.executable, "-m", "sensorstream", "record", url, "-o", str(out)], capture_stdout=True,
                                   capture_stderr=True, check=False, cwd=ROOT)
    assert again.returncode == 2 and b"--overwrite" in again.stderr


async def test_record_shows_a_live_progress_line_on_a_terminal(make_server, tmp_path):
    server = await make_server(simulate=True)
    master, slave = os.openpty()
    try:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "sensorstream", "record", f"ws://127.0.0.1:{server.port}/ws", "-o", str(tmp_path / "r.mcap"),
             "--duration", "2"], stdout=subprocess.DEVNULL, stderr=slave, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
        os.close(slave)
        slave = None
        term = trio.lowlevel.FdStream(os.dup(master))
        out = b""
        with trio.fail_after(30):
            async with term:
                try:
                    while chunk := await term.receive_some(4096):
                        out += chunk
                except trio.BrokenResourceError:  # EIO: the process closed the terminal
                    pass
            await proc.wait()
    finally:
        os.close(master)
        if slave is not None:
            os.close(slave)
    assert proc.returncode == 0
    lines = [ln for ln in out.decode().split("\r") if "samples" in ln]
    assert len(lines) >= 2  # rewritten in place
    assert re.search(r"[\d,]+ samples, [\d,]+/s, [\d.]+ MB, 0 batches missed in 0 gaps", lines[-1]), lines[-1]
