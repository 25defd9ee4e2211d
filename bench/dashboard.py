"""Dashboard rendering benchmark in headless chromium, against the real server.

    python -m bench.dashboard            # full: ~4 min
    python -m bench.dashboard --quick    # ~1 min
    python -m bench.dashboard --json     # the result dict instead of the table
    python -m bench.dashboard --screenshots   # refresh docs/screenshots/*.png (the views' too)

Load: ``sensorstream serve --simulate-wide 16:1000`` (stream ``sim/wide``: 16
channels x 1 kHz), 30 s window, so 480 000 values on screen per frame once the
window is full. Measuring starts only when the page holds a full window.

The machine is small and shared, so every figure comes with a baseline measured in
the same run, on the same browser:

* ``blank_page``: a page that only runs a requestAnimationFrame loop (no data),
  measured before the dashboard opens and again at the end: what "60 fps, idle"
  looks like on this machine right now.
* ``paused``: the dashboard with the load, paused: it receives, decodes and buffers
  every batch but draws nothing, i.e. the ingest cost.
* ``live``: the dashboard drawing (shared Y axis, the default for sim/wide).
* ``live_split``: the same with the chart split into 16 lanes.
* ``live_spectrum``: the card showing Time and Spectrum together: a 4,096-point
  spectrum of every channel (Welch, up to 8 segments) refreshed at 10 Hz, computed
  in the page's Web Worker; ``live`` (time only) is its baseline, measured in
  alternating rounds. ``spectra_per_s`` counts spectra (one per channel) received.

Live and paused alternate in rounds so they share the machine's load.

Figures per phase: requestAnimationFrame deltas (fps, p50, p99), main-thread busy
(CDP ``Performance.getMetrics`` TaskDuration delta / wall time, % of one core; also
ScriptDuration), chart redraws/s and draw time per redraw (the page's own stats),
points handed to the rasteriser per second, samples received per second.
Memory: JS heap after a forced GC at ~1 min and later, ring-buffer bytes.

``run(quick)`` returns ``{"meta": {...}, phase: {figure: number|None}, ...,
"memory": {...}, "vs_baseline": {...}}``: every value is a scalar, every phase has
the same keys, so a harness can table it (``table()`` does).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from browser_util import ServerProcess, launch_chromium  # noqa: E402

CHANNELS, RATE_HZ, WINDOW_S = 16, 1000, 30
STREAM = "sim/wide"
VIEWPORT = {"width": 1400, "height": 900}
SHOTS = REPO / "docs" / "screenshots"
TARGET_FPS, TARGET_MAIN_PCT, HEAP_FLAT_MB = 60, 25.0, 1.0

PHASE_KEYS = ("seconds", "fps", "frame_ms_p50", "frame_ms_p99", "main_thread_pct", "script_pct",
              "redraws_per_s", "draw_ms_p50", "draw_ms_p99", "points_per_s", "samples_per_s", "spectra_per_s")
TARGET_SPECTRUM_MAIN_PCT = 30.0

BLANK_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>blank</title></head>
<body style="margin:0;background:#f3f5f8"><script>
window.__ft = []; let last = 0;
function tick(now) { requestAnimationFrame(tick); if (last) window.__ft.push(now - last); last = now; }
requestAnimationFrame(tick);
</script></body></html>"""


def _pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def _r(x, nd=2):
    return None if x is None else round(x, nd)


def _ratio(a, b, nd=2):
    return None if a is None or not b else round(a / b, nd)


def _metrics(cdp) -> dict:
    return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}


