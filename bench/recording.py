"""Recording: CPU per sample and write throughput, and read-back speed.

    python -m bench.recording            # ~1 minute; writes ~300 MB under --dir, then deletes it
    python -m bench.recording --mb 100 --json

1. Recording cost. A hub with one 16-channel stream publishes 10 kHz worth of
   batches (500 samples every 50 ms, as `serve` batches them) as fast as it can,
   first with no recorder, then with a `Recorder` subscribed (the same code as
   `serve --record`: hub delivery, worker thread, MCAP with zstd). The
   difference in process CPU time (all threads) divided by the samples is what
   recording costs; the same figure as a share of one core for a live
   16 x 10 kHz stream. Write throughput: payload MB/s through the recorder,
   against writing the same bytes raw with `f.write` in the same run (the
   disk's/page cache's limit).

   The recorder fdatasyncs its file at most once a second (and on close): that
   is in the figure; `syncs` says how many there were.

2. Read-back. A recording of a few hundred MB with the wide stream and two
   small ones interleaved (as `serve --record` writes them), once per chunk
   compression (zstd is the default; lz4 and none are `--record-compression`);
   read the wide stream with `recording.open(...).stream(id).read()` against
   `np.fromfile` of the same samples stored raw (float64 times, float32
   values), warm (in the page cache) and cold (after fsync +
   POSIX_FADV_DONTNEED on every file), best of 5, alternating, after one
   untimed round of each. GB/s are of the
   raw samples (what either way ends up in memory). For zstd, also the read
   with one thread (the read before threads), and the memory one read takes
   beyond its result (tracemalloc's peak, which numpy's buffers report to).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sensorstream import recording  # noqa: E402
from sensorstream.hub import LocalHub  # noqa: E402
from sensorstream.protocol import Channel, StreamInfo, encode_batch  # noqa: E402
from sensorstream.recording.writer import Recorder, RecorderConfig, RecordingWriter  # noqa: E402

C, RATE, WINDOW = 16, 10_000, 0.05
N = int(RATE * WINDOW)  # samples per batch


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def batches(seconds: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    # Noisy sensor-like data: a slow sine plus noise, so zstd sees what it would in practice.
    t0 = time.time()
    for i in range(int(seconds / WINDOW)):
        t = t0 + (i * N + np.arange(N)) / RATE
        v = (np.sin(t * 3.0)[None, :] * np.arange(1, C + 1)[:, None] + rng.normal(0, 0.01, (C, N))).astype(np.float32)
        yield t, v


async def _publish(seconds: float, record_dir: Path | None) -> tuple[float, float, dict]:
    hub = LocalHub()
    key = hub.add_stream("bench/wide", [Channel(f"c{i}", "V") for i in range(C)], rate_hz=RATE).key
    data = list(batches(seconds))
    rec = None
    async with trio.open_nursery() as nursery:
        if record_dir is not None:
            rec = Recorder(RecorderConfig(directory=record_dir), hub=hub)
            await nursery.start(rec.run)
        c0, w0 = cpu(), time.perf_counter()
        for seq, (t, v) in enumerate(data):
            hub.publish(key, seq, t, v)
            if seq % 20 == 19:
                await trio.sleep(0)  # let the recorder hand its batches to its thread, as in a live server
        nursery.cancel_scope.cancel()
    if rec is not None:
        await rec.closed.wait()
    c1, w1 = cpu(), time.perf_counter()
    stats = rec.stats.to_json() if rec else {}
    return c1 - c0, w1 - w0, stats


def bench_recording(seconds: float, workdir: Path) -> dict:
    samples = int(seconds / WINDOW) * N
    base_cpu, _, _ = trio.run(_publish, seconds, None)
    rec_dir = workdir / "rec"
    rec_cpu, rec_wall, stats = trio.run(_publish, seconds, rec_dir)
    payload = stats["bytes"]
    # Raw write of the same bytes, same run.
    raw = workdir / "raw.bin"
    blobs = [encode_batch(1, i, t, v) for i, (t, v) in enumerate(batches(seconds))]
    w0 = time.perf_counter()
    with open(raw, "wb") as f:
        for b in blobs:
            f.write(b)
        f.flush()
    raw_wall = time.perf_counter() - w0
    extra = rec_cpu - base_cpu
    per_sample_us = extra / samples * 1e6
    files = list(rec_dir.glob("*.mcap"))
    size = sum(p.stat().st_size for p in files)
    for p in files:
        p.unlink()
    raw.unlink()
    return {
        "samples": samples, "channels": C, "dropped": stats["dropped"], "syncs": stats["syncs"],
        "cpu_per_sample_us": round(per_sample_us, 4),
        "cpu_per_value_ns": round(per_sample_us * 1000 / C, 2),
        "core_share_16ch_10khz_pct": round(per_sample_us * RATE / 1e6 * 100, 2),
        "hub_publish_cpu_per_sample_us": round(base_cpu / samples * 1e6, 4),
        "write_mb_s": round(payload / 1e6 / rec_wall, 1),
        "raw_write_mb_s": round(payload / 1e6 / raw_wall, 1),
        "file_mb": round(size / 1e6, 1), "payload_mb": round(payload / 1e6, 1),
    }


class ThrottleError(Exception):
    """--throttle-mb-s cannot be set up here (the message says why and what to do)."""


def _disk_of(path: Path) -> str:
    """"major:minor" of the whole disk that holds `path` (a partition's parent)."""
    st = os.stat(path)
    node = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
    if not node.exists():
        raise ThrottleError(f"{path} is not on a block device (tmpfs, overlay?): use --dir on a disk")
    if (node / "partition").exists():
        node = node.resolve().parent
    return (node / "dev").read_text().strip()


@contextlib.contextmanager
def throttled_reads(path: Path, mb_s: float):
    """This process's reads from the disk holding `path` limited to `mb_s` MB/s
    inside the block: a cgroup (v1 blkio) of its own, removed afterwards.
    The way to see what a read does on a slower disk (a SATA SSD reads ~550)."""
    root = Path("/sys/fs/cgroup/blkio")
    if not (root / "blkio.throttle.read_bps_device").exists():
        raise ThrottleError("--throttle-mb-s needs cgroup v1's blkio controller (/sys/fs/cgroup/blkio): not on this machine")
    dev, pid = _disk_of(path), str(os.getpid())
    group = root / f"sensorstream-bench-{pid}"
    try:
        group.mkdir()
    except PermissionError:
        raise ThrottleError("--throttle-mb-s needs root (it makes a cgroup)") from None
    try:
        (group / "blkio.throttle.read_bps_device").write_text(f"{dev} {int(mb_s * 1e6)}")
        (group / "cgroup.procs").write_text(pid)  # (every thread of the process, and those it starts later)
        try:
            yield dev
        finally:
            (root / "cgroup.procs").write_text(pid)
    finally:
        group.rmdir()


def read_file(path: Path, block: int = 16 << 20) -> int:
    """Read a whole file in big blocks into one reused buffer: what the disk itself allows."""
    buf = bytearray(block)
    n = 0
    with open(path, "rb", buffering=0) as f:
        while k := f.readinto(buf):
            n += k
    return n


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def bench_read(mb: float, workdir: Path, compressions: list[str], repeat: int = 5, throttle_mb_s: float | None = None) -> dict:
    seconds = mb * 1e6 / (N * (8 + 4 * C)) * WINDOW
    raw_t, raw_v = workdir / "big.t.f64", workdir / "big.v.f32"
    wide = StreamInfo(1, "bench/wide", tuple(Channel(f"c{i}", "V") for i in range(C)), RATE)
    env = StreamInfo(2, "bench/env", (Channel("temp", "C"),), 20.0)
    imu = StreamInfo(3, "bench/imu", tuple(Channel(f"a{i}") for i in range(6)), 200.0)
    data = list(batches(seconds))
    with open(raw_t, "wb") as ft, open(raw_v, "wb") as fv:
        for t, v in data:
            ft.write(t.tobytes())
            fv.write(v.T.tobytes())  # sample-major, as a raw logger writes it
    raw_bytes = raw_t.stat().st_size + raw_v.stat().st_size
    out: dict = {"raw_mb": round(raw_bytes / 1e6, 1)}

    def read_raw():
        return np.fromfile(raw_t, dtype=np.float64), np.fromfile(raw_v, dtype=np.float32).reshape(-1, C)

    def timed(fn, cold: bool, files) -> tuple[float, tuple]:
        if cold:
            for p in files:
                drop_cache(p)
        w0 = time.perf_counter()
        r = fn()
        return time.perf_counter() - w0, r

    for comp in compressions:
        path = workdir / f"big-{comp}.mcap"
        rng = np.random.default_rng(1)
        with open(path, "wb") as f:
            w = RecordingWriter(f, compression=comp)
            for i, (t, v) in enumerate(data):
                w.write(wide, i, float(t[-1]), encode_batch(1, i, t, v), 0.0, now=i * WINDOW)
                ti = t[::50]
                w.write(imu, i, float(ti[-1]), encode_batch(3, i, ti, rng.normal(size=(6, len(ti))).astype(np.float32)), 0.0, now=i * WINDOW)
                if i % 20 == 0:
                    w.write(env, i // 20, float(t[-1]), encode_batch(2, i // 20, t[-1:], np.ones((1, 1), np.float32)), 0.0, now=i * WINDOW)
                w.flush_older_than(i * WINDOW - 1.0)
            w.close()
        files = (path, raw_t, raw_v)
        res = {"file_mb": round(path.stat().st_size / 1e6, 1)}
        with recording.open(path) as rec:
            res["threads"] = rec.threads

        def read_recording(threads=None):
            with recording.open(path, threads=threads) as rec:
                return rec.stream("bench/wide").read()

        # One untimed round first: the process's first big allocations fault in
        # fresh memory (slowly, and by luck, on a VM), which neither side should be timed on.
        read_recording(), read_raw()
        for mode in ("warm", "cold"):
            # Alternating, best of `repeat` each: the machine is shared and noisy.
            rec_times, raw_times = [], []
            for _ in range(repeat):
                s, (t, v) = timed(read_recording, mode == "cold", files)
                rec_times.append(s)
                s, (rt, rv) = timed(read_raw, mode == "cold", files)
                raw_times.append(s)
            assert np.array_equal(t, rt) and np.array_equal(v, rv.T)
            rec_s, raw_s = min(rec_times), min(raw_times)
            res[mode] = {"recording_s": round(rec_s, 3), "fromfile_s": round(raw_s, 3), "ratio": round(rec_s / raw_s, 2),
                         "recording_gb_s": round(raw_bytes / rec_s / 1e9, 2), "fromfile_gb_s": round(raw_bytes / raw_s / 1e9, 2),
                         "recording_msamples_s": round(len(t) / rec_s / 1e6, 1), "fromfile_msamples_s": round(len(t) / raw_s / 1e6, 1)}
        if comp == "zstd":
            one = min(timed(lambda: read_recording(1), False, files)[0] for _ in range(repeat))
            res["warm"]["one_thread_s"] = round(one, 3)
        # Memory a read takes beyond its result (numpy's buffers are traced), untimed.
        tracemalloc.start()
        try:
            t, v = read_recording()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        res["read_peak_beyond_result_mb"] = round((peak - t.nbytes - v.nbytes) / 1e6, 1)
        res["result_mb"] = round((t.nbytes + v.nbytes) / 1e6, 1)
        del t, v
        if throttle_mb_s:
            # Cold reads on a disk as slow as asked. Two baselines: np.fromfile (the
            # issue's), and the raw samples' files read in 16 MB blocks: np.fromfile's
            # reads are smaller, and a throttled disk makes it slower than the disk is.
            best: dict[str, float] = {}
            with throttled_reads(path, throttle_mb_s):
                for _ in range(min(repeat, 3)):
                    for name, fn in (("recording_s", read_recording), ("fromfile_s", read_raw),
                                     ("raw_blocks_s", lambda: (read_file(raw_t), read_file(raw_v))),
                                     ("file_blocks_s", lambda: read_file(path))):
                        s, _ = timed(fn, True, files)
                        best[name] = min(best.get(name, s), s)
            res["throttled"] = {"mb_s": throttle_mb_s, **{k: round(x, 3) for k, x in best.items()},
                                "ratio": round(best["recording_s"] / best["fromfile_s"], 2),
                                "ratio_raw_blocks": round(best["recording_s"] / best["raw_blocks_s"], 2),
                                "ratio_file_blocks": round(best["recording_s"] / best["file_blocks_s"], 2),
                                "recording_file_mb_s": round(path.stat().st_size / best["recording_s"] / 1e6)}
        out[comp] = res
        path.unlink()
    for p in (raw_t, raw_v):
        p.unlink()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="stream seconds published in the recording-cost part")
    ap.add_argument("--mb", type=float, default=300.0, help="size of the large recording (raw MB of the wide stream)")
    ap.add_argument("--dir", default=None, help="where to write (default: a temporary directory under /var/tmp)")
    ap.add_argument("--compression", default="zstd,lz4,none", help="chunk compressions to compare in the read part (comma-separated)")
    ap.add_argument("--repeat", type=int, default=5, help="reads of each kind; the best counts")
    ap.add_argument("--throttle-mb-s", type=float, default=None,
                    help="also read cold with this process's disk reads limited to this many MB/s (root, cgroup v1 blkio; e.g. 550, a SATA SSD)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    base = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="sensorstream-bench-", dir="/var/tmp"))
    try:
        res = {"recording": bench_recording(a.seconds, base),
               "read": bench_read(a.mb, base, a.compression.split(","), a.repeat, a.throttle_mb_s)}
    except ThrottleError as e:
        print(f"bench.recording: {e}", file=sys.stderr)
        return 2
    finally:
        if not a.dir:
            shutil.rmtree(base, ignore_errors=True)
    if a.json:
        print(json.dumps(res, indent=2))
        return 0
    r, rd = res["recording"], res["read"]
    print(f"recording 16 ch x 10 kHz: {r['cpu_per_sample_us']} µs CPU per sample ({r['cpu_per_value_ns']} ns per value) "
          f"= {r['core_share_16ch_10khz_pct']} % of a core (target <= 5 %); hub publish alone {r['hub_publish_cpu_per_sample_us']} µs/sample; "
          f"dropped {r['dropped']}")
    print(f"write: {r['write_mb_s']} MB/s through the recorder vs {r['raw_write_mb_s']} MB/s raw f.write "
          f"(file {r['file_mb']} MB for {r['payload_mb']} MB of batches)")
    for comp, res in rd.items():
        if not isinstance(res, dict):
            continue
        for mode in ("warm", "cold"):
            m = res[mode]
            print(f"read one stream ({rd['raw_mb']} MB of samples) of a {res['file_mb']} MB {comp} recording ({mode}, {res['threads']} threads): "
                  f"{m['recording_s']} s ({m['recording_gb_s']} GB/s) vs np.fromfile {m['fromfile_s']} s ({m['fromfile_gb_s']} GB/s) "
                  f"= {m['ratio']}x" + (f"; one thread {m['one_thread_s']} s" if "one_thread_s" in m else ""))
        print(f"  memory a read takes beyond its {res['result_mb']} MB result: {res['read_peak_beyond_result_mb']} MB")
        if "throttled" in res:
            m = res["throttled"]
            print(f"  disk throttled to {m['mb_s']:g} MB/s, cold: {m['recording_s']} s ({m['recording_file_mb_s']} MB/s of file) vs "
                  f"np.fromfile {m['fromfile_s']} s = {m['ratio']}x; vs the raw samples in 16 MB blocks {m['raw_blocks_s']} s = "
                  f"{m['ratio_raw_blocks']}x; vs the recording file in 16 MB blocks {m['file_blocks_s']} s = {m['ratio_file_blocks']}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
