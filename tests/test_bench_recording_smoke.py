"""bench/recording.py runs end to end on tiny sizes (its figures are in docs/performance.md)."""

import json
import os
import shutil
import subprocess
import sys

from .test_cli import ROOT


def test_recording_bench_runs_and_reports_every_figure(tmp_path):
    out = subprocess.run([sys.executable, "-m", "bench.recording", "--seconds", "1", "--mb", "2", "--repeat", "1", "--dir", str(tmp_path), "--json"],
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True, timeout=120, check=True)
    res = json.loads(out.stdout)
    assert res["recording"]["dropped"] == 0 and res["recording"]["cpu_per_sample_us"] > 0 and res["recording"]["syncs"] >= 1
    for compression in ("zstd", "lz4", "none"):
        for mode in ("warm", "cold"):
            assert res["read"][compression][mode]["ratio"] > 0 and res["read"][compression][mode]["recording_gb_s"] > 0
    assert res["read"]["zstd"]["warm"]["one_thread_s"] > 0
    assert all(res["read"][c]["read_peak_beyond_result_mb"] >= 0 and res["read"][c]["result_mb"] > 0 for c in ("zstd", "lz4", "none"))
    assert list(tmp_path.iterdir()) in ([], [tmp_path / "rec"])  # its files are removed


def test_a_throttle_that_cannot_be_set_up_is_one_line_and_exit_2(tmp_path):
    # /dev/shm is tmpfs: no disk to throttle (and a machine without cgroup v1's blkio says so instead).
    assert os.path.isdir("/dev/shm")
    work = f"/dev/shm/sensorstream-bench-test-{os.getpid()}"
    out = subprocess.run([sys.executable, "-m", "bench.recording", "--seconds", "1", "--mb", "1", "--repeat", "1", "--compression", "none",
                          "--dir", work, "--throttle-mb-s", "550"],
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True, timeout=120)
    shutil.rmtree(work, ignore_errors=True)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench.recording: ") and "Traceback" not in out.stderr
    assert "not on a block device" in lines[0] or "cgroup v1" in lines[0] or "needs root" in lines[0]