class _Phase:
    """Accumulates one kind of phase over several measured intervals."""

    def __init__(self):
        self.wall = self.task = self.script = 0.0
        self.frames = self.redraws = self.points = self.samples = self.spectra = 0
        self.frame_ms: list[float] = []
        self.draw_ms: list[float] = []

    def add(self, wall, m0, m1, frame_ms, draw_ms=(), frames=None, redraws=0, points=0, samples=0, spectra=0):
        self.spectra += spectra
        self.wall += wall
        self.task += m1["TaskDuration"] - m0["TaskDuration"]
        self.script += m1["ScriptDuration"] - m0["ScriptDuration"]
        self.frames += len(frame_ms) + 1 if frames is None else frames
        self.frame_ms += frame_ms
        self.draw_ms += draw_ms
        self.redraws += redraws
        self.points += points
        self.samples += samples

    def figures(self, dashboard: bool) -> dict:
        w = self.wall or float("nan")
        out = dict.fromkeys(PHASE_KEYS)
        out.update({
            "seconds": _r(self.wall, 1),
            "fps": _r(self.frames / w, 1),
            "frame_ms_p50": _r(_pct(self.frame_ms, 50)), "frame_ms_p99": _r(_pct(self.frame_ms, 99)),
            "main_thread_pct": _r(100 * self.task / w, 1), "script_pct": _r(100 * self.script / w, 1),
        })
        if dashboard:
            out.update({
                "redraws_per_s": _r(self.redraws / w, 1),
                "draw_ms_p50": _r(_pct(self.draw_ms, 50)), "draw_ms_p99": _r(_pct(self.draw_ms, 99)),
                "points_per_s": int(self.points / w), "samples_per_s": int(self.samples / w),
                "spectra_per_s": _r(self.spectra / w, 1),
            })
        return out


def _blank(browser, seconds: float, phase: _Phase) -> None:
    page = browser.new_page(viewport=VIEWPORT)
    try:
        page.set_content(BLANK_PAGE)
        cdp = page.context.new_cdp_session(page)
        cdp.send("Performance.enable", {"timeDomain": "threadTicks"})
        page.wait_for_function("window.__ft.length > 60", timeout=20_000)   # ~1 s of frames: warmed up
        page.evaluate("window.__ft.length = 0")
        m0, w0 = _metrics(cdp), time.monotonic()
        time.sleep(seconds)
        m1, w1 = _metrics(cdp), time.monotonic()
        phase.add(w1 - w0, m0, m1, page.evaluate("window.__ft.slice()"))
    finally:
        page.close()


def _interval(page, cdp, seconds: float, phase: _Phase) -> None:
    """Measure the dashboard page for `seconds` (stats reset at the start)."""
    page.evaluate("sensorstream.resetStats(); window.__s0 = sensorstream.stats.samples;"
                  " window.__sp0 = sensorstream.spectrumStats.results")
    m0, w0 = _metrics(cdp), time.monotonic()
    time.sleep(seconds)
    m1, w1 = _metrics(cdp), time.monotonic()
    st = page.evaluate("""() => { const s = sensorstream.stats;
        return {frames: s.frames, redraws: s.chartsDrawn, points: s.pointsDrawn, samples: s.samples - window.__s0,
                spectra: sensorstream.spectrumStats.results - window.__sp0,
                frameTimes: s.frameTimes.slice(), drawTimes: s.drawTimes.slice()}; }""")
    # spectra: one result per refresh covers every channel of the card
    phase.add(w1 - w0, m0, m1, st["frameTimes"], st["drawTimes"], frames=st["frames"], redraws=st["redraws"],
              points=st["points"], samples=st["samples"], spectra=st["spectra"] * CHANNELS)


def _heap(cdp, page) -> tuple[float, float]:
    cdp.send("HeapProfiler.collectGarbage")
    m = _metrics(cdp)
    return round(m["JSHeapUsedSize"] / 2**20, 2), round(page.evaluate("sensorstream.bufferBytes()") / 2**20, 2)


