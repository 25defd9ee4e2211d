"""The dashboard in a real browser (Debian's chromium through Playwright).

One real server (`python -m sensorstream serve --simulate --seed 1 --simulate-late
sim/late:6`) and one page are shared by the tests in file order: the late stream
appears while the page is open, later tests pause, export, kill and restart the
server. The drop/gap rendering test uses the contract fake (tests/browser_util.py),
because it can inject sequence gaps and `dropped` messages on demand.

Synchronisation is by bounded waits on page state (`wait_for_function`), never
by fixed sleeps; the bounds are generous (a loaded 2-core machine) but finite.
Without /usr/bin/chromium (or Playwright) the module is skipped, except when
CI=true, where that is a failure.
"""

from __future__ import annotations

import csv
import io
import math
import os
import signal
import time

import numpy as np
import pytest

try:
    from .browser_util import ServerProcess, WsClient, chromium_session, require_browser
except ImportError:  # tests/ collected as a rootdir, not a package
    from browser_util import ServerProcess, WsClient, chromium_session, require_browser

pytestmark = pytest.mark.browser
sync_api = require_browser()

LATE_S = 6.0
WAIT = 15_000  # ms, default bound for page waits (generous: a loaded 2-core machine)
EXPECTED = {
    "sim/env": ["temperature", "humidity", "pressure"],
    "sim/imu": ["ax", "ay", "az", "gx", "gy", "gz"],
    "sim/power": ["voltage", "current"],
}


def _is_ws_noise(text: str) -> bool:
    # Chromium logs failed WebSocket handshakes itself while the server is down, and
    # the failed HEAD /metrics the page sends after each (asking whether a token is missing).
    return "WebSocket connection to" in text or text == "Failed to load resource: net::ERR_CONNECTION_REFUSED"


class Page:
    """A page plus everything it logged."""

    def __init__(self, page):
        self.page = page
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

    def js(self, expr, arg=None):
        return self.page.evaluate(expr, arg)

    def wait(self, expr, arg=None, timeout=WAIT):
        return self.page.wait_for_function(expr, arg=arg, timeout=timeout, polling=50)

    def lanes(self, stream_id: str) -> list[dict]:
        """Per lane of the chart: its channels, a hash of its pixels and how many
        pixels are (close to) its channel's colour, and how many are gap-shaded."""
        return self.js(LANES_JS, stream_id)

    def canvas_sum(self, stream_id: str) -> int:
        return self.js(
            """id => { const c = document.querySelector(`[data-stream="${id}"] canvas`);
                       const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                       let h = 0; for (let i = 0; i < d.length; i += 4) h = (h * 31 + d[i] + 3 * d[i + 1] + 7 * d[i + 2]) >>> 0;
                       return h; }""",
            stream_id,
        )


LANES_JS = """id => {
  const sv = sensorstream.streams.get(id), snap = sensorstream.snapshot(id), v = snap.view;
  const ctx = sv.canvas.getContext('2d');
  const rgb = (css) => { const c = new OffscreenCanvas(1, 1).getContext('2d'); c.fillStyle = css; c.fillRect(0, 0, 1, 1);
                         return c.getImageData(0, 0, 1, 1).data; };
  const cs = getComputedStyle(document.documentElement);
  const gapTint = (() => { const c = new OffscreenCanvas(1, 1).getContext('2d');
    c.fillStyle = cs.getPropertyValue('--card'); c.fillRect(0, 0, 1, 1); c.fillStyle = cs.getPropertyValue('--gap'); c.fillRect(0, 0, 1, 1);
    return c.getImageData(0, 0, 1, 1).data; })();
  return snap.lanes.map(l => {
    const d = ctx.getImageData(v.padL + 1, l.top + 1, v.pw - 2, l.height - 2).data;
    const cols = l.channels.map(n => rgb(sv.swatches[sv.channels.findIndex(c => c.name === n)].style.getPropertyValue('--sw')));
    let hash = 0, ink = 0, gapPx = 0;
    for (let i = 0; i < d.length; i += 4) {
      hash = (hash * 31 + d[i] + 3 * d[i + 1] + 7 * d[i + 2]) >>> 0;
      if (cols.some(c => Math.abs(c[0] - d[i]) + Math.abs(c[1] - d[i + 1]) + Math.abs(c[2] - d[i + 2]) < 90)) ink++;
      if (Math.abs(gapTint[0] - d[i]) + Math.abs(gapTint[1] - d[i + 1]) + Math.abs(gapTint[2] - d[i + 2]) < 6) gapPx++;
    }
    return {channels: l.channels, top: l.top, height: l.height, yRange: l.yRange, hash, ink, gap: gapPx};
  });
}"""


