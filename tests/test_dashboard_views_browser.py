"""The dashboard's views in a real browser: Spectrum, XY, Gauge, zoom, the layout in
the URL, the alert list and ad-hoc limits.

One real server (`serve --simulate --seed 1 --serial <pty> --config <alerts>`) and
one page are shared by the tests in file order. The pty is a fake serial device the
test writes CSV lines to (columns ch0, ch1); the config file puts a server-side
limit on its ch0. Synchronisation is by bounded waits on page state, as in
tests/test_dashboard_browser.py, whose harness this reuses.
"""

from __future__ import annotations

import math
import os
import time
import tty

import pytest

from .test_dashboard_browser import Page, ServerProcess, WsClient, browser, sync_api  # noqa: F401 (browser: a fixture)

pytestmark = pytest.mark.browser

IMU = "sim/imu"


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    os.close(slave)  # the server holds the slave side
    yield master, "serial/pts-" + path.rsplit("/", 1)[1], path
    os.close(master)


@pytest.fixture(scope="module")
def server(device, tmp_path_factory):
    cfg = tmp_path_factory.mktemp("cfg") / "alerts.toml"
    cfg.write_text('[[alerts]]\nstream = "serial/*"\nchannel = "ch0"\nabove = 5\nseverity = "critical"\nmessage = "ch0 too high"\n')
    srv = ServerProcess(["--simulate", "--seed", "1", "--serial", device[2], "--config", str(cfg)])
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def page(browser, server):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = Page(ctx.new_page())
    pg.page.goto(server.url)
    pg.wait("window.sensorstream && sensorstream.state.conn === 'connected' && sensorstream.ids().includes('sim/imu')")
    yield pg
    ctx.close()


def write(device, lines: list[str]) -> None:
    os.write(device[0], ("\n".join(lines) + "\n").encode())


def card(pg: Page, sid: str):
    return pg.page.get_by_test_id(f"stream-{sid}")


# --------------------------------------------------------------------------- spectrum


def test_the_spectrum_view_shows_the_simulators_known_frequencies(page):
    page.js("sensorstream.setViews('sim/imu', ['time', 'spectrum'])")
    # az is 9.81 + 0.2 sin(2π t / 0.25 s): 4 Hz; ax has a 2 s period: 0.5 Hz. 200 Hz sampling.
    page.wait("sensorstream.views('sim/imu').spectrum.nfft >= 1024", timeout=30_000)
    spec = page.js("sensorstream.views('sim/imu').spectrum")
    peaks = {p["channel"]: p["f"] for p in spec["peaks"]}
    assert abs(peaks["az"] - 4.0) < 2 * spec["df"], spec
    assert abs(peaks["ax"] - 0.5) < 2 * spec["df"], spec
    assert abs(spec["fs"] - 200) < 1 and spec["resampled"] is False
    assert "Welch" in spec["caption"] or spec["segs"] == 1
    # hover at 4 Hz: the readout names az's peak there
    canvas = card(page, IMU).get_by_test_id("spectrum")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    canvas.hover(position={"x": 50 + (4.0 / (spec["fs"] / 2)) * (box["width"] - 58), "y": box["height"] / 2})
    page.wait("sensorstream.views('sim/imu').spectrum.hoverPeaks.some(p => p.channel === 'az' && Math.abs(p.f - 4) < 0.3)")
    tip = card(page, IMU).get_by_test_id("spectrum-tip")
    sync_api.expect(tip).to_be_visible()
    sync_api.expect(tip.locator("[data-channel='az']")).to_contain_text("Hz")
    page.page.mouse.move(0, 0)
    card(page, IMU).get_by_test_id("spectrum-scale").click()
    assert page.js("sensorstream.views('sim/imu').spectrum.scale") == "lin"