def _settle(page) -> None:
    """Two animation frames: the page has drawn the state it was just put in."""
    page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def run(quick: bool = False, soak_minutes: float | None = None) -> dict:
    """Measure; see the module docstring. ~1 min quick, ~4 min full.

    soak_minutes: take the late heap reading that many minutes after the page opened
    (the early one stays at 1 min), e.g. 10 for "memory after 10 min vs after 1 min"."""
    from playwright.sync_api import sync_playwright

    blank_s = 4 if quick else 8
    rounds, live_s, paused_s, split_s = (1, 8, 4, 5) if quick else (3, 8, 4, 10)
    heap_early_at = None if quick else 60.0     # s after the page opened; quick: right after measuring
    heap_late_after = 12 if quick else 120      # s after the early reading
    if soak_minutes:
        heap_early_at = 60.0
        heap_late_after = max(0.0, soak_minutes * 60 - heap_early_at)
    blank, paused, live, split, spectrum = _Phase(), _Phase(), _Phase(), _Phase(), _Phase()
    srv = ServerProcess(["--simulate-wide", f"{CHANNELS}:{RATE_HZ}"])
    srv.start()
    t_server = time.monotonic()
    errors: list[str] = []
    try:
        with sync_playwright() as p:
            browser = launch_chromium(p)
            version = browser.version
            _blank(browser, blank_s, blank)           # while the server's history fills
            page = browser.new_page(viewport=VIEWPORT)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            t_open = time.monotonic()
            page.goto(srv.url + f"?window={WINDOW_S}")
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable", {"timeDomain": "threadTicks"})
            # measure only with a full window on screen (the server started just before us)
            page.wait_for_function(
                "([id, w]) => window.sensorstream && sensorstream.state.conn === 'connected' && sensorstream.ids().includes(id)"
                " && (s => s.len > 0 && s.tLast - s.tFirst >= w)(sensorstream.snapshot(id))",
                arg=[STREAM, WINDOW_S], timeout=int((WINDOW_S + 60) * 1000), polling=500)
            fill_s = time.monotonic() - t_server
            snap = page.evaluate(f"sensorstream.snapshot('{STREAM}')")
            for _ in range(rounds):   # live and paused alternate: they share the machine's load
                page.evaluate("sensorstream.resume()")
                _settle(page)
                _interval(page, cdp, live_s, live)
                page.evaluate("sensorstream.pause()")
                _settle(page)
                _interval(page, cdp, paused_s, paused)
                page.evaluate("sensorstream.resume()")
                page.evaluate(f"sensorstream.setViews('{STREAM}', ['time', 'spectrum'])")
                page.wait_for_function(f"sensorstream.views('{STREAM}').spectrum.nfft === 4096", timeout=20_000)
                _settle(page)
                _interval(page, cdp, live_s, spectrum)
                spec_snap = page.evaluate(f"sensorstream.views('{STREAM}').spectrum")
                page.evaluate(f"sensorstream.setViews('{STREAM}', ['time'])")
            page.evaluate("sensorstream.resume()")
            page.evaluate(f"sensorstream.setSplit('{STREAM}', true)")
            _settle(page)
            _interval(page, cdp, split_s, split)
            lanes = len(page.evaluate(f"sensorstream.snapshot('{STREAM}').lanes"))
            page.evaluate(f"sensorstream.setSplit('{STREAM}', false)")
            if heap_early_at is not None:
                time.sleep(max(0.0, heap_early_at - (time.monotonic() - t_open)))
            early_at = time.monotonic() - t_open
            heap_early, ring_early = _heap(cdp, page)
            time.sleep(heap_late_after)
            late_at = time.monotonic() - t_open
            heap_late, ring_late = _heap(cdp, page)
            end = page.evaluate(f"sensorstream.snapshot('{STREAM}')")
            page.close()
            _blank(browser, blank_s, blank)           # and again at the end
            browser.close()
    finally:
        srv.stop()

    res_blank, res_paused = blank.figures(False), paused.figures(True)
    res_live, res_split = live.figures(True), split.figures(True)
    res_spectrum = spectrum.figures(True)
    in_view = min(snap["len"], WINDOW_S * RATE_HZ) * CHANNELS
    res = {
        "meta": {
            "quick": quick, "source": f"sensorstream serve --simulate-wide {CHANNELS}:{RATE_HZ}",
            "stream": STREAM, "channels": len(snap["channels"]), "rate_hz": RATE_HZ, "window_s": WINDOW_S,
            "values_in_view": in_view, "viewport": f"{VIEWPORT['width']}x{VIEWPORT['height']}",
            "split_lanes": lanes, "chromium": version, "cpus": _cpus(), "window_full_after_s": round(fill_s, 1),
            "drops": end["drops"], "page_errors": len(errors), "errors": "; ".join(errors[:5]),
            "target_fps": TARGET_FPS, "target_main_thread_pct": TARGET_MAIN_PCT,
            "target_spectrum_main_thread_pct": TARGET_SPECTRUM_MAIN_PCT,
            "spectrum": f"N={spec_snap.get('nfft')}, Welch x{spec_snap.get('segs')}, {spec_snap.get('computeMs', 0):.1f} ms "
                        f"in the worker per refresh of {CHANNELS} channels",
        },
        "blank_page": res_blank, "paused": res_paused, "live": res_live, "live_split": res_split, "live_spectrum": res_spectrum,
        "memory": {
            "heap_early_at_s": round(early_at), "js_heap_early_mb": heap_early,
            "heap_late_at_s": round(late_at), "js_heap_late_mb": heap_late,
            "js_heap_growth_mb": round(heap_late - heap_early, 2),
            "ring_buffer_mb": ring_late, "ring_buffer_growth_mb": round(ring_late - ring_early, 2),
        },
    }
    res["vs_baseline"] = {
        # frame pacing against an empty page on the same machine at the same time
        "frame_p50_live_vs_blank": _ratio(res_live["frame_ms_p50"], res_blank["frame_ms_p50"]),
        "frame_p99_live_vs_blank": _ratio(res_live["frame_ms_p99"], res_blank["frame_ms_p99"]),
        "fps_live_vs_blank": _ratio(res_live["fps"], res_blank["fps"]),
        # main thread: what drawing adds on top of receiving (paused) and of an idle page
        "main_pct_live_minus_blank": _r(res_live["main_thread_pct"] - res_blank["main_thread_pct"], 1),
        "main_pct_live_minus_paused": _r(res_live["main_thread_pct"] - res_paused["main_thread_pct"], 1),
        "main_pct_split_vs_live": _ratio(res_split["main_thread_pct"], res_live["main_thread_pct"]),
        # decimation: values on screen per redraw vs points handed to the rasteriser
        "values_per_point": _ratio(in_view * (res_live["redraws_per_s"] or 0), res_live["points_per_s"], 0),
        "samples_received_vs_sent": _ratio(res_live["samples_per_s"], RATE_HZ, 3),
        "meets_fps": bool(res_live["fps"] and res_live["fps"] >= 0.95 * TARGET_FPS),
        "meets_main_thread": bool(res_live["main_thread_pct"] is not None and res_live["main_thread_pct"] < TARGET_MAIN_PCT),
        "memory_flat": abs(heap_late - heap_early) < HEAP_FLAT_MB and ring_late == ring_early,
        # Time + Spectrum against time only, same run, alternating rounds
        "fps_spectrum_vs_live": _ratio(res_spectrum["fps"], res_live["fps"]),
        "main_pct_spectrum_minus_live": _r(res_spectrum["main_thread_pct"] - res_live["main_thread_pct"], 1),
        "main_pct_spectrum_vs_live": _ratio(res_spectrum["main_thread_pct"], res_live["main_thread_pct"]),
        "spectrum_meets_fps": bool(res_spectrum["fps"] and res_spectrum["fps"] >= 0.95 * TARGET_FPS),
        "spectrum_meets_main_thread": bool(res_spectrum["main_thread_pct"] is not None
                                           and res_spectrum["main_thread_pct"] <= TARGET_SPECTRUM_MAIN_PCT),
    }
    return res


