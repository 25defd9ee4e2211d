"""The benchmark suite: one command, one table, one JSON file.

    python -m bench                  # everything, ~13 minutes
    python -m bench --quick          # smaller and shorter, a smoke run of the method
    python -m bench --only fanout,latency
    python -m bench --skip dashboard

Every figure is printed absolute and as a ratio against a baseline measured in
the same run (for the server benches: the `websockets` library's broadcast()
serving the same frames to the same clients; for ingest: bench/ingest.py's own
reference parsers). On a shared, noisy machine the absolute numbers drift from
run to run; the ratios are what to compare. Results go to bench/results/latest.json
(and are described in docs/performance.md).

Benches: fanout, latency (with spread and isolation), memory, reclaim, storm
(server, this suite), ingest (bench/ingest.py) and dashboard (bench/dashboard.py), the
last two run if they import, their failures reported in the table.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from .common import CLIENT_CPU, REPO, pin, raise_nofile, row

SERVER_BENCHES = ("fanout", "latency", "memory", "reclaim", "storm")
EXTERNAL = ("ingest", "serial_ports", "dashboard")
ALL = SERVER_BENCHES + EXTERNAL
OUT = REPO / "bench" / "results" / "latest.json"


def machine() -> dict:
    def first(path, key):
        try:
            for line in open(path):
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
        except OSError:
            return None

    versions = {}
    for mod in ("trio", "trio_websocket", "wsproto", "websockets", "numpy", "h11"):
        try:
            versions[mod] = getattr(importlib.import_module(mod), "__version__", "?")
        except ImportError:
            versions[mod] = None
    return {
        "cpu": first("/proc/cpuinfo", "model name"), "cpus": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_mb": int(first("/proc/meminfo", "MemTotal").split()[0]) // 1024 if first("/proc/meminfo", "MemTotal") else None,
        "kernel": platform.release(), "python": platform.python_version(), "versions": versions,
        "loadavg_start": os.getloadavg(),
    }


def _external(name: str, quick: bool) -> tuple[dict, list[dict], str]:
    """bench/ingest.py and bench/dashboard.py belong to other parts of the project: run
    them as they are, keep their result, and turn what we recognise into table rows."""
    mod = importlib.import_module(f"bench.{name}")
    res = mod.run(quick)
    text = ""
    if hasattr(mod, "table"):
        try:
            text = mod.table(res)
        except Exception as e:  # their table, their format: never lose the run over it
            text = f"(bench.{name}.table failed: {e!r})"
    rows = []
    if name == "ingest":
        for fmt, cases in res.items():
            if fmt == "meta" or not isinstance(cases, dict) or "reference" not in cases:
                continue
            ref = cases["reference"].get("samples_per_s")
            parsers = {k: v for k, v in cases.items() if k != "reference" and isinstance(v, dict) and "samples_per_s" in v}
            if not parsers:
                continue
            sec = "ingest, 6 channels (bench/ingest.py; baseline: its line-by-line reference)"
            # The target's figure (see bench/ingest.py): channel values/s through parser and
            # batcher at 64 KiB reads; CSV and binary (COBS) carry the >= 5 M target.
            case = parsers.get("parser+batcher 64 KiB")
            if case is not None:
                ref_v = cases["reference"].get("values_per_s")
                v = case["values_per_s"]
                target = fmt in ("csv", "cobs")
                rows.append(row(sec, f"{fmt}: parse+batch, 64 KiB reads", v, ref_v, ">= 5 M" if target else "",
                                (v >= 5e6) if target else None, "values/s", ratio_value=case.get("vs_reference")))
                rows.append(row(sec, f"{fmt}: same, records (rows)", case["samples_per_s"], ref, "", None, "rows/s",
                                ratio_value=case.get("vs_reference")))
            small = parsers.get("parser+batcher 4 KiB")
            if small is not None:
                rows.append(row(sec, f"{fmt}: parse+batch, 4 KiB reads", small["values_per_s"],
                                cases["reference"].get("values_per_s"), "", None, "values/s", ratio_value=small.get("vs_reference")))
    elif name == "serial_ports":
        sec = "16 ptys at 921,600 baud (baseline: a bare reader of the same ptys)"
        rows.append(row(sec, "lines lost (of %d)" % res["lines_written"], res["lines_lost"], None, "0", res["lines_lost"] == 0, "lines"))
        rows.append(row(sec, "server CPU", res["server_cpu_pct"], res["baseline_reader_cpu_pct"], "", None, "% core"))
    elif name == "dashboard":
        live, base = res.get("live") or {}, res.get("blank_page") or {}
        sec = "dashboard, 16 ch x 1 kHz, 30 s window (baseline: blank page)"
        for key, label, unit, target, ok in (
            ("fps", "frames per second", "fps", ">= 58", lambda v: v >= 58),
            ("main_thread_pct", "main thread busy", "% core", "< 25", lambda v: v < 25),
        ):
            v = live.get(key)
            if v is not None:
                rows.append(row(sec, label, v, base.get(key), target, ok(v), unit))
        spec = res.get("live_spectrum") or {}
        sec = "dashboard + 16 spectra of 4,096 points at 10 Hz (baseline: time chart only, same run)"
        for key, label, unit, target, ok in (
            ("fps", "frames per second", "fps", ">= 57", lambda v: v >= 57),
            ("main_thread_pct", "main thread busy", "% core", "<= 30", lambda v: v <= 30),
            ("spectra_per_s", "spectra per second", "1/s", "", None),
        ):
            v = spec.get(key)
            if v is not None:
                rows.append(row(sec, label, v, live.get(key), target, ok(v) if ok else None, unit))
    return res, rows, text


def _fmt(x, unit: str = "") -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int) and not isinstance(x, bool):
        return f"{x:d}"
    if abs(x) >= 100_000:
        return f"{x / 1e6:.3g} M" if abs(x) >= 1e6 else f"{x / 1e3:.0f} k"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}" if abs(x) >= 0.1 or x == 0 else f"{x:.3f}"


def table(rows: list[dict]) -> str:
    head = f"{'metric':52s} {'unit':>9s} {'sensorstream':>12s} {'baseline':>10s} {'ratio':>6s}  {'target':>18s} {'met':>4s}"
    lines = [head, "-" * len(head)]
    section = None
    for r in rows:
        if r["section"] != section:
            section = r["section"]
            lines.append(f"[{section}]")
        met = "" if r["ok"] is None else ("yes" if r["ok"] else "NO")
        if r.get("error"):
            lines.append(f"  {r['metric']}: ERROR {r['error']}")
            continue
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(f"  {r['metric'][:50]:50s} {r['unit']:>9s} {_fmt(r['sensorstream']):>12s} {_fmt(r['baseline']):>10s} {ratio:>6s}  {r['target']:>18s} {met:>4s}")
    return "\n".join(lines)


def _jsonable(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o).__name__)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller and shorter (about a minute)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: checks the machinery, not the figures")
    ap.add_argument("--only", default="", help=f"comma-separated subset of {','.join(ALL)}")
    ap.add_argument("--skip", default="", help="comma-separated benches to leave out")
    ap.add_argument("--out", default=str(OUT), help="JSON output path")
    a = ap.parse_args(argv)
    size = "smoke" if a.smoke else "quick" if a.quick else "full"
    chosen = [b for b in (a.only.split(",") if a.only else ALL) if b and b not in a.skip.split(",")]
    unknown = set(chosen) - set(ALL)
    if unknown:
        ap.error(f"unknown bench(es): {', '.join(sorted(unknown))}")

    pin(CLIENT_CPU)  # the harness mostly sleeps; keep it off the server's core
    raise_nofile()
    started = time.time()
    result: dict = {"size": size, "machine": machine(), "benches": {}, "durations_s": {}, "rows": [], "texts": {}}
    for name in chosen:
        t0 = time.time()
        print(f"# {name} ...", file=sys.stderr, flush=True)
        try:
            if name in SERVER_BENCHES:
                mod = importlib.import_module(f"bench.{name}")
                res = mod.run(size)
                rows = mod.rows(res)
            else:
                res, rows, text = _external(name, size != "full")
                if text:
                    result["texts"][name] = text
        except Exception as e:
            traceback.print_exc()
            res = {"error": f"{type(e).__name__}: {e}"}
            rows = [{**row(name, name, None, None), "error": res["error"]}]
        result["benches"][name] = res
        result["rows"].extend(rows)
        result["durations_s"][name] = round(time.time() - t0, 1)
    result["machine"]["loadavg_end"] = os.getloadavg()
    result["total_s"] = round(time.time() - started, 1)
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")

    print(table(result["rows"]))
    for name, text in result["texts"].items():
        print(f"\n[{name}: its own table]\n{text}")
    print(f"\n{size} run, {result['total_s']:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in result['durations_s'].items())}); "
          f"load average {result['machine']['loadavg_start'][0]:.2f} -> {result['machine']['loadavg_end'][0]:.2f}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=_jsonable))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