def test_the_fft_finds_a_50_hz_sine_and_resamples_uneven_timestamps(page):
    """The page's own FFT module (the one the worker runs) on a 50 Hz sine at 1 kHz,
    evenly sampled and with ±0.3 ms of timestamp jitter."""
    res = page.js("""async () => {
        const m = await import('/fft.js');
        const out = [];
        for (const jitter of [0, 0.0003]) {
            const n = 8192, t = new Float64Array(n), v = new Float32Array(n);
            let seed = 1; const rnd = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
            for (let i = 0; i < n; i++) { t[i] = 1.7e9 + i / 1000 + (rnd() - 0.5) * 2 * jitter; v[i] = 3 + 2 * Math.sin(2 * Math.PI * 50 * t[i]); }
            const [s] = m.spectra(t, [v]);
            const k = m.peakIndex(s.amp);
            out.push({f: m.peakFrequency(s.amp, k, s.df), amp: s.amp[k], resampled: s.resampled, nfft: s.nfft, segs: s.segs, fs: s.fs});
        }
        return out;
    }""")
    even, uneven = res
    assert even["resampled"] is False and uneven["resampled"] is True
    for r in res:
        assert abs(r["f"] - 50) < 0.2 and r["nfft"] == 4096 and r["segs"] >= 2 and abs(r["fs"] - 1000) < 5, r
        assert 1.6 < r["amp"] < 2.05, r   # amplitude 2, less the Hann window's scalloping


# --------------------------------------------------------------------------- XY and gauge (the pty device)


def test_xy_of_sin_and_cos_is_a_circle(page, device):
    sid = device[1]
    write(device, ["junk"] + [f"{math.sin(2 * math.pi * i / 100):.5f},{math.cos(2 * math.pi * i / 100):.5f}" for i in range(400)])
    page.wait("id => sensorstream.ids().includes(id) && sensorstream.snapshot(id).len >= 400", sid)
    page.js("id => sensorstream.setViews(id, ['xy'])", sid)
    card(page, sid).get_by_test_id("xy-trail").select_option("30")   # a slow machine keeps the burst in the trail
    page.wait("id => (b => b && b.points >= 300)(sensorstream.views(id).xy.bbox)", sid)
    xy = page.js("id => sensorstream.views(id).xy", sid)
    assert (xy["x"], xy["y"]) == ("ch0", "ch1")
    # what was drawn: the bounding box of the trail's pixels, measured on the canvas
    ink = page.js("""id => {
        const c = document.querySelector(`[data-stream="${id}"] [data-testid="xy"]`), ctx = c.getContext('2d');
        const d = ctx.getImageData(0, 0, c.width, c.height).data;
        const sv = sensorstream.streams.get(id);
        const want = getComputedStyle(sv.swatches[1]).getPropertyValue('--sw');
        const p = new OffscreenCanvas(1, 1).getContext('2d'); p.fillStyle = want; p.fillRect(0, 0, 1, 1);
        const [r, g, b] = p.getImageData(0, 0, 1, 1).data;
        let x0 = 1e9, x1 = -1, y0 = 1e9, y1 = -1, n = 0;
        for (let y = 0; y < c.height; y++) for (let x = 0; x < c.width; x++) {
            const i = (y * c.width + x) * 4;
            if (Math.abs(d[i] - r) + Math.abs(d[i + 1] - g) + Math.abs(d[i + 2] - b) < 60) { n++; if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y; }
        }
        return {w: x1 - x0, h: y1 - y0, n, cw: c.width, ch: c.height};
    }""", sid)
    assert ink["n"] > 200 and ink["w"] > 0.3 * min(ink["cw"], ink["ch"]), ink
    assert abs(ink["w"] / ink["h"] - 1) < 0.1, ink


def test_gauges_show_the_last_sample_the_python_client_sees(page, server, device):
    sid = device[1]
    page.js("id => sensorstream.setViews(id, ['time', 'gauge'])", sid)
    client = WsClient(server.url)
    try:
        client.send({"type": "subscribe", "ref": 1, "streams": [sid]})
        write(device, ["1.25,-3.5", "2.0625,-0.015625"])
        last = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            m = client.recv(timeout=10)
            if "kind" in m and m["ts"]:
                last = [v[-1] for v in m["values"]]
                if last == [2.0625, -0.015625]:
                    break
        assert last == [2.0625, -0.015625]
    finally:
        client.close()
    page.wait("([id, want]) => (g => g.length === 2 && g.every((t, i) => t.value === want[i]))(sensorstream.views(id).gauge)", [sid, last])
    tiles = page.js("id => sensorstream.views(id).gauge", sid)
    assert [t["text"] for t in tiles] == ["2.0625", "-0.015625"]
    assert all("min" in t["minmax"] and "max" in t["minmax"] for t in tiles)