def _cpus() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 0


def table(res: dict) -> str:
    phases = [k for k in ("blank_page", "paused", "live", "live_split", "live_spectrum") if k in res]
    cols = [("seconds", "s", "{:.0f}"), ("fps", "fps", "{:.1f}"), ("frame_ms_p50", "frame p50", "{:.2f}"),
            ("frame_ms_p99", "frame p99", "{:.2f}"), ("main_thread_pct", "main %", "{:.1f}"),
            ("script_pct", "script %", "{:.1f}"), ("redraws_per_s", "redraw/s", "{:.1f}"),
            ("draw_ms_p50", "draw p50", "{:.2f}"), ("draw_ms_p99", "draw p99", "{:.2f}"),
            ("points_per_s", "points/s", "{:,}"), ("samples_per_s", "samples/s", "{:,}"), ("spectra_per_s", "spectra/s", "{:.1f}")]
    lines = [f"{'phase':13s}" + "".join(f"{h:>11s}" for _, h, _f in cols)]
    for ph in phases:
        row = res[ph]
        lines.append(f"{ph:13s}" + "".join(f"{'–' if row[k] is None else f.format(row[k]):>11s}" for k, _h, f in cols))
    m, mem, vs = res["meta"], res["memory"], res["vs_baseline"]
    lines += [
        f"memory: JS heap after GC {mem['js_heap_early_mb']} MB at {mem['heap_early_at_s']} s -> "
        f"{mem['js_heap_late_mb']} MB at {mem['heap_late_at_s']} s; ring buffers {mem['ring_buffer_mb']} MiB "
        f"(growth {mem['ring_buffer_growth_mb']})",
        "vs baseline: " + ", ".join(f"{k} {v}" for k, v in vs.items()),
        f"({m['source']}: {m['channels']} ch x {m['rate_hz']} Hz, {m['window_s']} s window = {m['values_in_view']:,} values "
        f"in view; {m['viewport']}; {m['cpus']} CPUs; chromium {m['chromium']}; drops {m['drops']}; "
        f"page errors {m['page_errors']})",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- screenshots


def screenshots() -> list[str]:
    """docs/screenshots/dashboard-{wide,narrow}-{light,dark}.png (+ dashboard-{wide,narrow}.png = light)
    against ``serve --simulate``, once the 30 s window is full of history."""
    import shutil

    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    written = []
    full = "(w) => window.sensorstream && sensorstream.ids().length >= 3 && sensorstream.ids().every(id =>" \
           " (s => s.len > 0 && s.tLast - s.tFirst >= w)(sensorstream.snapshot(id)))"
    with ServerProcess(["--simulate", "--seed", "1"]) as srv, sync_playwright() as p:
        browser = launch_chromium(p)
        for scheme in ("light", "dark"):
            for name, vp, mobile in (("wide", (1400, 900), False), ("narrow", (390, 844), True)):
                ctx = browser.new_context(viewport={"width": vp[0], "height": vp[1]}, color_scheme=scheme,
                                          is_mobile=mobile, has_touch=mobile, device_scale_factor=2 if mobile else 1)
                page = ctx.new_page()
                page.goto(srv.url + "?window=30")
                # history covers the window (waits ~30 s for the first shot only)
                page.wait_for_function(full, arg=30, timeout=90_000, polling=500)
                if name == "wide":
                    box = page.get_by_test_id("stream-sim/imu").get_by_test_id("chart").bounding_box()
                    page.mouse.move(box["x"] + box["width"] * 0.72, box["y"] + box["height"] * 0.5)
                    page.get_by_test_id("stream-sim/imu").get_by_test_id("tooltip").wait_for(state="visible")
                page.wait_for_function("document.querySelector('#conn-text').textContent === 'Connected'")
                _settle(page)
                path = SHOTS / f"dashboard-{name}-{scheme}.png"
                page.screenshot(path=str(path), full_page=False)
                written.append(str(path.relative_to(REPO)))
                if scheme == "light":   # README's names
                    alias = SHOTS / f"dashboard-{name}.png"
                    shutil.copyfile(path, alias)
                    written.append(str(alias.relative_to(REPO)))
                ctx.close()
        browser.close()
    return written


def view_screenshots() -> list[str]:
    """docs/screenshots/view-{spectrum,xy,gauge-alerts,zoom}.png: one card per view
    (element screenshots) against ``serve --simulate``, light scheme."""
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    written = []
    with ServerProcess(["--simulate", "--seed", "3"]) as srv, sync_playwright() as p:
        browser = launch_chromium(p)
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, color_scheme="light")
        page = ctx.new_page()
        page.goto(srv.url + "?window=30")
        page.wait_for_function("window.sensorstream && ['sim/imu', 'sim/power', 'sim/env'].every(id => sensorstream.ids().includes(id))"
                               " && sensorstream.snapshot('sim/imu').tLast - sensorstream.snapshot('sim/imu').tFirst > 12", timeout=60_000, polling=500)

        def shot(locator, name):
            _settle(page)
            path = SHOTS / f"view-{name}.png"
            locator.screenshot(path=str(path))
            written.append(str(path.relative_to(REPO)))

        imu = page.get_by_test_id("stream-sim/imu")
        page.evaluate("sensorstream.setViews('sim/imu', ['time', 'spectrum'])")
        page.wait_for_function("sensorstream.views('sim/imu').spectrum.nfft >= 2048", timeout=30_000)
        canvas = imu.get_by_test_id("spectrum")
        canvas.scroll_into_view_if_needed()
        box = canvas.bounding_box()
        fs = page.evaluate("sensorstream.views('sim/imu').spectrum.fs")
        canvas.hover(position={"x": 50 + (4.0 / (fs / 2)) * (box["width"] - 58), "y": box["height"] * 0.4})
        page.wait_for_function("sensorstream.views('sim/imu').spectrum.hoverPeaks.length > 0")
        shot(imu, "spectrum")
        page.mouse.move(0, 0)
        page.evaluate("sensorstream.setViews('sim/imu', ['xy'])")
        imu.get_by_test_id("xy-x").select_option("ax")
        imu.get_by_test_id("xy-y").select_option("gx")
        imu.get_by_test_id("xy-trail").select_option("5")
        page.wait_for_function("(b => b && b.points > 100)(sensorstream.views('sim/imu').xy.bbox)")
        shot(imu, "xy")
        page.evaluate("sensorstream.setViews('sim/imu', ['time'])")
        power = page.get_by_test_id("stream-sim/power")
        page.evaluate("sensorstream.setViews('sim/power', ['time', 'gauge'])")
        # the power simulator's current spikes fire its example alert every few seconds
        page.wait_for_function("sensorstream.views('sim/power').gauge.some(g => g.alert === 'critical')", timeout=120_000, polling=20)
        # just the alert list and this card, in one column
        page.evaluate("for (const id of ['sim/env', 'sim/imu']) document.querySelector(`[data-stream='${id}']`).hidden = true;"
                      " document.querySelector('.cards').style.gridTemplateColumns = '680px'")
        _settle(page)
        path = SHOTS / "view-gauge-alerts.png"
        page.screenshot(path=str(path), full_page=True, clip=_union(page, ["[data-testid='alerts']", "[data-stream='sim/power']"]))
        written.append(str(path.relative_to(REPO)))
        page.evaluate("for (const id of ['sim/env', 'sim/imu']) document.querySelector(`[data-stream='${id}']`).hidden = false;"
                      " document.querySelector('.cards').style.gridTemplateColumns = ''")
        env = page.get_by_test_id("stream-sim/env")
        chart = env.get_by_test_id("chart")
        chart.scroll_into_view_if_needed()
        b = chart.bounding_box()
        page.mouse.move(b["x"] + b["width"] * 0.55, b["y"] + b["height"] / 2)
        page.mouse.down()
        page.mouse.move(b["x"] + b["width"] * 0.9, b["y"] + b["height"] / 2, steps=5)
        page.mouse.up()
        page.wait_for_function("sensorstream.views('sim/env').zoom !== null")
        env.get_by_test_id("zoom-badge").wait_for(state="visible")
        page.wait_for_timeout(600)   # the legend's window statistics refresh twice a second
        shot(env, "zoom")
        browser.close()
    return written


