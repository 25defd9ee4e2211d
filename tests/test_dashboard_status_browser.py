"""The dashboard's status badges and its access-token message, in chromium.

A server runs in a thread of the test (tests/server_thread.py), so the test can
put streams into each status through the hub itself; the badges must then say
what the catalog says, and nothing may say LIVE once the server is gone.
Synchronisation is by bounded waits on page state, never by sleeps.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from sensorstream.protocol import Channel

from .server_thread import ServerThread
# The browser fixture, and the module's skip/fail rules for chromium and Playwright.
from .test_dashboard_browser import WAIT, Page, browser, sync_api  # noqa: F401

pytestmark = pytest.mark.browser


def _open(browser, url: str) -> Page:
    ctx = browser.new_context(viewport={"width": 1300, "height": 900})
    pg = Page(ctx.new_page())
    pg.page.goto(url)
    return pg


def _badge(pg: Page, sid: str):
    return pg.page.locator(f'[data-stream="{sid}"]').get_by_test_id("status")


def test_badges_say_live_stale_disconnected_failed_and_nothing_is_live_once_the_server_is_gone(browser):
    st = ServerThread(watch=None, simulate=True, heartbeat_s=0.5)
    st.__enter__()
    stopped = False
    try:
        pg = _open(browser, f"http://127.0.0.1:{st.port}/")
        pg.wait("sensorstream.state.conn === 'connected' && sensorstream.ids().includes('sim/env')")
        sync_api.expect(_badge(pg, "sim/env")).to_have_text("LIVE", timeout=WAIT)
        hub = st.server.hub

        def statuses():
            quiet = hub.add_stream("dev/quiet", [Channel("x")])
            hub.publish(quiet.key, 0, np.array([1.0]), np.zeros((1, 1), np.float32))
            gone = hub.add_stream("dev/gone", [Channel("x")])
            hub.update_stream(gone.key, status="disconnected")
            broken = hub.add_stream("dev/broken", [Channel("x")])
            hub.update_stream(broken.key, status="failed",
                              error="RuntimeError: the device answered something nobody expected, twice, at length")

        st.run_sync(statuses)
        sync_api.expect(_badge(pg, "dev/gone")).to_have_text("DISCONNECTED", timeout=WAIT)
        failed = _badge(pg, "dev/broken")
        sync_api.expect(failed).to_contain_text("FAILED: RuntimeError: the device answered", timeout=WAIT)
        sync_api.expect(failed).to_have_attribute("title", "The source stopped with an error: RuntimeError: the device "
                                                  "answered something nobody expected, twice, at length. The server restarts it.")
        # The server's own staleness rule (2 s without a batch), shown with the page's own age.
        sync_api.expect(_badge(pg, "dev/quiet")).to_have_text(re.compile(r"^STALE · no data for [2-9] s$"), timeout=WAIT)
        assert pg.page.locator('[data-stream="dev/quiet"]').get_attribute("data-status") == "stale"
        sync_api.expect(_badge(pg, "sim/env")).to_have_text("LIVE")

        st.__exit__(None, None, None)  # the server is gone
        stopped = True
        pg.wait("sensorstream.state.conn !== 'connected'")
        pg.wait("[...document.querySelectorAll('[data-testid=status]')].every(b => b.textContent === 'CONNECTION LOST')")
        texts = pg.js("[...document.querySelectorAll('[data-testid=status]')].map(b => b.textContent)")
        assert len(texts) >= 6 and "LIVE" not in texts
        assert "before the connection was lost" in _badge(pg, "sim/env").get_attribute("title")
    finally:
        if not stopped:
            st.__exit__(None, None, None)


def test_a_missing_or_wrong_token_is_said_instead_of_reconnecting_for_ever_and_no_sources_get_a_hint(browser):
    with ServerThread(watch=None, token="s3cret") as st:
        base = f"http://127.0.0.1:{st.port}/"
        pg = _open(browser, base)
        text = pg.page.get_by_test_id("conn-text")
        sync_api.expect(text).to_have_text("This server needs an access token: open the link with ?token=…", timeout=WAIT)
        sync_api.expect(pg.page.get_by_test_id("conn")).to_have_attribute("data-state", "unauthorized")
        # It stays said while the page keeps retrying in the background.
        pg.wait("sensorstream.conn.attempt >= 3")
        assert text.text_content().startswith("This server needs an access token")

        wrong = _open(browser, base + "?token=nope")
        sync_api.expect(wrong.page.get_by_test_id("conn-text")).to_contain_text("refused the access token", timeout=WAIT)

        right = _open(browser, base + "?token=s3cret")
        sync_api.expect(right.page.get_by_test_id("conn-text")).to_have_text("Connected", timeout=WAIT)
        empty = right.page.get_by_test_id("empty")
        sync_api.expect(empty).to_contain_text("no sources", timeout=WAIT)
        for flag in ("--simulate", "--serial", "--device"):
            assert flag in empty.text_content()


def test_ctrl_c_on_serve_with_a_dashboard_open_exits_at_once(browser):
    """The page keeps an idle HTTP keep-alive connection besides its WebSocket, and
    reconnects ~250 ms after a 1001. Shutdown waited for every TCP connection, so it
    took close_timeout + 1 s = 2.1 s; it waits for WebSocket closes only now."""
    import signal
    import time

    from .browser_util import ServerProcess

    srv = ServerProcess(["--simulate", "--log-level", "debug"]).start()  # debug: opens are logged
    try:
        pg = _open(browser, srv.url)
        pg.wait("sensorstream.state.conn === 'connected' && sensorstream.ids().length >= 3")
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGINT)
        rc = srv.proc.wait(10)
        elapsed = time.monotonic() - t0
        srv.wait(10)  # and its output read to the end
        assert rc == 0
        assert elapsed < 1.0, elapsed  # (typically 0.1-0.2 s, process exit included)
        log = "".join(srv.output).split("shutting down", 1)[1]
        assert ": open (session" not in log and "Traceback" not in log, log
        pg.wait("sensorstream.state.conn !== 'connected'")
    finally:
        srv.stop()