@pytest.fixture(scope="module")
def server():
    srv = ServerProcess(["--simulate", "--seed", "1", "--heartbeat", "1", "--simulate-late", f"sim/late:{LATE_S}"])
    srv.start()
    srv.started_at = time.time()
    yield srv
    srv.stop()


browser = pytest.fixture(scope="module", name="browser")(chromium_session)


def _wait_server_history(server, ids, seconds: float, timeout: float = 20.0) -> None:
    """Until the server's history of every stream in `ids` spans `seconds` (asked
    with a Python client, polled: there is no event for it)."""
    deadline = time.monotonic() + timeout
    while True:
        client = WsClient(server.url)
        try:
            keys = {s["key"]: s["id"] for s in client.hello["streams"] if s["id"] in ids}
            client.send({"type": "subscribe", "ref": "h", "streams": sorted(ids), "history_s": 60})
            span: dict[str, list[float]] = {}
            live: set[int] = set()
            while len(live) < len(keys):   # history comes first, then live, per stream
                m = client.recv(timeout=max(0.1, deadline - time.monotonic()))
                if "kind" in m and m["key"] in keys and m["ts"]:
                    if not m["flags"] & 1:
                        live.add(m["key"])
                    elif m["key"] not in live:
                        span.setdefault(keys[m["key"]], [m["ts"][0], 0.0])[1] = m["ts"][-1]
            if len(span) == len(keys) == len(ids) and all(v[1] - v[0] >= seconds for v in span.values()):
                return
        finally:
            client.close()
        if time.monotonic() > deadline:
            raise TimeoutError(f"server history did not reach {seconds} s within {timeout} s")
        time.sleep(0.2)   # poll interval, not synchronisation


@pytest.fixture(scope="module")
def page(browser, server):   # browser first: the page connects soon after the server starts
    ctx = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    pg = Page(ctx.new_page())
    # the page must connect when the server already has some history (history test)
    # but before the late stream appears (late-stream test)
    _wait_server_history(server, list(EXPECTED), 1.5)
    pg.page.goto(server.url)
    pg.wait("window.sensorstream && sensorstream.state.conn === 'connected'")
    pg.hello_at = time.time()
    yield pg
    ctx.close()


def _wait_data(pg: Page, ids, min_len=5):
    pg.wait(
        "([ids, n]) => ids.every(id => sensorstream.ids().includes(id) && sensorstream.snapshot(id).len >= n)",
        [list(ids), min_len],
    )


# --------------------------------------------------------------------------- tests