def _union(page, selectors: list[str]) -> dict:
    scroll = page.evaluate("[scrollX, scrollY]")   # full-page clips are in page coordinates
    boxes = [page.locator(s).first.bounding_box() for s in selectors]
    boxes = [{**b, "x": b["x"] + scroll[0], "y": b["y"] + scroll[1]} for b in boxes]
    x0, y0 = min(b["x"] for b in boxes), min(b["y"] for b in boxes)
    x1, y1 = max(b["x"] + b["width"] for b in boxes), max(b["y"] + b["height"] for b in boxes)
    return {"x": x0 - 4, "y": y0 - 4, "width": x1 - x0 + 8, "height": y1 - y0 + 8}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="~1 min instead of ~4")
    ap.add_argument("--soak-minutes", type=float, default=None, help="late heap reading this many minutes after opening (e.g. 10)")
    ap.add_argument("--json", action="store_true", help="print the result dict as JSON")
    ap.add_argument("--screenshots", action="store_true", help="write docs/screenshots/*.png instead")
    ap.add_argument("--out", type=Path, default=None, help="also write the result as JSON here")
    a = ap.parse_args(argv)
    if a.screenshots:
        print("\n".join(screenshots() + view_screenshots()))
        return 0
    res = run(quick=a.quick, soak_minutes=a.soak_minutes)
    text = json.dumps(res, indent=2)
    print(text if a.json else table(res))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
