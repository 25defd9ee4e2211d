"""The dashboard across server restarts and reconnects, in a real browser: keys are
not trusted across connections, and streams resume by (epoch, seq).

Fails (not skips) under CI=true without chromium, like tests/test_dashboard_browser.py."""

from __future__ import annotations

import pytest

from .browser_util import ServerProcess, require_browser

pytestmark = pytest.mark.browser

require_browser()  # fails under CI=true without chromium or playwright, skips elsewhere

IDS = ["sim/env", "sim/imu", "sim/power"]
WAIT = 20_000


from .test_dashboard_browser import browser  # noqa: E402,F401  (the module-scoped chromium fixture)


def _open(browser, url):
    ctx = browser.new_context(viewport={"width": 1200, "height": 800})
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    return ctx, page, errors


def _reconnected_after(page, act):
    """Once every stream has data: `act()` (which breaks the connection), then wait for the next hello."""
    page.wait_for_function("ids => ids.every(id => sensorstream.ids().includes(id) && sensorstream.snapshot(id).len > 5)",
                           arg=IDS, timeout=WAIT, polling=100)
    connects = page.evaluate("sensorstream.state.connects")
    act()
    page.wait_for_function("n => sensorstream.state.connects > n && sensorstream.state.conn === 'connected'",
                           arg=connects, timeout=WAIT, polling=100)


def _all_advance(page, timeout=WAIT):
    """Every stream's newest sample moves on by a second from now."""
    t = page.evaluate("ids => Object.fromEntries(ids.map(id => [id, sensorstream.snapshot(id).tLast]))", IDS)
    page.wait_for_function("([ids, t]) => ids.every(id => sensorstream.snapshot(id).tLast > t[id] + 1)",
                           arg=[IDS, t], timeout=timeout, polling=100)


def test_a_restarted_server_that_hands_out_other_keys_leaves_no_card_frozen(browser):
    """The bug: after a restart `sim/env` got another stream's key, and its chart
    stopped for good while its badge said LIVE."""
    srv = ServerProcess(["--keys", "1,2,3", "--epoch", "a"], fake=True)
    srv.start()
    ctx, page, errors = _open(browser, srv.url)
    try:
        def restart():
            srv.stop()
            srv.args = ["--keys", "3,1,2", "--epoch", "b"]   # every key now belongs to another stream
            srv.start()

        _reconnected_after(page, restart)
        _all_advance(page)
        keys = page.evaluate("ids => ids.map(id => sensorstream.snapshot(id).key)", IDS)
        assert keys == [3, 1, 2]
        for sid in IDS:
            snap = page.evaluate("id => sensorstream.snapshot(id)", sid)
            assert snap["outages"] >= 1 and snap["gaps"], snap  # the restart is marked, not hidden
        assert not errors, errors
    finally:
        ctx.close()
        srv.stop()


def test_a_reconnect_to_the_same_server_resumes_without_a_gap(browser):
    srv = ServerProcess(["--simulate", "--seed", "1", "--heartbeat", "1"])
    srv.start()
    ctx, page, errors = _open(browser, srv.url)
    try:
        _reconnected_after(page, lambda: page.evaluate("sensorstream.conn.ws.close()"))   # the network drops it
        _all_advance(page)
        for sid in IDS:
            snap = page.evaluate("id => sensorstream.snapshot(id)", sid)
            assert snap["gaps"] == [] and snap["drops"] == 0 and snap["outages"] == 0, snap
        assert page.evaluate("sensorstream.stats.duplicates") == 0
        assert not errors, errors
    finally:
        ctx.close()
        srv.stop()