def test_a_server_alert_lists_colours_the_gauge_and_is_acknowledged(page, device):
    sid = device[1]
    write(device, ["9.5,0"])
    page.wait("id => sensorstream.alerts().alerts.some(a => a.stream === id && a.channel === 'ch0' && a.state === 'firing')", sid)
    page.wait("id => sensorstream.views(id).gauge[0].alert === 'critical'", sid)
    row = page.page.locator("[data-testid='alert-row'][data-state='firing']", has_text="ch0 too high").first
    sync_api.expect(row).to_contain_text(sid)
    sync_api.expect(row).to_contain_text("9.500")
    assert row.get_attribute("data-acked") == "false"
    row.get_by_test_id("ack").click()
    page.wait("id => sensorstream.alerts().alerts.some(a => a.stream === id && a.acked)", sid)
    write(device, ["0.5,0"])
    page.wait("id => sensorstream.alerts().alerts.every(a => a.stream !== id || a.state === 'resolved')", sid)
    page.wait("id => sensorstream.views(id).gauge[0].alert === null", sid)
    events = page.js("sensorstream.alerts().events")
    mine = [e["state"] for e in events if e["stream"] == sid and not e["local"]]
    assert mine[:2] == ["resolved", "firing"]


def test_an_ad_hoc_limit_fires_in_this_browser_only(page, device):
    sid = device[1]
    page.js("id => sensorstream.setLimit(id, 'ch1', 2, null)", sid)
    write(device, ["0,3.5"])
    page.wait("id => sensorstream.alerts().alerts.some(a => a.local && a.channel === 'ch1' && a.state === 'firing')", sid)
    page.wait("id => sensorstream.views(id).gauge[1].alert === 'warning'", sid)
    sync_api.expect(page.page.locator("[data-testid='alert-row']", has_text="this browser").first).to_be_visible()
    page.js("id => sensorstream.setLimit(id, 'ch1', null, null)", sid)
    page.wait("id => sensorstream.views(id).gauge[1].alert === null", sid)


# --------------------------------------------------------------------------- zoom


def test_drag_zooms_time_wheel_zooms_y_double_click_resets(page):
    sid = "sim/power"
    page.js("id => sensorstream.setViews(id, ['time'])", sid)
    page.js("sensorstream.resume()")
    page.wait("id => sensorstream.snapshot(id).len > 100", sid)
    canvas = card(page, sid).get_by_test_id("chart")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    before = page.js("id => sensorstream.snapshot(id).view", sid)
    full = before["tEnd"] - before["tStart"]
    y = box["y"] + box["height"] / 2
    page.page.mouse.move(box["x"] + box["width"] * 0.4, y)
    page.page.mouse.down()
    page.page.mouse.move(box["x"] + box["width"] * 0.55, y, steps=4)
    page.page.mouse.move(box["x"] + box["width"] * 0.7, y, steps=4)
    page.page.mouse.up()
    page.wait("id => sensorstream.views(id).zoom !== null", sid)
    assert page.js("sensorstream.state.paused") is True   # a zoomed time axis stands still
    page.wait("([id, full]) => (v => v.tEnd - v.tStart < 0.45 * full)(sensorstream.snapshot(id).view)", [sid, full])
    z = page.js("id => sensorstream.views(id).zoom", sid)
    assert 0.25 * full < z[1] - z[0] < 0.35 * full
    y0 = page.js("id => sensorstream.snapshot(id).yRange", sid)
    page.page.mouse.move(box["x"] + box["width"] / 2, y)
    page.page.mouse.wheel(0, -200)   # zoom in on Y
    page.wait("id => sensorstream.views(id).yZoom !== null", sid)
    page.wait("([id, r]) => (q => q[1] - q[0] < r[1] - r[0])(sensorstream.snapshot(id).yRange)", [sid, y0])
    canvas.dblclick(position={"x": box["width"] / 2, "y": box["height"] / 2})
    page.wait("id => sensorstream.views(id).zoom === null && sensorstream.views(id).yZoom === null", sid)
    page.wait("([id, full]) => (v => Math.abs(v.tEnd - v.tStart - full) < 0.05 * full)(sensorstream.snapshot(id).view)", [sid, full])
    page.js("sensorstream.resume()")


