"""Recordings without sockets: the file writer, the reader (finished and cut-short
files), recovery, exports, and the recorder's behaviour when the disk fails."""

from __future__ import annotations

from dataclasses import replace

import io
import json
import logging
import os
import struct
import time

import jsonschema
import numpy as np
import pytest
import trio
import zstandard
from mcap.exceptions import McapError
from mcap.reader import make_reader
from mcap.records import Message
from mcap.stream_reader import StreamReader

from sensorstream import recording
from sensorstream.hub import LocalHub
from sensorstream.protocol import Channel, StreamInfo, decode_batch, encode_batch
from sensorstream.recording.export import align, export, foxglove_schema, resample, Table
from sensorstream.recording.recover import recover
from sensorstream.recording.writer import Recorder, RecorderConfig, RecordingWriter

from .conftest import eventually

IMU = StreamInfo(1, "dev/imu", (Channel("ax", "m/s²"), Channel("ay", "m/s²"), Channel("az", "m/s²")), 100.0, device="dev")
ENV = StreamInfo(2, "dev/env", (Channel("temp", "°C"),), 10.0, device="dev")
T0 = 1_800_000_000.0


def make_batches(n=60, seed=1):
    """Interleaved batches of two streams: [(info, seq, t, v)] in publish order."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = T0 + i * 0.1 + np.arange(10) * 0.01
        out.append((IMU, i, t, rng.standard_normal((3, 10)).astype(np.float32)))
        if i % 3 == 0:
            out.append((ENV, i // 3, t[-1:], rng.standard_normal((1, 1)).astype(np.float32)))
    return out


def write_file(path, batches, chunk_bytes=1500):
    with open(path, "wb") as f:
        w = RecordingWriter(f, chunk_bytes=chunk_bytes)
        for info, seq, t, v in batches:
            w.write(info, seq, float(t[-1]), encode_batch(info.key, seq, t, v), time.time())
        w.close()


def expected(batches, stream_id):
    sel = [(t, v) for info, _, t, v in batches if info.id == stream_id]
    return np.concatenate([t for t, _ in sel]), np.concatenate([v for _, v in sel], axis=1)


def test_round_trip_is_bit_exact_and_describes_each_stream(tmp_path):
    batches = make_batches()
    write_file(tmp_path / "r.mcap", batches)
    with recording.open(tmp_path / "r.mcap") as rec:
        assert rec.complete
        assert [s.id for s in rec.streams] == ["dev/imu", "dev/env"]
        imu = rec.stream("dev/imu")
        assert imu.channels == IMU.channels and imu.rate_hz == 100.0 and imu.device == "dev"
        for s in rec.streams:
            t, v = s.read()
            et, ev = expected(batches, s.id)
            assert t.dtype == np.float64 and v.dtype == np.float32
            assert np.array_equal(t, et) and np.array_equal(v.view(np.uint32), ev.view(np.uint32))
        assert [b.seq for b in imu.batches()] == list(range(60))


@pytest.mark.parametrize("start,end", [(T0 + 1.05, T0 + 2.0), (T0 + 0.0, T0 + 0.0), (None, T0 + 3.33), (T0 + 5.5, None), (T0 - 9, T0 - 1)])
def test_time_ranges_cut_exactly_and_skip_other_chunks(tmp_path, start, end):
    batches = make_batches()
    write_file(tmp_path / "r.mcap", batches)
    et, ev = expected(batches, "dev/imu")
    keep = np.ones(len(et), bool)
    if start is not None:
        keep &= et >= start
    if end is not None:
        keep &= et <= end
    with recording.open(tmp_path / "r.mcap") as rec:
        t, v = rec.stream("dev/imu").read(start, end)
        assert np.array_equal(t, et[keep]) and np.array_equal(v, ev[:, keep])


def test_reading_one_stream_reads_only_its_chunks(tmp_path):
    # Recorded interleaved, as they arrive: each stream still gets chunks of its own.
    batches = make_batches()
    write_file(tmp_path / "r.mcap", batches, chunk_bytes=1000)
    with recording.open(tmp_path / "r.mcap") as rec:
        env_chunks = [c for c in rec.chunks if rec.stream("dev/env").channel_ids[0] in c.channel_ids]
        read = []
        original = rec._decompress
        rec._decompress = lambda chunk, *a: read.append(chunk) or original(chunk, *a)
        rec.stream("dev/env").read()
        assert read == env_chunks and len(env_chunks) < len(rec.chunks) / 3
        assert all(len(c.channel_ids) == 1 for c in rec.chunks)


def test_mcap_library_reads_the_recording(tmp_path):
    batches = make_batches()
    write_file(tmp_path / "r.mcap", batches)
    with open(tmp_path / "r.mcap", "rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        assert summary.statistics.message_count == len(batches)
        assert {c.topic for c in summary.channels.values()} == {"dev/imu", "dev/env"}
        imu = next(c for c in summary.channels.values() if c.topic == "dev/imu")
        assert json.loads(imu.metadata["units"]) == ["m/s²"] * 3 and imu.metadata["rate_hz"] == "100.0"
        assert all(ci.compression == "zstd" for ci in summary.chunk_indexes)
        got = [(m.log_time, ch.topic, decode_batch(m.data).seq) for _, ch, m in reader.iter_messages()]
    assert [g[0] for g in got] == sorted(g[0] for g in got)
    assert sorted(g[1:] for g in got) == sorted((info.id, seq) for info, seq, _, _ in batches)


def _stream_reader_messages(data: bytes) -> list[Message]:
    out = []
    try:
        for r in StreamReader(io.BytesIO(data), record_size_limit=None).records:
            if isinstance(r, Message):
                out.append(r)
    except (McapError, struct.error, zstandard.ZstdError):
        # The reader ends at the cut: EndOfFile at a record boundary, a short
        # read (struct.error) inside a record header, a cut chunk's data fails
        # to decompress. Every message before it was yielded.
        pass
    return out


def test_truncation_at_any_offset_keeps_every_complete_chunk(tmp_path):
    batches = make_batches()
    write_file(tmp_path / "full.mcap", batches, chunk_bytes=1200)
    data = (tmp_path / "full.mcap").read_bytes()
    with recording.open(tmp_path / "full.mcap") as rec:
        chunks = [(c.offset + c.length, sum(1 for _ in rec.chunk_messages(c))) for c in rec.chunks]
    assert len(chunks) >= 10
    # Every offset near a chunk boundary, and a stride through the rest.
    offsets = sorted({o for end, _ in chunks for o in range(end - 12, end + 12)} | set(range(0, len(data), 37)))
    cut = tmp_path / "cut.mcap"
    seqs = {sid: [seq for info, seq, _, _ in batches if info.id == sid] for sid in ("dev/imu", "dev/env")}
    for off in offsets:
        if off > len(data):
            continue
        cut.write_bytes(data[:off])
        complete = sum(n for end, n in chunks if end <= off)
        with recording.open(cut) as rec:
            got = [(s.id, b.seq) for s, b in rec.messages()]
            # Each stream: a prefix of what was written, nothing else.
            for sid, written in seqs.items():
                mine = [q for i, q in got if i == sid]
                assert mine == written[: len(mine)], off
                if any(s.id == sid for s in rec.streams):
                    assert [b.seq for b in rec.stream(sid).batches()] == mine
        assert len(got) == complete, off
        if off < len(data) - 100:  # (near the end the summary is what is cut)
            assert len(_stream_reader_messages(data[:off])) == complete, off


def test_recover_rewrites_a_truncated_file_with_a_summary(tmp_path):
    batches = make_batches()
    write_file(tmp_path / "full.mcap", batches, chunk_bytes=1200)
    data = (tmp_path / "full.mcap").read_bytes()
    (tmp_path / "cut.mcap").write_bytes(data[: len(data) * 2 // 3])
    with open(tmp_path / "cut.mcap", "rb") as f, pytest.raises(Exception):
        make_reader(f).get_summary()
    r = recover(tmp_path / "cut.mcap", tmp_path / "fixed.mcap")
    assert not r.had_summary and r.dropped_bytes > 0 and r.messages > 0
    with open(tmp_path / "fixed.mcap", "rb") as f:
        msgs = list(make_reader(f).iter_messages(log_time_order=False))
    assert len(msgs) == r.messages
    with recording.open(tmp_path / "fixed.mcap") as rec, recording.open(tmp_path / "cut.mcap") as cut:
        assert rec.complete and not cut.complete
        for s in cut.streams:
            a, b = s.read(), rec.stream(s.id).read()
            assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_a_file_that_is_not_a_recording_is_refused_clearly(tmp_path):
    (tmp_path / "x.mcap").write_bytes(b"hello world, not mcap")
    with pytest.raises(recording.RecordingError, match="not an MCAP file"):
        recording.open(tmp_path / "x.mcap")
    with pytest.raises(recording.RecordingError, match="cannot open"):
        recording.open(tmp_path / "missing.mcap")


def test_a_stream_whose_channels_change_appears_once_per_layout(tmp_path):
    wide = StreamInfo(1, "dev/imu", IMU.channels + (Channel("t", "°C"),), 100.0, device="dev")
    t = T0 + np.arange(5) * 0.01
    with open(tmp_path / "r.mcap", "wb") as f:
        w = RecordingWriter(f)
        w.write(IMU, 0, t[-1], encode_batch(1, 0, t, np.zeros((3, 5), np.float32)), 0)
        w.write(wide, 1, t[-1] + 1, encode_batch(1, 1, t + 1, np.ones((4, 5), np.float32)), 0)
        w.close()
    with recording.open(tmp_path / "r.mcap") as rec:
        assert [len(s.channels) for s in rec.streams] == [3, 4]
        assert rec.stream("dev/imu").read()[1].shape == (4, 5)


def test_a_status_error_or_epoch_change_keeps_the_streams_one_mcap_channel(tmp_path):
    t = T0 + np.arange(5) * 0.01
    infos = [IMU, replace(IMU, status="failed", error="boom"), replace(IMU, epoch="e2"), replace(IMU, status="stale")]
    with open(tmp_path / "r.mcap", "wb") as f:
        w = RecordingWriter(f)
        for i, info in enumerate(infos):
            w.write(info, i, t[-1] + i, encode_batch(1, i, t + i, np.zeros((3, 5), np.float32)), 0)
        w.close()
    with recording.open(tmp_path / "r.mcap") as rec:
        assert len(rec.channels) == 1 and [len(s.channels) for s in rec.streams] == [3]
        assert rec.stream("dev/imu").read()[0].shape == (20,)


# --------------------------------------------------------------------------- exports


def test_csv_and_npz_exports_hold_the_exact_values(tmp_path):
    batches = make_batches()
    write_file(tmp_path / "r.mcap", batches)
    with recording.open(tmp_path / "r.mcap") as rec:
        [csv_dir] = [export(rec, "csv", tmp_path / "csv")[0].parent]
        [npz] = export(rec, "npz", tmp_path / "r.npz")
    for stream_id in ("dev/imu", "dev/env"):
        et, ev = expected(batches, stream_id)
        lines = (csv_dir / (stream_id.replace("/", "_") + ".csv")).read_text().splitlines()
        assert lines[0].startswith("# ") and stream_id in lines[0]
        head = lines[1].split(",")
        assert head[:2] == ["time_iso", "time_unix"]
        rows = [ln.split(",") for ln in lines[2:]]
        assert np.array_equal(np.array([float(r[1]) for r in rows]), et)
        assert np.array_equal(np.array([[np.float32(x) for x in r[2:]] for r in rows]).T, ev)
        assert rows[0][0].endswith("Z") and rows[0][0].startswith("2027-01-15T")
        z = np.load(npz)
        assert np.array_equal(z[f"{stream_id}/t"], et) and np.array_equal(z[f"{stream_id}/values"], ev)
    assert "ax (m/s²)" in (csv_dir / "dev_imu.csv").read_text().splitlines()[1]


def test_parquet_export(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    batches = make_batches()
    write_file(tmp_path / "r.mcap", batches)
    with recording.open(tmp_path / "r.mcap") as rec:
        [path] = export(rec, "parquet", tmp_path / "imu.parquet", patterns=["dev/imu"])
    table = pq.read_table(path)
    et, ev = expected(batches, "dev/imu")
    assert np.array_equal(table.column("time_unix").to_numpy(), et)
    assert np.array_equal(table.column("ay").to_numpy(), ev[1])
    assert table.schema.field("ay").metadata[b"unit"] == "m/s²".encode()


def test_foxglove_export_validates_against_its_json_schema(tmp_path):
    batches = make_batches()
    write_file(tmp_path / "r.mcap", batches)
    with recording.open(tmp_path / "r.mcap") as rec:
        export(rec, "foxglove", tmp_path / "fox.mcap")
    n = {"dev/imu": 0, "dev/env": 0}
    with open(tmp_path / "fox.mcap", "rb") as f:
        for schema, channel, message in make_reader(f).iter_messages():
            assert schema.encoding == "jsonschema" and channel.message_encoding == "json"
            doc = json.loads(message.data)
            jsonschema.validate(doc, json.loads(schema.data))
            assert message.log_time == doc["timestamp"]["sec"] * 10**9 + doc["timestamp"]["nsec"]
            n[channel.topic] += 1
    assert n == {"dev/imu": 600, "dev/env": 20}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"timestamp": {"sec": 1, "nsec": 0}, "ax": "x", "ay": 1, "az": 1}, foxglove_schema("dev/imu", IMU.channels))


def test_align_resamples_onto_one_axis_and_leaves_gaps_empty():
    t = np.array([0.0, 0.1, 0.2, 0.3, 2.0, 2.1])
    v = np.array([[0, 1, 2, 3, 20, 21]], np.float32)
    at = np.array([0.05, 0.1, 0.25, 1.0, 2.05, 3.0])
    lin = resample(t, v, at, "linear")[0]
    assert np.allclose(lin[:3], [0.5, 1, 2.5]) and np.isnan(lin[3]) and np.isclose(lin[4], 20.5) and np.isnan(lin[5])
    near = resample(t, v, at, "nearest")[0]
    assert list(near[[1, 2, 4]]) == [1, 2, 20] and np.isnan(near[3])
    a, b = align([Table("a", (Channel("x"),), t, v), Table("b", (Channel("y"),), t[:3] + 0.05, v[:, :3])], 0.1, "linear", None, None)
    assert np.array_equal(a.t, b.t) and a.t[0] == 0.0 and np.isclose(a.t[-1], 2.1)
    assert np.isnan(b.v[0, 0]) and np.isclose(b.v[0, 1], 0.5)


def test_aligned_csv_is_one_table_and_says_how(tmp_path):
    write_file(tmp_path / "r.mcap", make_batches())
    with recording.open(tmp_path / "r.mcap") as rec:
        [path] = export(rec, "csv", tmp_path / "all.csv", align_ms=50, method="nearest")
    lines = path.read_text().splitlines()
    assert "50 ms (nearest)" in lines[0]
    assert lines[1].split(",")[2:] == ["dev/imu/ax (m/s²)", "dev/imu/ay (m/s²)", "dev/imu/az (m/s²)", "dev/env/temp (°C)"]
    assert lines[2].split(",")[1] == repr(T0)


# --------------------------------------------------------------------------- the recorder


class FullDisk(io.RawIOBase):
    """/dev/full's behaviour without depending on it: every write fails with ENOSPC."""

    def writable(self):
        return True

    def write(self, b):
        raise OSError(28, "No space left on device")


