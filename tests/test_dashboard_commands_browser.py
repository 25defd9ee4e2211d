"""The dashboard's command box in a real browser: the send box (line ending remembered,
hex mode, history with ↑/↓), the console pane, the profile's buttons and sliders,
and a page without the control token being refused.

One real server (`serve --simulate --serial <pty> --control-token tok`) and one page
opened with `?control_token=tok`, shared by the tests in file order. The pty is a
fake serial device: the test reads what the dashboard sent from its master side and
writes the device's replies into it. Waits are bounded waits on page state.
"""

from __future__ import annotations

import os
import select
import time
import tty

import pytest

from .test_dashboard_browser import WAIT, Page, ServerProcess, browser, sync_api  # noqa: F401 (browser: a fixture)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def device():
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    os.close(slave)  # the server holds the slave side
    os.set_blocking(master, False)
    yield master, "serial/pts-" + path.rsplit("/", 1)[1], path
    os.close(master)


@pytest.fixture(scope="module")
def server(device):
    srv = ServerProcess(["--simulate", "--seed", "1", "--serial", device[2], "--control-token", "tok"])
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def page(browser, server, device):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = Page(ctx.new_page())
    pg.page.goto(server.url + "?control_token=tok")
    pg.wait("([id]) => window.sensorstream && sensorstream.state.conn === 'connected' && sensorstream.ids().includes(id)",
            [device[1]])
    yield pg
    ctx.close()


def read_device(device, n: int, timeout: float = 15.0) -> bytes:
    """n bytes from the device side of the pty (waiting until it is readable, bounded)."""
    got = b""
    deadline = time.monotonic() + timeout
    while len(got) < n:
        readable, _, _ = select.select([device[0]], [], [], max(0.0, deadline - time.monotonic()))
        if not readable:
            raise TimeoutError(f"the device got {got!r}, expected {n} bytes")
        got += os.read(device[0], 4096)
    return got


def box(pg: Page, sid: str):
    return pg.page.get_by_test_id(f"stream-{sid}").get_by_test_id("commands")


def wait_reply(pg: Page, sid: str, n: int):
    pg.wait("([id, n]) => sensorstream.snapshot(id).commands.replies.length >= n", [sid, n])
    return pg.js("(id) => sensorstream.snapshot(id).commands.replies.slice(-1)[0]", sid)


def test_command_capable_streams_have_a_send_box(page, device):
    sid = device[1]
    assert box(page, sid).is_visible()
    snap = page.js("(id) => sensorstream.snapshot(id).commands", sid)
    assert snap["visible"] and snap["eol"] == "lf" and not snap["hex"] and snap["actions"] == []
    assert page.js("() => sensorstream.snapshot('sim/imu').commands.actions") == ["Rate"]
    assert page.js("() => sensorstream.snapshot('sim/power').commands.actions") == ["Spike"]


def test_typed_text_goes_out_with_the_chosen_line_ending(page, device):
    sid = device[1]
    b = box(page, sid)
    b.get_by_test_id("cmd-eol").select_option("crlf")
    b.get_by_test_id("cmd-text").fill("LED 1")
    b.get_by_test_id("cmd-text").press("Enter")
    assert read_device(device, 7) == b"LED 1\r\n"
    reply = wait_reply(page, sid, 1)
    assert reply["ok"] and reply["bytes"] == 7
    assert "Sent LED 1 (7 B)" in b.get_by_test_id("cmd-status").inner_text()
    assert b.get_by_test_id("cmd-text").input_value() == ""


def test_hex_mode_sends_bytes_and_refuses_what_is_not_hex(page, device):
    sid = device[1]
    b = box(page, sid)
    b.get_by_test_id("cmd-hex").check()
    b.get_by_test_id("cmd-text").fill("01 03 zz")
    b.get_by_test_id("cmd-send").click()
    assert "Not hex" in b.get_by_test_id("cmd-status").inner_text()
    b.get_by_test_id("cmd-text").fill("01 03 00 0a")
    b.get_by_test_id("cmd-send").click()
    assert read_device(device, 4) == b"\x01\x03\x00\x0a"
    assert wait_reply(page, sid, 2)["bytes"] == 4
    b.get_by_test_id("cmd-hex").uncheck()


