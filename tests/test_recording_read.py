"""Reading a stream back into numpy: the run finder and copier (recording/columns.py),
the threaded read against the serial one, every chunk compression, odd layouts."""

from __future__ import annotations

import time

import numpy as np
import pytest
import trio
from mcap.reader import make_reader
from mcap.writer import CompressionType, Writer

from sensorstream import cli, protocol, recording
from sensorstream.hub import LocalHub
from sensorstream.protocol import Channel, StreamInfo, encode_batch
from sensorstream.recording.columns import LayoutError, assemble, chunk_runs
from sensorstream.recording.format import MESSAGE_ENCODING, channel_metadata
from sensorstream.recording.writer import RecordingWriter, recorder_for

WIDE = StreamInfo(1, "dev/wide", tuple(Channel(f"c{i}", "V") for i in range(5)), 1000.0, device="dev")
ENV = StreamInfo(2, "dev/env", (Channel("temp", "°C"),), 10.0, device="dev")
T0 = 1_800_000_000.0


def wide_batches(n_batches=120, n=50, seed=3):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_batches):
        t = T0 + (i * n + np.arange(n)) / 1000.0
        out.append((WIDE, i, t, rng.standard_normal((5, n)).astype(np.float32)))
        if i % 7 == 0:
            out.append((ENV, i // 7, t[-1:], rng.standard_normal((1, 1)).astype(np.float32)))
    return out


def write(path, batches, chunk_bytes=8000, compression="zstd"):
    with open(path, "wb") as f:
        w = RecordingWriter(f, chunk_bytes=chunk_bytes, compression=compression)
        for info, seq, t, v in batches:
            w.write(info, seq, float(t[-1]), encode_batch(info.key, seq, t, v), time.time())
        w.close()


def expected(batches, stream_id, start=None, end=None):
    t = np.concatenate([t for info, _, t, _ in batches if info.id == stream_id])
    v = np.concatenate([v for info, _, _, v in batches if info.id == stream_id], axis=1)
    keep = np.ones(len(t), bool)
    if start is not None:
        keep &= t >= start
    if end is not None:
        keep &= t <= end
    return t[keep], v.compress(keep, axis=1)


def same(a, b) -> bool:
    (t1, v1), (t2, v2) = a, b
    return (t1.dtype == t2.dtype and v1.dtype == v2.dtype and v1.flags.c_contiguous and v2.flags.c_contiguous
            and np.array_equal(t1.view(np.uint64), t2.view(np.uint64)) and np.array_equal(v1.view(np.uint32), v2.view(np.uint32)))


RANGES = [(None, None), (T0 + 1.234, T0 + 4.5), (T0 + 0.0495, T0 + 0.0505), (None, T0 + 2.0), (T0 + 5.0, None), (T0 - 5, T0 - 1)]


@pytest.mark.parametrize("compression", ["zstd", "lz4", "none"])
def test_the_threaded_read_equals_the_serial_read_bit_for_bit(tmp_path, compression):
    batches = wide_batches()
    write(tmp_path / "r.mcap", batches, compression=compression)
    with recording.open(tmp_path / "r.mcap", threads=1) as serial, recording.open(tmp_path / "r.mcap", threads=3) as threaded:
        assert serial.complete and len(serial.chunks) > 10
        assert {c.compression for c in serial.chunks} == {"" if compression == "none" else compression}
        for sid in ("dev/wide", "dev/env"):
            for start, end in RANGES:
                one = serial.stream(sid).read(start, end)
                assert same(one, threaded.stream(sid).read(start, end)), (sid, start, end)
                assert same(one, expected(batches, sid, start, end)), (sid, start, end)
    with open(tmp_path / "r.mcap", "rb") as f:  # and the mcap library reads every compression we write
        assert sum(1 for _ in make_reader(f).iter_messages()) == len(batches)


def test_a_file_cut_short_reads_every_complete_chunk_with_threads(tmp_path):
    batches = wide_batches()
    write(tmp_path / "full.mcap", batches)
    data = (tmp_path / "full.mcap").read_bytes()
    with recording.open(tmp_path / "full.mcap") as rec:
        ends = [c.offset + c.length for c in rec.chunks]
    cut = tmp_path / "cut.mcap"
    for off in [ends[3] - 1, ends[3], ends[len(ends) // 2] + 5, ends[-1], len(data) - 30]:
        cut.write_bytes(data[:off])
        with recording.open(cut, threads=1) as serial, recording.open(cut, threads=4) as threaded:
            assert not serial.complete
            seqs = [b.seq for b in serial.stream("dev/wide").batches()]
            t, v = threaded.stream("dev/wide").read()
            assert same((t, v), serial.stream("dev/wide").read())
            # A prefix of what was written: every complete chunk, nothing more.
            et, ev = expected([b for b in batches if b[0] is ENV or b[1] in seqs], "dev/wide")
            assert seqs == list(range(len(seqs))) and same((t, v), (et, ev)), off


def _raw_writer(f, compression=CompressionType.ZSTD) -> Writer:
    w = Writer(f, chunk_size=1 << 20, compression=compression)
    w.start(profile="sensorstream", library="test")
    return w


def test_batches_of_many_sizes_sharing_chunks_with_other_channels_read_exactly(tmp_path):
    # Not how the recorder writes (one stream per chunk, batches of one size), but a
    # valid file: every batch becomes a run of its own, and the values stay exact.
    rng = np.random.default_rng(5)
    batches = []
    t_next = T0
    for i in range(300):
        n = int(rng.integers(0, 9))  # empty batches too
        t = t_next + np.arange(n) * 0.001
        t_next += 0.01
        batches.append((WIDE, i, t, rng.standard_normal((5, n)).astype(np.float32)))
        batches.append((ENV, i, np.array([t_next]), rng.standard_normal((1, 1)).astype(np.float32)))
    with open(tmp_path / "mixed.mcap", "wb") as f:
        w = _raw_writer(f)
        cids = {info.key: w.register_channel(topic=info.id, message_encoding=MESSAGE_ENCODING, schema_id=0,
                                             metadata=channel_metadata(info)) for info in (WIDE, ENV)}
        for info, seq, t, v in batches:
            w.add_message(cids[info.key], log_time=int((t[-1] if len(t) else t_next) * 1e9),
                          data=encode_batch(info.key, seq, t, v), publish_time=0, sequence=seq)
        w.finish()
    with recording.open(tmp_path / "mixed.mcap", threads=1) as serial, recording.open(tmp_path / "mixed.mcap", threads=2) as threaded:
        assert any(len(c.channel_ids) == 2 for c in serial.chunks)
        for sid in ("dev/wide", "dev/env"):
            for start, end in RANGES[:4]:
                got = serial.stream(sid).read(start, end)
                assert same(got, threaded.stream(sid).read(start, end))
                assert same(got, expected(batches, sid, start, end))


def _chunk(tmp_path, batches, compression="zstd"):
    write(tmp_path / "r.mcap", batches, chunk_bytes=1 << 30, compression=compression)
    rec = recording.open(tmp_path / "r.mcap")
    wide = next(c for c in rec.chunks if rec.stream("dev/wide").channel_ids[0] in c.channel_ids)
    return rec, rec._decompress(wide), set(rec.stream("dev/wide").channel_ids)


def test_a_chunk_of_equal_batches_is_one_run_and_copies_in_one_step(tmp_path):
    batches = [b for b in wide_batches(40) if b[0] is WIDE]
    rec, buf, ids = _chunk(tmp_path, batches)
    with rec:
        runs, stop = chunk_runs(buf, ids, 5, -1.0, None)
        assert not stop and [(r.m, r.n) for r in runs] == [(40, 50)]
        for threads in (1, 2, 8):
            assert same(assemble(runs, 5, threads), expected(batches, "dev/wide"))
        # Batches ending before start_ns are skipped; the first one starting after `end` stops the read.
        runs, stop = chunk_runs(buf, ids, 5, (T0 + 0.5) * 1e9, T0 + 1.2)
        assert stop and [(r.m, r.n) for r in runs] == [(15, 50)]
        assert same(assemble(runs, 5), expected(batches[10:25], "dev/wide"))
        # A batch of another size ends the run; the next run starts at it.
        other = encode_batch(1, 99, np.arange(3.0), np.zeros((5, 3), np.float32))
        batches2 = batches[:10] + [(WIDE, 99, np.arange(3.0) + T0 + 0.4995, np.zeros((5, 3), np.float32))] + batches[10:]
        assert len(other) != len(encode_batch(1, 0, *batches[0][2:]))
    rec, buf, ids = _chunk(tmp_path, batches2)
    with rec:
        runs, _ = chunk_runs(buf, ids, 5, -1.0, None)
        assert [(r.m, r.n) for r in runs] == [(10, 50), (1, 3), (30, 50)]


def test_a_damaged_batch_or_layout_is_an_error_not_garbage(tmp_path):
    batches = [b for b in wide_batches(5) if b[0] is WIDE]
    rec, buf, ids = _chunk(tmp_path, batches)
    with rec:
        bad = bytearray(buf)
        first = bytes(bad).index(encode_batch(1, 0, *batches[0][2:])[:24])
        bad[first + 8: first + 12] = (10**6).to_bytes(4, "little")  # its sample count
        with pytest.raises(protocol.FrameError):
            chunk_runs(memoryview(bytes(bad)), ids, 5, -1.0, None)
        with pytest.raises(LayoutError):
            chunk_runs(buf, ids, 4, -1.0, None)


async def test_serve_record_compression_reaches_the_file(tmp_path):
    a = cli.parse_serve_args(cli.build_parser(), ["serve", "--record", str(tmp_path), "--record-compression", "lz4"])
    hub = LocalHub()
    rec = recorder_for(cli.config_from_args(a), hub)
    key = hub.add_stream("dev/wide", WIDE.channels).key
    async with trio.open_nursery() as nursery:
        await nursery.start(rec.run)
        for seq in range(5):
            hub.publish(key, seq, T0 + seq + np.arange(10) / 10, np.full((5, 10), seq, np.float32))
        nursery.cancel_scope.cancel()
    with recording.open(rec.stats.files[0]) as r:
        assert {c.compression for c in r.chunks} == {"lz4"}
        t, v = r.stream("dev/wide").read()
        assert len(t) == 50 and np.array_equal(v[:, ::10], np.tile(np.arange(5, dtype=np.float32), (5, 1)))



# --- The planned read: counts from the message indexes, one chunk at a time per thread ---------------


class _Spy:
    """Counts how a Recording's reads went: planned from the indexes, or the buffered way."""

    def __init__(self, rec, monkeypatch):
        self.buffered = 0
        self.decompressed_keep = 0  # chunks decompressed into buffers of their own
        original_buffered, original_decompress = rec._read_buffered, rec._decompress

        def buffered(*a):
            self.buffered += 1
            return original_buffered(*a)

        def decompress(chunk, reuse=False):
            self.decompressed_keep += not reuse
            return original_decompress(chunk, reuse)

        monkeypatch.setattr(rec, "_read_buffered", buffered)
        monkeypatch.setattr(rec, "_decompress", decompress)


@pytest.mark.parametrize("compression", ["zstd", "lz4", "none"])
@pytest.mark.parametrize("threads", [1, 3])
def test_a_recorder_file_reads_from_its_indexes_one_chunk_at_a_time(tmp_path, monkeypatch, compression, threads):
    batches = wide_batches()
    write(tmp_path / "r.mcap", batches, compression=compression)
    with recording.open(tmp_path / "r.mcap", threads=threads) as rec:
        assert all(c.index_length > 0 and c.usize for c in rec.chunks)
        spy = _Spy(rec, monkeypatch)
        sids = ("dev/wide", "dev/env")
        for sid in sids:
            for start, end in RANGES:
                assert same(rec.stream(sid).read(start, end), expected(batches, sid, start, end)), (sid, start, end)
        assert spy.buffered == 0
        # Only a chunk that may hold a batch running past `end` is decompressed ahead,
        # into a buffer of its own: at most two per bounded read.
        bounded_reads = len(sids) * sum(end is not None for _, end in RANGES)
        assert spy.decompressed_keep <= 2 * bounded_reads


def test_a_message_index_that_lies_costs_speed_not_correctness(tmp_path, monkeypatch):
    batches = wide_batches()
    write(tmp_path / "r.mcap", batches)
    data = (tmp_path / "r.mcap").read_bytes()
    with recording.open(tmp_path / "r.mcap") as rec:
        wide_id = rec.stream("dev/wide").channel_ids[0]
        chunk = next(c for c in rec.chunks if c.channel_ids == {wide_id})
    at = chunk.index_at
    assert data[at] == 0x07 and int.from_bytes(data[at + 9: at + 11], "little") == wide_id
    entries = int.from_bytes(data[at + 11: at + 15], "little")

    # 1. The index says a batch ends far in the future: the plan counts it in a read
    # from T0 + 0.2 s, the chunk does not. Found out, and read again the other way.
    lie = bytearray(data)
    lie[at + 15: at + 23] = (2**62).to_bytes(8, "little")
    (tmp_path / "lie.mcap").write_bytes(bytes(lie))
    with recording.open(tmp_path / "lie.mcap") as rec:
        spy = _Spy(rec, monkeypatch)
        assert same(rec.stream("dev/wide").read(T0 + 0.2), expected(batches, "dev/wide", T0 + 0.2))
        assert spy.buffered == 1
    # 2. Its last entry is missing (the one before it seems to run to the chunk's end,
    # which is no whole batch): the plan cannot tell, so that chunk is decompressed first.
    short = bytearray(data)
    short[at + 11: at + 15] = (entries - 16).to_bytes(4, "little")
    (tmp_path / "short.mcap").write_bytes(bytes(short))
    with recording.open(tmp_path / "short.mcap") as rec:
        spy = _Spy(rec, monkeypatch)
        assert same(rec.stream("dev/wide").read(), expected(batches, "dev/wide"))
        assert spy.buffered == 0 and spy.decompressed_keep == 1


def test_a_file_cut_inside_the_last_chunks_indexes_reads_that_chunk_the_long_way(tmp_path, monkeypatch):
    batches = wide_batches()
    write(tmp_path / "full.mcap", batches)
    data = (tmp_path / "full.mcap").read_bytes()
    with recording.open(tmp_path / "full.mcap") as rec:
        last = rec.chunks[-1]
    for cut in (last.index_at + 3, last.index_at + last.index_length - 1, last.index_at + last.index_length):
        (tmp_path / "cut.mcap").write_bytes(data[:cut])
        with recording.open(tmp_path / "cut.mcap", threads=2) as rec:
            assert not rec.complete and rec.chunks[-1].offset == last.offset
            # Indexes are trusted once a complete record follows them: not the last chunk's.
            assert rec.chunks[-1].index_length == 0 and all(c.index_length > 0 for c in rec.chunks[:-1])
            spy = _Spy(rec, monkeypatch)
            seqs = [b.seq for b in rec.stream("dev/wide").batches()]
            t, v = rec.stream("dev/wide").read()
            assert spy.buffered == 0
            assert same((t, v), expected([b for b in batches if b[0] is ENV or b[1] in seqs], "dev/wide"))


def test_planned_samples_reads_batch_sizes_from_an_index(tmp_path):
    from sensorstream.recording.columns import planned_samples

    # A chunk with two channels interleaved and batches of several sizes.
    rng = np.random.default_rng(9)
    sizes = [int(rng.integers(0, 20)) for _ in range(60)]
    with open(tmp_path / "m.mcap", "wb") as f:
        w = _raw_writer(f)
        cids = {info.key: w.register_channel(topic=info.id, message_encoding=MESSAGE_ENCODING, schema_id=0,
                                             metadata=channel_metadata(info)) for info in (WIDE, ENV)}
        for i, n in enumerate(sizes):
            t = T0 + i + np.arange(n) / 100
            w.add_message(cids[WIDE.key], log_time=int((T0 + i) * 1e9), data=encode_batch(1, i, t, np.zeros((5, n), np.float32)),
                          publish_time=0, sequence=i)
            if i % 3 == 0:
                w.add_message(cids[ENV.key], log_time=int((T0 + i) * 1e9), data=encode_batch(2, i, t[:1], np.zeros((1, 1), np.float32)),
                              publish_time=0, sequence=i)
        w.finish()
    with recording.open(tmp_path / "m.mcap") as rec:
        (chunk,) = rec.chunks
        index = rec._read_at(chunk.index_at, chunk.index_length)
        wide, env = cids[WIDE.key], cids[ENV.key]
        assert planned_samples(index, {wide}, 5, chunk.usize, -1.0) == sum(sizes)
        assert planned_samples(index, {env}, 1, chunk.usize, -1.0) == sum(1 for i, n in enumerate(sizes) if i % 3 == 0 and n)
        assert planned_samples(index, {wide}, 5, chunk.usize, (T0 + 30) * 1e9) == sum(sizes[30:])
        assert planned_samples(index, {99}, 5, chunk.usize, -1.0) == 0
        # Sizes that are not whole batches of this layout, a cut index, an unknown record: no answer.
        assert planned_samples(index, {wide}, 4, chunk.usize, -1.0) is None
        assert planned_samples(index[:-5], {wide}, 5, chunk.usize, -1.0) is None
        assert planned_samples(b"\x08" + index[1:], {wide}, 5, chunk.usize, -1.0) is None
        assert planned_samples(b"", {wide}, 5, chunk.usize, -1.0) is None
        assert planned_samples(index, {wide}, 5, chunk.usize - 1, -1.0) is None


def test_a_read_holds_the_result_and_a_few_chunks_not_the_whole_file(tmp_path):
    import tracemalloc

    batches = [b for b in wide_batches(6000, n=100) if b[0] is WIDE]  # 6000 batches x 100 samples x 5 channels: 17 MB
    write(tmp_path / "r.mcap", batches, chunk_bytes=64 * 1024, compression="zstd")
    with recording.open(tmp_path / "r.mcap", threads=2) as rec:
        assert len(rec.chunks) > 50
        tracemalloc.start()
        try:
            t, v = rec.stream("dev/wide").read()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    result = t.nbytes + v.nbytes
    assert same((t, v), expected(batches, "dev/wide"))
    # The result, plus per thread a buffer for a compressed and a decompressed chunk
    # (at least 1 MiB each), plus small change (0.5 MiB measured); reading every chunk into memory first
    # would take another whole result's worth.
    assert peak < result + 2 * 2 * (1 << 20) + (2 << 20), (peak, result)