def test_catalog_charts_and_legends(page, server):
    _wait_data(page, EXPECTED)
    client = WsClient(server.url)
    try:
        catalog = {s["id"]: s for s in client.hello["streams"]}
    finally:
        client.close()
    for sid, names in EXPECTED.items():
        card = page.page.get_by_test_id(f"stream-{sid}")
        sync_api.expect(card).to_be_visible()
        sync_api.expect(card.get_by_test_id("status")).to_have_text("LIVE")
        # grouped by device
        device = catalog[sid]["device"]
        assert page.js("([d, id]) => !!document.querySelector(`section[data-device='${d}'] [data-stream='${id}']`)", [device, sid])
        for ch in catalog[sid]["channels"]:
            item = card.get_by_test_id(f"legend-{ch['name']}")
            sync_api.expect(item).to_contain_text(ch["name"])
            if ch["unit"]:
                sync_api.expect(item).to_contain_text(f"({ch['unit']})")
        assert [c["name"] for c in catalog[sid]["channels"]] == names
    # the canvas keeps changing while live
    before = page.canvas_sum("sim/imu")
    page.wait("([id, h]) => { const c = document.querySelector(`[data-stream='${id}'] canvas`);"
              " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
              " let x = 0; for (let i = 0; i < d.length; i += 4) x = (x * 31 + d[i] + 3 * d[i + 1] + 7 * d[i + 2]) >>> 0;"
              " return x !== h; }", ["sim/imu", before])
    assert page.js("sensorstream.stats.framesDrawn") > 0
    assert page.js("sensorstream.stats.pointsDrawn") > 0


def test_late_stream_appears_without_reload(page, server):
    hello_ids = page.js("sensorstream.state.helloStreams")
    if "sim/late" in hello_ids:
        pytest.skip("page connected after the late stream appeared (slow machine)")
    card = page.page.get_by_test_id("stream-sim/late")
    sync_api.expect(card).to_be_visible(timeout=LATE_S * 1000 + WAIT)
    _wait_data(page, ["sim/late"], 3)
    sync_api.expect(card.get_by_test_id("legend-temperature")).to_be_visible()
    assert page.js("performance.getEntriesByType('navigation').length") == 1  # no reload


def test_history_then_live_without_gap(page, server):
    _wait_data(page, EXPECTED, 50)
    stats = page.js("({r: sensorstream.stats.replayedBatches, b: sensorstream.stats.batches, d: sensorstream.stats.duplicates})")
    assert stats["r"] > 0, "the page should have been filled from history first"
    for sid in EXPECTED:
        snap = page.js("id => sensorstream.snapshot(id)", sid)
        # data from before the page connected, continuing to now
        assert snap["tFirst"] < page.hello_at - 0.5, (sid, snap["tFirst"], page.hello_at)
        assert snap["drops"] == 0 and snap["gaps"] == [], snap
        # no hole anywhere between history and live: max spacing ~ one sample period
        max_dt = page.js(
            """id => { const s = sensorstream.streams.get(id).series; let m = 0;
                       for (let i = 1; i < s.len; i++) m = Math.max(m, s.timeAt(i) - s.timeAt(i - 1)); return m; }""",
            sid,
        )
        assert max_dt < 2.5 / snap["rateHz"], (sid, max_dt)


def test_values_match_what_the_server_sent(page, server):
    client = WsClient(server.url)
    try:
        key = {s["id"]: s["key"] for s in client.hello["streams"]}["sim/imu"]
        client.send({"type": "subscribe", "ref": "t", "streams": ["sim/imu"], "history_s": 0})
        got = []
        deadline = time.monotonic() + 10
        while len(got) < 3 and time.monotonic() < deadline:
            m = client.recv()
            if "kind" in m and m["key"] == key and not m["flags"] & 1:
                got.append(m)
    finally:
        client.close()
    assert got
    for m in got:
        rec = page.wait("([id, s]) => sensorstream.recent(id, s)", ["sim/imu", m["seq"]]).json_value()
        assert rec["t"] == m["ts"][-1]
        assert rec["values"] == [ch[-1] for ch in m["values"]]  # float32, bit for bit
        # and inside the ring, at that time
        smp = page.js("([id, t]) => sensorstream.sampleAt(id, t)", ["sim/imu", m["ts"][0]])
        assert smp["t"] == m["ts"][0] and smp["values"] == [ch[0] for ch in m["values"]]
    # legend numbers are the latest values (4 significant digits), within the last few batches
    page.wait("sensorstream.snapshot('sim/env').latestSeq !== null")
    texts, recents = page.js(
        """() => { const sv = sensorstream.streams.get('sim/env');
                   const t = sv.channels.map(c => document.querySelector(`[data-stream='sim/env'] [data-testid='latest-${c.name}']`).textContent);
                   return [t, [...sv.recent.values()].slice(-20).map(r => r.values)]; }"""
    )
    for c, text in enumerate(texts):
        shown = float(text)
        assert any(math.isclose(shown, r[c], rel_tol=2e-3, abs_tol=2e-3) for r in recents), (c, text, recents[-3:])