def test_history_with_up_and_down(page, device):
    sid = device[1]
    b = box(page, sid)
    text = b.get_by_test_id("cmd-text")
    for cmd in ("RATE 10", "RATE 20"):
        text.fill(cmd)
        text.press("Enter")
    read_device(device, 2 * len("RATE 10\r\n"))
    text.press("ArrowUp")
    assert text.input_value() == "RATE 20"
    text.press("ArrowUp")
    assert text.input_value() == "RATE 10"
    text.press("ArrowUp")
    assert text.input_value() == "01 03 00 0a" and b.get_by_test_id("cmd-hex").is_checked()  # hex entries recall hex mode
    text.press("ArrowDown")
    text.press("ArrowDown")
    assert text.input_value() == "RATE 20" and not b.get_by_test_id("cmd-hex").is_checked()
    text.press("ArrowDown")
    assert text.input_value() == ""
    hist = page.js("(id) => sensorstream.snapshot(id).commands.history", sid)
    assert [h["text"] for h in hist] == ["LED 1", "01 03 00 0a", "RATE 10", "RATE 20"]


def test_space_on_the_send_button_sends_and_does_not_pause_the_page(page, device):
    b = box(page, device[1])
    b.get_by_test_id("cmd-text").fill("PING")
    b.get_by_test_id("cmd-send").focus()
    b.get_by_test_id("cmd-send").press(" ")
    assert read_device(device, 6) == b"PING\r\n"
    assert page.js("() => sensorstream.state.paused") is False
    page.js("() => sensorstream.snapshot()")  # the page still answers


def test_device_replies_show_in_the_console_pane(page, device):
    sid = device[1]
    os.write(device[0], b"1,2\nOK RATE 20\n3,4\nERR busy\n")
    page.wait("(id) => sensorstream.snapshot(id).commands.console.includes('ERR busy')", sid)
    text = box(page, sid).get_by_test_id("cmd-console").inner_text()
    assert "OK RATE 20" in text and "ERR busy" in text and "3,4" not in text


def test_profile_buttons_and_sliders_send_their_templates(page):
    power = box(page, "sim/power")
    power.get_by_test_id("action-Spike").click()
    page.wait("() => sensorstream.snapshot('sim/power').commands.console.includes('OK spike')")
    slider = box(page, "sim/imu").get_by_test_id("action-Rate")
    slider.fill("500")  # a range input: sets the value and fires input and change
    page.wait("() => sensorstream.snapshot('sim/imu').commands.console.includes('OK rate 500')")
    assert wait_reply(page, "sim/imu", 1)["bytes"] == len("rate 500\n")


def test_line_ending_is_remembered_and_history_kept_across_a_reload(page, device):
    page.page.reload()
    page.wait("([id]) => window.sensorstream && sensorstream.state.conn === 'connected' && sensorstream.ids().includes(id)",
              [device[1]])
    snap = page.js("(id) => sensorstream.snapshot(id).commands", device[1])
    assert snap["eol"] == "crlf"
    assert [h["text"] for h in snap["history"]][-1] == "PING"


def test_a_page_without_the_control_token_is_refused(browser, server, device):
    ctx = browser.new_context(viewport={"width": 1200, "height": 900})
    pg = Page(ctx.new_page())
    try:
        pg.page.goto(server.url)
        pg.wait("([id]) => window.sensorstream && sensorstream.state.conn === 'connected' && sensorstream.ids().includes(id)",
                [device[1]])
        b = box(pg, device[1])
        b.get_by_test_id("cmd-text").fill("LED 0")
        b.get_by_test_id("cmd-text").press("Enter")
        reply = wait_reply(pg, device[1], 1)
        assert not reply["ok"] and reply["code"] == "forbidden"
        assert "Not sent: forbidden" in b.get_by_test_id("cmd-status").inner_text()
        assert not pg.page.get_by_test_id("notice").is_visible()  # shown at the box, not as a page notice
    finally:
        ctx.close()


def test_no_console_errors(page):
    assert page.errors == []