async def test_a_full_disk_is_reported_once_and_every_batch_counted(tmp_path, caplog):
    hub = LocalHub()
    key = hub.add_stream("dev/imu", IMU.channels).key
    full = (lambda p: open("/dev/full", "wb")) if os.path.exists("/dev/full") else (lambda p: FullDisk())
    rec = Recorder(RecorderConfig(directory=tmp_path, opener=full, retry_s=0.05), hub=hub)
    caplog.set_level(logging.INFO, "sensorstream.recording")
    async with trio.open_nursery() as nursery:
        await nursery.start(rec.run)
        await eventually(lambda: rec.stats.failing is not None)
        for seq in range(100):
            hub.publish(key, seq, T0 + np.array([seq * 0.1]), np.zeros((3, 1), np.float32))
        assert rec.stats.dropped == 100 and rec.drops == {"dev/imu": 100}
        await eventually(lambda: rec.stats.errors >= 3)  # retried, backing off
        nursery.cancel_scope.cancel()
    assert rec.stats.batches == 0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "disk is full" in errors[0].getMessage()


async def test_a_frozen_disk_drops_batches_in_the_recording_and_never_blocks_publish(tmp_path):
    # A FIFO nobody reads: the kernel blocks the writer for real once its buffer is full.
    fifo = tmp_path / "frozen"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        hub = LocalHub()
        key = hub.add_stream("dev/imu", IMU.channels).key
        rec = Recorder(RecorderConfig(directory=tmp_path, opener=lambda p: open(fifo, "wb"), queue_bytes=512 * 1024,
                                      chunk_bytes=64 * 1024, close_timeout_s=0.5), hub=hub)
        async with trio.open_nursery() as nursery:
            await nursery.start(rec.run)
            values = np.zeros((3, 1000), np.float32)
            seq = 0
            with trio.fail_after(30):
                while rec.stats.dropped < 20:
                    t = T0 + seq + np.arange(1000) / 1000
                    before = time.perf_counter()
                    hub.publish(key, seq, t, values)
                    assert time.perf_counter() - before < 0.05  # publish never waits for the disk
                    seq += 1
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        assert rec.stats.batches + rec.stats.dropped + _pending(rec) >= seq - 1
        assert rec.drops["dev/imu"] == rec.stats.dropped >= 20
    finally:
        os.close(reader)  # the abandoned writer thread gets EPIPE and ends


