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


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def bench_read(mb: float, workdir: Path, compressions: list[str], repeat: int = 5) -> dict:
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
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    base = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="sensorstream-bench-", dir="/var/tmp"))
    try:
        res = {"recording": bench_recording(a.seconds, base), "read": bench_read(a.mb, base, a.compression.split(","), a.repeat)}
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
