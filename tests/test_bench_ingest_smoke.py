"""bench/ingest.py still runs and reports what a harness reads (no timing assertions)."""

from __future__ import annotations

from bench import ingest


def test_ingest_bench_runs_and_reports_every_format():
    res = ingest.run(quick=True, samples=300)
    assert res["meta"]["samples"] == 300
    for fmt in ("csv", "labels", "json", "cobs"):
        cases = res[fmt]
        assert {"reference", "parser 4 KiB", "parser 64 KiB"} <= set(cases)
        for case in cases.values():
            assert {"seconds", "samples", "samples_per_s", "values_per_s", "vs_reference"} <= set(case)
            assert case["samples"] >= 299  # the parser drops the first (partial) line
    assert "csv" in ingest.table(res)