def _pending(rec):
    return len(rec._pending)


async def test_batches_published_just_before_shutdown_are_in_the_file(tmp_path):
    hub = LocalHub()
    key = hub.add_stream("dev/imu", IMU.channels).key
    rec = Recorder(RecorderConfig(directory=tmp_path), hub=hub)
    async with trio.open_nursery() as nursery:
        await nursery.start(rec.run)
        for seq in range(3):  # before the recorder's first write tick
            hub.publish(key, seq, T0 + np.array([seq * 0.1]), np.full((3, 1), seq, np.float32))
        nursery.cancel_scope.cancel()
    assert rec.closed.is_set() and rec.stats.dropped == 0
    with recording.open(rec.stats.files[0]) as r:
        assert r.complete and [b.seq for b in r.stream("dev/imu").batches()] == [0, 1, 2]


async def test_rotation_by_size_starts_new_complete_files_and_loses_nothing(tmp_path):
    hub = LocalHub()
    key = hub.add_stream("dev/imu", IMU.channels).key
    rec = Recorder(RecorderConfig(directory=tmp_path, max_bytes=20_000, chunk_bytes=4_000, write_interval=0.01), hub=hub)
    values = np.zeros((3, 100), np.float32)
    seq = 0
    async with trio.open_nursery() as nursery:
        await nursery.start(rec.run)
        with trio.fail_after(30):
            while len(rec.stats.files) < 3:
                hub.publish(key, seq, T0 + seq + np.arange(100) / 100, values)
                seq += 1
                await trio.sleep(0.005)
        nursery.cancel_scope.cancel()
    got = []
    for path in rec.stats.files:
        with recording.open(path) as r:
            assert r.complete
            got += [b.seq for b in r.stream("dev/imu").batches()]
    assert got == list(range(seq)) and rec.stats.dropped == 0
    assert all(os.path.getsize(p) < 20_000 + 3 * 4_000 for p in rec.stats.files[:-1])