def test_a_two_finger_pinch_zooms_y(browser, server):
    ctx = browser.new_context(viewport={"width": 900, "height": 900}, has_touch=True)
    try:
        pg = Page(ctx.new_page())
        cdp = ctx.new_cdp_session(pg.page)
        pg.page.goto(server.url)
        pg.wait("window.sensorstream && sensorstream.ids().includes('sim/power') && sensorstream.snapshot('sim/power').len > 20")
        pg.js("sensorstream.setViews('sim/power', ['time'])")
        card(pg, "sim/power").get_by_test_id("chart").scroll_into_view_if_needed()
        # A chart draws (and learns its lanes, which the pinch zooms) only once it is
        # on screen: on a busy machine that frame may not have come yet.
        pg.wait("sensorstream.snapshot('sim/power').lanes.length > 0")
        # Where the fingers land, seen by the page.
        pg.js("""document.addEventListener('pointerdown', (e) => { window.__downs.push(e.target.dataset.testid ?? e.target.tagName); }, true)""")
        chart_centre = """(() => {
            const r = document.querySelector('[data-testid="stream-sim/power"] [data-testid="chart"]').getBoundingClientRect();
            return [r.left + r.width / 2, r.top + r.height / 2];
        })()"""
        # The page moves under the fingers now and then (an alert banner appearing at
        # the top, a card above growing its stats line, the browser scrolling to keep
        # its anchor: seen 20-190 px between measuring the chart and touching it). A
        # pinch with a finger off the chart is done again, from the chart's new place;
        # one with both fingers on the chart must zoom.
        for attempt in range(5):
            before = pg.js("sensorstream.snapshot('sim/power').yRange")
            pg.js("window.__downs = []")
            x, y = pg.js(chart_centre)
            points = lambda d: [{"x": x, "y": y - d, "id": 1}, {"x": x, "y": y + d, "id": 2}]  # noqa: E731
            cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": points(20)})
            for d in (25, 30, 35, 40):   # the fingers spread to twice their distance: half the Y range
                cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": points(d)})
            cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
            if pg.js("window.__downs") == ["chart", "chart"]:
                break
        else:
            raise AssertionError(f"five pinches landed off the chart (the last on {pg.js('window.__downs')!r})")
        pg.wait("sensorstream.views('sim/power').yZoom !== null")
        z = pg.js("sensorstream.views('sim/power').yZoom")["-1"]
        assert abs((z[1] - z[0]) / (before[1] - before[0]) - 0.5) < 0.05, (before, z)
        assert pg.js("sensorstream.views('sim/power').zoom") is None   # touch never drags the time axis
        assert pg.errors == []
    finally:
        ctx.close()


# --------------------------------------------------------------------------- layout in the URL


def test_the_url_round_trips_the_layout(page, browser, server):
    pg = page
    pg.js("sensorstream.setViews('sim/imu', ['spectrum', 'xy'])")
    pg.js("sensorstream.setViews('sim/power', ['time', 'gauge'])")
    pg.js("sensorstream.setHidden('sim/env', 'humidity', true)")
    pg.page.get_by_test_id("stream-sim/imu").get_by_test_id("xy-x").select_option("gx")
    pg.page.get_by_test_id("stream-sim/imu").get_by_test_id("xy-y").select_option("gy")
    pg.page.get_by_test_id("stream-sim/imu").get_by_test_id("xy-trail").select_option("10")
    pg.page.get_by_test_id("window-120").click()
    layout = pg.js("sensorstream.layout()")
    url = pg.page.url
    assert "layout=" in url and "window=120" in url
    # a fresh browser context: no localStorage, only the link
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        other = Page(ctx.new_page())
        other.page.goto(url)
        other.wait("window.sensorstream && ['sim/imu', 'sim/power', 'sim/env'].every(id => sensorstream.ids().includes(id))")
        other.wait("sensorstream.snapshot('sim/env').hidden.length === 1")
        assert other.js("sensorstream.views('sim/imu').views") == ["spectrum", "xy"]
        assert other.js("sensorstream.views('sim/power').views") == ["time", "gauge"]
        xy = other.js("sensorstream.views('sim/imu').xy")
        assert (xy["x"], xy["y"], xy["trail"]) == ("gx", "gy", 10)
        assert other.js("sensorstream.state.windowS") == 120
        assert other.js("sensorstream.snapshot('sim/env').hidden") == [1]
        assert other.js("sensorstream.layout()") == layout
        assert other.errors == []
    finally:
        ctx.close()


def test_no_console_errors(page):
    assert page.errors == []
