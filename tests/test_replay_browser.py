"""The dashboard's playback timeline in real chromium against a real replay process:
shown only on a replay server, and its controls pause, speed up and seek the replay
(checked over the wire with an independent client)."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

from sensorstream.protocol import Channel, StreamInfo, encode_batch
from sensorstream.recording.writer import RecordingWriter

try:
    from .browser_util import ServerProcess, WsClient, chromium_session, require_browser
except ImportError:  # tests/ collected as a rootdir, not a package
    from browser_util import ServerProcess, WsClient, chromium_session, require_browser

pytestmark = pytest.mark.browser
sync_api = require_browser()

WAIT = 15_000
T0 = time.time() - 3600  # an hour-old recording: replay shows its own times
SPAN = 120.0


class ReplayProcess(ServerProcess):
    def __init__(self, path, *args):
        super().__init__([str(path), *args])

    def command(self):
        return [sys.executable, "-m", "sensorstream", "replay", *self.args, "--host", "127.0.0.1", "--port", str(self.port)]


@pytest.fixture(scope="module")
def recording_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("rec") / "bench-run.mcap"
    info = StreamInfo(1, "lab/imu", (Channel("ax", "m/s²"), Channel("ay", "m/s²")), 100.0, device="lab")
    with open(path, "wb") as f:
        w = RecordingWriter(f)
        for i in range(int(SPAN * 10)):  # 10 batches of 10 samples a second
            t = T0 + i * 0.1 + np.arange(10) * 0.01
            v = np.vstack([np.sin(t), np.cos(t)]).astype(np.float32)
            w.write(info, i, float(t[-1]), encode_batch(1, i, t, v), time.time())
        w.close()
    return path


browser = pytest.fixture(scope="module", name="browser")(chromium_session)


def status(url) -> dict:
    c = WsClient(url)
    try:
        c.send({"type": "playback", "ref": "t", "action": "status"})
        while True:
            m = c.recv(timeout=10)
            if isinstance(m, dict) and m.get("type") == "playback" and m.get("ref") == "t":
                return m["state"]
    finally:
        c.close()


def test_timeline_controls_the_replay(browser, recording_file):
    with ReplayProcess(recording_file) as srv:
        ctx = browser.new_context(viewport={"width": 1200, "height": 800})
        pg = ctx.new_page()
        errors = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        try:
            pg.goto(srv.url)
            tl = pg.get_by_test_id("timeline")
            sync_api.expect(tl).to_be_visible(timeout=WAIT)
            sync_api.expect(pg.get_by_test_id("playback-file")).to_have_text("bench-run.mcap")
            # Data flows with the recording's own timestamps.
            pg.wait_for_function("window.sensorstream && sensorstream.ids().includes('lab/imu') && sensorstream.snapshot('lab/imu').len > 20", timeout=WAIT)
            t_last = pg.evaluate("sensorstream.snapshot('lab/imu').tLast")
            assert T0 <= t_last <= T0 + SPAN

            pg.get_by_test_id("playback-toggle").click()
            sync_api.expect(tl).to_have_attribute("data-paused", "true", timeout=WAIT)
            assert status(srv.url)["paused"] is True
            sync_api.expect(pg.get_by_test_id("playback-toggle")).to_have_text("Play")

            pg.get_by_test_id("playback-speed").select_option("2")
            sync_api.expect(tl).to_have_attribute("data-speed", "2", timeout=WAIT)
            assert status(srv.url)["speed"] == 2

            pg.get_by_test_id("playback-seek").fill("750")  # three quarters in
            pg.wait_for_function(f"Math.abs(sensorstream.playbackPosition() - {T0 + 0.75 * SPAN}) < 1.5", timeout=WAIT)
            st = status(srv.url)
            assert st["position"] == pytest.approx(T0 + 0.75 * SPAN, abs=1.5) and st["paused"]

            pg.get_by_test_id("playback-toggle").click()
            sync_api.expect(tl).to_have_attribute("data-paused", "false", timeout=WAIT)
            # After the seek the chart shows data from there on.
            pg.wait_for_function(f"sensorstream.snapshot('lab/imu').tLast > {T0 + 0.75 * SPAN}", timeout=WAIT)
            assert not errors, errors
        finally:
            ctx.close()


def test_no_timeline_on_a_live_server(browser):
    with ServerProcess(["--simulate"]) as srv:
        ctx = browser.new_context()
        pg = ctx.new_page()
        try:
            pg.goto(srv.url)
            pg.wait_for_function("window.sensorstream && sensorstream.state.conn === 'connected' && sensorstream.ids().length === 3", timeout=WAIT)
            # The status request was answered not_replay (consumed: no notice shown).
            pg.wait_for_function("sensorstream.playbackChecked()", timeout=WAIT)
            sync_api.expect(pg.get_by_test_id("timeline")).to_be_hidden()
            sync_api.expect(pg.get_by_test_id("notice")).to_be_hidden()
        finally:
            ctx.close()
