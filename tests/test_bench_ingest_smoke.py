"""bench/ingest.py still runs and reports what a harness reads (no timing assertions)."""

from __future__ import annotations

from bench import ingest


def test_ingest_bench_runs_and_reports_every_format():
    res = ingest.run(quick=True, samples=300)
    assert res["meta"]["samples"] == 300
    for fmt in ("csv", "labels", "json", "cobs"):
        cases = res[fmt]
        assert {"reference", "parser 4 KiB", "parser 64 KiB", "parser+batcher 4 KiB", "parser+batcher 64 KiB"} <= set(cases)
        for case in cases.values():
            assert {"seconds", "samples", "samples_per_s", "values_per_s", "vs_reference"} <= set(case)
            assert case["samples"] >= 299  # the parser drops the first (partial) line
    assert "csv" in ingest.table(res)


def test_main_table_carries_the_ingest_target_rows(monkeypatch):
    """`python -m bench` turns the ingest result into rows; CSV and COBS carry the
    >= 5 M values/s target (through parser and batcher, 64 KiB reads)."""
    import bench.__main__ as main

    real_run = ingest.run
    monkeypatch.setattr(ingest, "run", lambda quick: real_run(quick=True, samples=300))
    _res, rows, text = main._external("ingest", True)
    targeted = {r["metric"]: r for r in rows if r["target"]}
    assert set(targeted) == {"csv: parse+batch, 64 KiB reads", "cobs: parse+batch, 64 KiB reads"}
    for r in targeted.values():
        assert r["target"] == ">= 5 M" and isinstance(r["ok"], bool) and r["sensorstream"] > 0 and r["baseline"] > 0
    assert any(r["metric"] == "json: parse+batch, 64 KiB reads" and r["ok"] is None for r in rows)
    assert "parser+batcher 64 KiB" in text