def test_split_lanes_for_different_scales(page, server):
    """sim/env (°C ~22, % ~45, hPa ~1013) starts split into one lane per channel,
    each with its own Y range; same-unit or similar-scale streams stay on one axis."""
    pg = page.page
    _wait_data(page, EXPECTED, 20)
    page.wait("['sim/env', 'sim/imu', 'sim/power'].every(id => sensorstream.snapshot(id).split !== null)")
    env = page.js("sensorstream.snapshot('sim/env')")
    assert env["split"] is True and env["splitByUser"] is False
    assert [ln["channels"] for ln in env["lanes"]] == [["temperature"], ["humidity"], ["pressure"]]
    for ln, value in zip(env["lanes"], env["latest"]):
        lo, hi = ln["yRange"]
        assert lo <= value <= hi and hi - lo < 50, (ln, value)   # its own scale, not 20..1015
    tops = [ln["top"] for ln in env["lanes"]]
    assert tops == sorted(tops) and all(a["top"] + a["height"] < b["top"] for a, b in zip(env["lanes"], env["lanes"][1:]))
    for sid in ("sim/imu", "sim/power"):
        assert page.js("id => sensorstream.snapshot(id)", sid)["split"] is False, sid
        assert len(page.js("id => sensorstream.snapshot(id).lanes", sid)) == 1
    card = pg.get_by_test_id("stream-sim/env")
    sync_api.expect(card.get_by_test_id("split")).to_have_attribute("aria-pressed", "true")
    sync_api.expect(card.get_by_test_id("y-mode")).to_be_disabled()   # lanes always autoscale
    # every lane shows its channel's trace, and every lane scrolls while live
    page.wait("id => sensorstream.snapshot(id).lanes.length === 3", "sim/env")
    before = page.lanes("sim/env")
    assert all(ln["ink"] > 50 for ln in before), before
    page.wait(f"([id, h]) => ({LANES_JS})(id).every((l, i) => l.hash !== h[i])", ["sim/env", [ln["hash"] for ln in before]])
    # hiding a channel removes its lane; showing it brings it back
    card.get_by_test_id("legend-humidity").get_by_role("button").click()
    page.wait("sensorstream.snapshot('sim/env').lanes.map(l => l.channels[0]).join() === 'temperature,pressure'")
    assert all(ln["ink"] > 50 for ln in page.lanes("sim/env"))
    card.get_by_test_id("legend-humidity").get_by_role("button").click()
    page.wait("sensorstream.snapshot('sim/env').lanes.length === 3")
    # hover: one cursor, the tooltip lists every channel
    box = card.get_by_test_id("chart").bounding_box()
    pg.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5)
    tip = card.get_by_test_id("tooltip")
    sync_api.expect(tip).to_contain_text("humidity")
    sync_api.expect(tip).to_contain_text("hPa")
    pg.mouse.move(0, 0)
    sync_api.expect(tip).to_be_hidden()
    # the button turns it off (and the user's choice sticks): one shared axis again
    card.get_by_test_id("split").click()
    sync_api.expect(card.get_by_test_id("split")).to_have_attribute("aria-pressed", "false")
    page.wait("(s => s.lanes.length === 1 && s.yRange[1] > 500 && s.yRange[0] < 50)(sensorstream.snapshot('sim/env'))")
    assert page.js("sensorstream.snapshot('sim/env').splitByUser") is True
    # and imu can be split by hand: six lanes, each with ink
    pg.get_by_test_id("stream-sim/imu").get_by_test_id("split").click()
    page.wait("sensorstream.snapshot('sim/imu').lanes.length === 6")
    page.js("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    assert all(ln["ink"] > 50 for ln in page.lanes("sim/imu")), page.lanes("sim/imu")
    pg.get_by_test_id("stream-sim/imu").get_by_test_id("split").click()
    page.wait("sensorstream.snapshot('sim/imu').lanes.length === 1")


def test_controls_window_pause_hide_yfix_hover(page, server):
    pg = page.page
    card = pg.get_by_test_id("stream-sim/env")
    # time window
    for s in (5, 120, 30):
        pg.get_by_test_id(f"window-{s}").click()
        sync_api.expect(pg.get_by_test_id(f"window-{s}")).to_have_attribute("aria-checked", "true")
        page.wait("s => { const v = sensorstream.snapshot('sim/env').view; return Math.abs(v.tEnd - v.tStart - s) < 1e-6; }", s)
    # pause: data keeps arriving, picture frozen; resume shows it
    pg.get_by_test_id("pause").click()
    sync_api.expect(pg.get_by_test_id("pause")).to_have_attribute("aria-pressed", "true")
    page.js("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    frozen = page.canvas_sum("sim/imu")
    len0 = page.js("sensorstream.snapshot('sim/imu').tLast")
    page.wait("t => sensorstream.snapshot('sim/imu').tLast > t + 0.5", len0)
    assert page.canvas_sum("sim/imu") == frozen
    pg.get_by_test_id("pause").click()
    page.wait("t => sensorstream.snapshot('sim/imu').view.tEnd > t + 0.4", len0)
    assert page.canvas_sum("sim/imu") != frozen
    # hide pressure (1013 hPa): the autoscaled range drops to the other channels (shared axis:
    # the split test above turned sim/env's lanes off; run alone, this turns them off)
    if page.js("sensorstream.snapshot('sim/env').split"):
        card.get_by_test_id("split").click()
        page.wait("sensorstream.snapshot('sim/env').lanes.length === 1")
    assert page.js("sensorstream.snapshot('sim/env').split") is False
    assert page.js("sensorstream.snapshot('sim/env').yRange[1]") > 500
    card.get_by_test_id("legend-pressure").get_by_role("button").click()
    sync_api.expect(card.get_by_test_id("legend-pressure").get_by_role("button")).to_have_attribute("aria-pressed", "false")
    page.wait("sensorstream.snapshot('sim/env').yRange[1] < 500")
    # fixed Y range
    card.get_by_test_id("y-mode").click()
    sync_api.expect(card.get_by_test_id("y-min")).to_be_visible()
    card.get_by_test_id("y-min").fill("-10")
    card.get_by_test_id("y-max").fill("150")
    card.get_by_test_id("y-max").press("Enter")
    page.wait("(() => { const r = sensorstream.snapshot('sim/env').yRange; return r[0] === -10 && r[1] === 150; })()")
    card.get_by_test_id("y-mode").click()
    sync_api.expect(card.get_by_test_id("y-min")).to_be_hidden()
    card.get_by_test_id("legend-pressure").get_by_role("button").click()
    # hover shows the values at that time
    box = card.get_by_test_id("chart").bounding_box()
    pg.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] / 2)
    tip = card.get_by_test_id("tooltip")
    sync_api.expect(tip).to_be_visible()
    sync_api.expect(tip).to_contain_text("temperature")
    sync_api.expect(tip).to_contain_text("hPa")
    pg.mouse.move(0, 0)
    sync_api.expect(tip).to_be_hidden()


