"""Dashboard rendering benchmark in headless chromium.

    python -m bench.dashboard            # full: ~3 min
    python -m bench.dashboard --quick    # ~40 s
    python -m bench.dashboard --screenshots   # refresh docs/screenshots/*.png

Load: 16 channels x 1 kHz in one stream, 30 s window (30 000 samples per channel
on screen, 480 000 per frame). The load comes from the real server when it offers a
flag for it (``--simulate-wide C:RATE``); otherwise from the contract fake in
tests/browser_util.py, which speaks the same wire protocol (the result says which).

Measured, over a steady-state interval after warm-up:
* frame times: requestAnimationFrame deltas (p50, p99, fps)
* main-thread busy fraction: CDP ``Performance.getMetrics`` TaskDuration delta / wall time
  (also ScriptDuration); draw time per drawn frame from the page's own stats
* points drawn per second (path vertices handed to the canvas)
* JS heap (after a forced GC) early vs late, and the ring-buffer bytes
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from browser_util import ServerProcess, launch_chromium  # noqa: E402

CHANNELS, RATE_HZ, WINDOW_S = 16, 1000, 30
SHOTS = REPO / "docs" / "screenshots"


def _pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def server_has_flag(flag: str) -> bool:
    out = subprocess.run([sys.executable, "-m", "sensorstream", "serve", "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=30).stdout
    return flag in out


def load_server() -> tuple[ServerProcess, str]:
    if server_has_flag("--simulate-wide"):
        return ServerProcess(["--simulate-wide", f"{CHANNELS}:{RATE_HZ}"]), "sensorstream --simulate-wide"
    return ServerProcess(["--no-env", "--wide", f"{CHANNELS}:{RATE_HZ}"], fake=True), "contract fake (tests/browser_util.py)"


def _metrics(cdp) -> dict:
    return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}


def _heap(cdp, page) -> dict:
    cdp.send("HeapProfiler.collectGarbage")
    m = _metrics(cdp)
    return {"js_heap_used_mb": round(m["JSHeapUsedSize"] / 2**20, 2),
            "ring_buffer_mb": round(page.evaluate("sensorstream.bufferBytes()") / 2**20, 2)}


def run(quick: bool = False) -> dict:
    from playwright.sync_api import sync_playwright

    warmup, measure = (5, 10) if quick else (10, 30)
    heap_early_at, heap_late_at = (15, 35) if quick else (60, 180)
    srv, source = load_server()
    srv.start()
    try:
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            t_open = time.monotonic()
            page.goto(srv.url + f"?window={WINDOW_S}")
            page.wait_for_function("window.sensorstream && sensorstream.state.conn === 'connected'"
                                   " && sensorstream.ids().includes('sim/wide')", timeout=20_000)
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable", {"timeDomain": "threadTicks"})
            time.sleep(warmup)
            page.evaluate("sensorstream.resetStats()")
            m0, w0 = _metrics(cdp), time.monotonic()
            time.sleep(measure)
            m1, w1 = _metrics(cdp), time.monotonic()
            st = page.evaluate("""() => { const s = sensorstream.stats;
                return {frames: s.frames, framesDrawn: s.framesDrawn, chartsDrawn: s.chartsDrawn, pointsDrawn: s.pointsDrawn,
                        frameTimes: s.frameTimes.slice(), drawTimes: s.drawTimes.slice(), domTimes: s.domTimes.slice()}; }""")
            snap = page.evaluate("sensorstream.snapshot('sim/wide')")
            wall = w1 - w0
            ft, dt = st["frameTimes"], st["drawTimes"]
            result = {
                "source": source,
                "load": {"channels": snap["channels"].__len__(), "rate_hz": RATE_HZ, "window_s": WINDOW_S,
                         "samples_in_view_per_channel": int(min(snap["len"], WINDOW_S * RATE_HZ))},
                "measure_s": round(wall, 1),
                "fps": round(st["frames"] / wall, 1),
                "frame_ms_p50": round(_pct(ft, 50), 2), "frame_ms_p99": round(_pct(ft, 99), 2),
                "frames_drawn_per_s": round(st["framesDrawn"] / wall, 1),
                "draw_ms_p50": round(_pct(dt, 50), 2) if dt else None,
                "draw_ms_p99": round(_pct(dt, 99), 2) if dt else None,
                "draw_ms_mean": round(statistics.fmean(dt), 2) if dt else None,
                "points_drawn_per_s": int(st["pointsDrawn"] / wall),
                "main_thread_busy": round((m1["TaskDuration"] - m0["TaskDuration"]) / wall, 3),
                "script_busy": round((m1["ScriptDuration"] - m0["ScriptDuration"]) / wall, 3),
                "layout_style_busy": round((m1["LayoutDuration"] + m1["RecalcStyleDuration"]
                                            - m0["LayoutDuration"] - m0["RecalcStyleDuration"]) / wall, 3),
                "drops": snap["drops"],
            }
            time.sleep(max(0.0, heap_early_at - (time.monotonic() - t_open)))
            result["heap_early"] = {"at_s": heap_early_at, **_heap(cdp, page)}
            time.sleep(max(0.0, heap_late_at - (time.monotonic() - t_open)))
            result["heap_late"] = {"at_s": heap_late_at, **_heap(cdp, page)}
            result["page_errors"] = errors
            browser.close()
    finally:
        srv.stop()
    return result


def screenshots() -> list[str]:
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    written = []
    with ServerProcess(["--simulate", "--seed", "1", "--simulate-late", "bench/late:1"]) as srv, sync_playwright() as p:
        browser = launch_chromium(p)
        time.sleep(32)   # let the server's history cover a 30 s window
        for scheme in ("light", "dark"):
            for name, vp, mobile in (("wide", (1400, 900), False), ("narrow", (390, 844), True)):
                ctx = browser.new_context(viewport={"width": vp[0], "height": vp[1]}, color_scheme=scheme,
                                          is_mobile=mobile, device_scale_factor=2 if mobile else 1)
                page = ctx.new_page()
                page.goto(srv.url + "?window=30")
                page.wait_for_function("window.sensorstream && sensorstream.ids().length >= 4"
                                       " && sensorstream.ids().every(id => sensorstream.snapshot(id).len > 50)", timeout=20_000)
                if name == "wide":
                    box = page.get_by_test_id("stream-sim/imu").get_by_test_id("chart").bounding_box()
                    page.mouse.move(box["x"] + box["width"] * 0.72, box["y"] + box["height"] * 0.5)
                page.wait_for_timeout(400)
                path = SHOTS / f"dashboard-{name}-{scheme}.png"
                page.screenshot(path=str(path), full_page=False)
                written.append(str(path.relative_to(REPO)))
                ctx.close()
        browser.close()
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.dashboard")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--screenshots", action="store_true", help="write docs/screenshots/*.png instead")
    ap.add_argument("--out", type=Path, default=None, help="also write the result as JSON here")
    a = ap.parse_args(argv)
    if a.screenshots:
        print("\n".join(screenshots()))
        return 0
    res = run(quick=a.quick)
    text = json.dumps(res, indent=2)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