def test_csv_export_matches_chart(page, server, tmp_path):
    """The CSV button downloads the window on screen from the server (GET /export,
    full rate): exactly the samples the chart holds for that window."""
    pg = page.page
    # A full 5 s window to export (run first, the server may be younger than that).
    page.wait("(() => { const s = sensorstream.snapshot('sim/imu'); return s.len > 0 && s.tLast - s.tFirst > 5.5; })()")
    pg.get_by_test_id("window-5").click()
    pg.get_by_test_id("pause").click()   # a fixed view: button and hook export the same samples
    try:
        with pg.expect_download() as dl:
            pg.get_by_test_id("stream-sim/imu").get_by_test_id("export-csv").click()
        path = tmp_path / "imu.csv"
        dl.value.save_as(path)
        text = path.read_text(encoding="utf-8")
        rows = list(csv.reader(io.StringIO(text)))
        assert rows[0][0].startswith("# sensorstream /export of stream sim/imu")
        assert rows[1] == ["time_iso", "time_unix", "ax (m/s²)", "ay (m/s²)", "az (m/s²)", "gx (deg/s)", "gy (deg/s)", "gz (deg/s)"]
        body = rows[2:]
        # The same samples as the page's own buffer for that window (its CSV, the fallback).
        local = list(csv.reader(io.StringIO(page.js("sensorstream.exportCsv('sim/imu')"))))[1:]
        assert len(body) == len(local)
        assert all(abs(float(a[1]) - float(b[1])) < 2e-6 and [np.float32(x) for x in a[2:]] == [np.float32(x) for x in b[2:]] for a, b in zip(body, local))
        view = page.js("sensorstream.snapshot('sim/imu').view")
        assert len(body) > 0.8 * 5 * 200, len(body)  # ~5 s at 200 Hz
        import datetime as dt

        for r in body[:: max(1, len(body) // 40)]:
            t = float(r[1])
            iso = dt.datetime.fromisoformat(r[0].replace("Z", "+00:00")).timestamp()
            assert abs(iso - t) < 2e-6
            assert view["tStart"] - 1e-6 <= t <= view["tEnd"] + 1e-6
            smp = page.js("([t]) => sensorstream.sampleAt('sim/imu', t)", [t])
            assert abs(smp["t"] - t) < 1e-6
            # 9 significant digits read back as the very value in the chart's buffer
            assert page.js("([s, v]) => s.every((x, i) => Math.fround(Number(x)) === v[i])", [r[2:], smp["values"]])
    finally:
        pg.get_by_test_id("pause").click()
        pg.get_by_test_id("window-30").click()


def test_narrow_and_dark(page, server, browser):
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark", is_mobile=True)
    pg = Page(ctx.new_page())
    try:
        pg.page.goto(server.url)
        _wait_data(pg, EXPECTED)
        assert pg.js("document.documentElement.scrollWidth") <= 390
        assert pg.js("sensorstream.ids().every(id => { const c = document.querySelector(`[data-stream='${id}']`).getBoundingClientRect(); return c.width <= 390 && c.width > 300; })")
        pg.wait("(() => { const c = document.querySelector(\"[data-stream='sim/imu'] canvas\"); const d = c.getContext('2d').getImageData(2, 2, 1, 1).data; return d[0] + d[1] + d[2] < 150; })()")
        assert not [e for e in pg.errors if not _is_ws_noise(e)], pg.errors
    finally:
        ctx.close()


def test_no_console_errors_while_healthy(page):
    assert page.errors == [], page.errors


def test_dead_server_detected_by_silence(page, server):
    # SIGSTOP: the socket stays open but nothing arrives -> 2.5 x heartbeat_s of silence.
    hb = page.js("sensorstream.state.heartbeatS")
    connects = page.js("sensorstream.state.connects")
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        # The page's own silence so far (a loaded machine may have starved the
        # server a while before the stop), then the silence up to detection.
        silent = page.js("performance.now() - sensorstream.conn.lastRx") / 1000
        t1 = time.monotonic()
        page.wait("sensorstream.state.conn !== 'connected'", timeout=int((2.5 * hb + 3) * 1000))
        assert time.monotonic() - t1 + silent >= 2.5 * hb - 0.1  # not declared dead early
        sync_api.expect(page.page.get_by_test_id("conn-text")).to_contain_text("attempt")
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    page.wait("n => sensorstream.state.conn === 'connected' && sensorstream.state.connects > n", connects, timeout=15_000)
    # same server: the refill from its history is seamless, seq continues without loss
    t = page.js("sensorstream.snapshot('sim/imu').tLast")
    page.wait("t => sensorstream.snapshot('sim/imu').tLast > t + 0.5", t)
    for sid in EXPECTED:
        snap = page.js("id => sensorstream.snapshot(id)", sid)
        assert snap["gaps"] == [] and snap["drops"] == 0 and snap["outages"] == 0, snap


def test_server_restart_reconnects_and_refills(page, server):
    connects = page.js("sensorstream.state.connects")
    page.errors.clear()
    server.stop()   # SIGKILL
    page.wait("sensorstream.state.conn === 'reconnecting' && sensorstream.state.attempt >= 1")
    sync_api.expect(page.page.get_by_test_id("conn")).to_have_attribute("data-state", "reconnecting")
    sync_api.expect(page.page.get_by_test_id("conn-text")).to_contain_text("Reconnecting (attempt")
    down_at = time.time()
    server.start()   # same port
    page.wait("n => sensorstream.state.conn === 'connected' && sensorstream.state.connects > n", connects, timeout=20_000)
    page.wait("t => sensorstream.snapshot('sim/imu').tLast > t + 1", down_at, timeout=WAIT)
    sync_api.expect(page.page.get_by_test_id("conn-text")).to_have_text("Connected")
    snap = page.js("sensorstream.snapshot('sim/imu')")
    # the outage is marked as a gap; data from before it is kept
    assert snap["tFirst"] < down_at - 1
    assert any(g[0] <= down_at <= g[1] + 0.5 for g in snap["gaps"]), snap["gaps"]
    assert page.js("performance.getEntriesByType('navigation').length") == 1
    assert not [e for e in page.errors if not _is_ws_noise(e)], page.errors


def test_drops_and_seq_gaps_are_marked(browser):
    # The contract fake skips one sim/env (and sim/wide) seq every 20 batches and
    # announces a dropped sim/power batch every 30.
    with ServerProcess(["--skip-every", "20", "--dropped-every", "30", "--wide", "3:1000"], fake=True) as srv:
        ctx = browser.new_context(viewport={"width": 1200, "height": 800})
        pg = Page(ctx.new_page())
        try:
            pg.page.goto(srv.url)
            pg.wait("sensorstream.ids().length >= 3 && sensorstream.snapshot('sim/env').drops >= 1"
                    " && sensorstream.snapshot('sim/power').drops >= 1", timeout=15_000)
            for sid in ("sim/env", "sim/power"):
                snap = pg.js("id => sensorstream.snapshot(id)", sid)
                assert snap["gaps"], snap
                sync_api.expect(pg.page.get_by_test_id(f"stream-{sid}").get_by_test_id("drops")).to_contain_text("dropped")
            assert pg.js("sensorstream.snapshot('sim/imu').drops") == 0
            # split into lanes: gap marks and traces in every lane, for a sparse view (env,
            # 10 Hz: canvas paths) and a dense one (wide, 1 kHz: min/max columns, JS raster)
            pg.wait("sensorstream.snapshot('sim/wide').gaps.length >= 1 && (v => sensorstream.snapshot('sim/wide').len > 2 * v.pw)"
                    "(sensorstream.snapshot('sim/wide').view)", timeout=WAIT)
            for sid in ("sim/env", "sim/wide"):
                pg.js("id => sensorstream.setSplit(id, true)", sid)
                n = len(pg.js("id => sensorstream.snapshot(id).channels", sid))
                pg.wait("([id, n]) => sensorstream.snapshot(id).lanes.length === n", [sid, n])
                pg.wait(f"id => ({LANES_JS})(id).every(l => l.gap > 20 && l.ink > 50)", sid, timeout=WAIT)
            assert not [e for e in pg.errors if not _is_ws_noise(e)], pg.errors
        finally:
            ctx.close()
